"""Integrated gradients through the real server and client: against Captum's
IntegratedGradients (same steps, quadrature and baseline) on the tiny models and random-weight
resnet18, alone, in batches of 8 and for several targets; the completeness gap against
Captum's convergence delta; the adaptive refinement; bad parameters."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from explainserve.methods.explain.quadrature import QUADRATURES, nodes, refined_steps, reuse
from explainserve_client import ExplainServeError
from gradient_family_references import batches_of, explain_together
from path_references import baseline_for, captum_ig
from support import random_input, reference_module, relative_l2

EXACT = {"max_completeness_gap": 0.0}  # exactly `steps` points, as Captum


@contextlib.contextmanager
def held_batches(background, model: str, rows: int, delay_ms: float):
    """Passes of up to `rows` rows that wait up to `delay_ms` for them to arrive."""
    batcher = background.server._batcher
    original = batcher._batching[model]
    held = dataclasses.replace(original, max_batch_size=rows, max_queue_delay_ms=delay_ms,
                               max_chunk_ms=1e9)

    async def configure(config):
        batcher._batching[model] = config

    background.call(configure(held))
    try:
        yield
    finally:
        background.call(configure(original))


@functools.cache
def module_of(config):
    return reference_module(config)


@pytest.mark.parametrize("method", QUADRATURES)
@pytest.mark.parametrize("baseline", ["black", "white", "blur", "noise"])
def test_matches_captum_on_a_tiny_cnn_for_every_target(client, models_by_name, method, baseline):
    config = models_by_name["tiny_cnn"]
    image = random_input((3, 8, 8), seed=41)
    params = {"steps": 7, "quadrature": method, "baseline": baseline, "blur_sigma": 1.0, "seed": 3}
    results = client.explain(image, model="tiny_cnn", method="integrated_gradients",
                             targets=[0, 1, 2, 3], **params, **EXACT)
    reference = baseline_for(config, torch.from_numpy(image), baseline, sigma=1.0, seed=3)
    for got in results:
        expected, _ = captum_ig(module_of(config), torch.from_numpy(image), reference, got.target, 7, method)
        assert relative_l2(got.attribution, expected) < 1e-4, (method, baseline, got.target)


def test_on_a_linear_model_it_is_the_input_difference_times_the_weights(server, client, models_by_name):
    # F linear: the gradient is W[c] on the whole path, so IG = (x - x') W[c] for any rule, and
    # completeness holds exactly: no refinement happens.
    config = models_by_name["linear"]
    weights = module_of(config).linear.weight.detach()
    image = random_input((3, 8, 8), seed=42)
    black = baseline_for(config, torch.from_numpy(image), "black")
    for got in client.explain(image, model="linear", method="integrated_gradients", targets=[3, 1],
                              steps=3, quadrature="riemann_middle"):
        expected = (torch.from_numpy(image) - black) * weights[got.target].reshape(3, 8, 8)
        np.testing.assert_allclose(got.attribution, expected.numpy(), rtol=1e-4, atol=1e-6)
    (alone,) = client.explain(image, model="linear", method="integrated_gradients", targets=[3], steps=3)
    assert alone.quality["steps"] == 3 and alone.quality["completeness_gap"] < 1e-5


def test_matches_captum_on_resnet18_alone_and_in_a_batch_of_8(server, client, models_by_name):
    config = models_by_name["resnet18"]
    images = [random_input((3, 64, 64), seed) for seed in range(8)]
    targets = [3, 0, 7, 1, 9, 4, 2, 5]
    params = {"steps": 8, "quadrature": "gausslegendre", **EXACT}
    with batches_of(server, "resnet18", 1):
        (alone,) = client.explain(images[0], model="resnet18", method="integrated_gradients",
                                  targets=[targets[0]], **params)
    batched, (batches, rows) = explain_together(server, client, "resnet18", "integrated_gradients",
                                                images, targets, **params)
    assert rows == 8 * batches  # every pass held 8 rows of several requests
    black = baseline_for(config, torch.from_numpy(images[0]), "black")
    for got, image, target in [(alone, images[0], targets[0]), *zip(batched, images, targets)]:
        expected, _ = captum_ig(module_of(config), torch.from_numpy(image), black, target, 8)
        assert got.target == target
        assert relative_l2(got.attribution, expected) < 1e-4


def test_a_batch_of_different_requests_gives_each_what_it_gives_alone(server, client):
    image = random_input((3, 64, 64), seed=43)
    requests = [dict(targets=[t], steps=s, quadrature=m, baseline=b, **EXACT) for t, s, m, b in [
        (1, 4, "gausslegendre", "black"), (2, 5, "riemann_left", "white"),
        (3, 6, "riemann_trapezoid", "blur"), (4, 3, "riemann_middle", "noise")]]
    with batches_of(server, "resnet18", 1):
        alone = [client.explain(image, model="resnet18", method="integrated_gradients", **r)[0]
                 for r in requests]
    # rows of all four share passes of up to 6 rows (the end points' forward passes too); the
    # short hold lets the leftover rows of a kernel go without waiting for a full batch
    with held_batches(server, "resnet18", 6, 300.0), ThreadPoolExecutor(len(requests)) as pool:
        together = list(pool.map(lambda r: client.explain(image, model="resnet18",
                                                          method="integrated_gradients", **r)[0], requests))
    for one, mixed in zip(alone, together):
        assert one.target == mixed.target
        assert relative_l2(mixed.attribution, one.attribution) < 1e-4


def test_the_completeness_gap_is_captums_convergence_delta_relative(client, models_by_name):
    config = models_by_name["resnet18"]
    image = random_input((3, 64, 64), seed=44)
    for method, steps in [("gausslegendre", 4), ("riemann_right", 6)]:
        results = client.explain(image, model="resnet18", method="integrated_gradients",
                                 targets=[2, 5], steps=steps, quadrature=method, **EXACT)
        tensor = torch.from_numpy(image)
        black = baseline_for(config, tensor, "black")
        with torch.no_grad():
            logits = module_of(config)(torch.stack([tensor, black]))
        for got in results:
            _, delta = captum_ig(module_of(config), tensor, black, got.target, steps, method)
            difference = float(logits[0, got.target] - logits[1, got.target])
            assert got.quality["steps"] == steps
            assert got.quality["completeness_gap"] == pytest.approx(abs(delta / difference),
                                                                    rel=1e-3, abs=1e-5)


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_trapezoid", "riemann_middle"])
def test_adaptive_steps_reach_the_gap_and_equal_captum_at_the_steps_they_report(client, models_by_name, method):
    config = models_by_name["resnet18"]
    image = random_input((3, 64, 64), seed=45)
    tensor = torch.from_numpy(image)
    black = baseline_for(config, tensor, "black")
    ask = functools.partial(client.explain, image, model="resnet18", method="integrated_gradients",
                            targets=[6], steps=3, quadrature=method)
    (coarse,) = ask(**EXACT)
    wanted = coarse.quality["completeness_gap"] / 4
    (got,) = ask(max_completeness_gap=wanted)
    steps = int(got.quality["steps"])
    assert steps > 3 and got.quality["completeness_gap"] <= wanted
    # the refined sum (old nodes reused with scaled weights) is the rule at `steps` points
    expected, _ = captum_ig(module_of(config), tensor, black, 6, steps, method)
    assert relative_l2(got.attribution, expected) < 1e-4


def test_refinement_reuses_every_node_of_the_nested_rules():
    for method in QUADRATURES:
        old = nodes(method, 5)
        scale, fresh = reuse(old, nodes(method, refined_steps(method, 5)))
        finer = refined_steps(method, 5)
        if method == "gausslegendre":
            assert scale == 0.0 and fresh == list(range(finer))
        else:
            assert len(fresh) == finer - 5
            assert scale == pytest.approx(1 / 3 if method == "riemann_middle" else 0.5)


@pytest.mark.parametrize(("params", "named"), [
    ({"steps": 1025}, "1025"),  # LimitsConfig.max_integrated_gradients_steps is 1024
    ({"steps": 0}, "steps"),
    ({"steps": 1, "quadrature": "riemann_trapezoid"}, "steps"),
    ({"baseline": "grey"}, "grey"),
    ({"quadrature": "simpson"}, "simpson"),
    ({"max_completeness_gap": -1.0}, "max_completeness_gap"),
])
def test_bad_parameters_are_invalid_arguments_naming_the_value(client, params, named):
    with pytest.raises(ExplainServeError) as caught:
        client.explain(random_input((3, 8, 8), seed=0), model="tiny_cnn",
                       method="integrated_gradients", **params)
    assert caught.value.code.name == "INVALID_ARGUMENT"
    assert named in caught.value.details


def test_a_baseline_tensor_sent_by_the_caller_matches_captum_with_that_baseline(client, models_by_name):
    config = models_by_name["tiny_cnn"]
    image = random_input((3, 8, 8), seed=43)
    baseline = random_input((3, 8, 8), seed=44) * 0.5
    for method in ("gausslegendre", "riemann_left"):
        results = client.explain(image, model="tiny_cnn", method="integrated_gradients",
                                 targets=[0, 2], steps=9, quadrature=method, baseline="tensor",
                                 baseline_tensor=baseline, **EXACT)
        for got in results:
            expected, _ = captum_ig(module_of(config), torch.from_numpy(image),
                                    torch.from_numpy(baseline), got.target, 9, method)
            assert relative_l2(got.attribution, expected) < 1e-4, (method, got.target)
    # [1, C, H, W] is the same baseline
    (batched,) = client.explain(image, model="tiny_cnn", method="integrated_gradients", targets=[0],
                                steps=9, baseline="tensor", baseline_tensor=baseline[None], **EXACT)
    (plain,) = client.explain(image, model="tiny_cnn", method="integrated_gradients", targets=[0],
                              steps=9, baseline="tensor", baseline_tensor=baseline, **EXACT)
    np.testing.assert_array_equal(batched.attribution, plain.attribution)


@pytest.mark.parametrize("kwargs, named", [
    ({"baseline": "tensor"}, "baseline tensor"),
    ({"baseline": "tensor", "baseline_tensor": np.zeros((3, 4, 4), np.float32)}, "[3, 4, 4]"),
    ({"baseline": "tensor", "baseline_tensor": np.full((3, 8, 8), np.nan, np.float32)}, "NaN"),
])
def test_bad_baseline_tensors_are_invalid_argument(client, kwargs, named):
    image = random_input((3, 8, 8), seed=45)
    with pytest.raises(ExplainServeError) as raised:
        client.explain(image, model="tiny_cnn", method="integrated_gradients", targets=[0], steps=4,
                       **kwargs)
    assert raised.value.code.name == "INVALID_ARGUMENT" and named in raised.value.details, raised.value.details


def test_a_baseline_tensor_for_a_method_without_a_path_is_invalid_argument(client):
    image = random_input((3, 8, 8), seed=46)
    with pytest.raises(ExplainServeError) as raised:
        client.explain(image, model="tiny_cnn", method="saliency", targets=[0],
                       baseline_tensor=np.zeros((3, 8, 8), np.float32))
    assert raised.value.code.name == "INVALID_ARGUMENT" and "saliency" in raised.value.details
