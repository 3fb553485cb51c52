"""Every method of the gradient and Grad-CAM families leaves the served model as it found it:
no hook on any module, no parameter's requires_grad or .grad changed, also after a forward
pass that raised half-way; the next request gives what a freshly loaded model gives; and rows
that share a batch get what they get alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from explainserve.config import ModelConfig
from explainserve_client import Client, ExplainServeError
from gradient_family_references import ALL_METHODS, explain_together
from safetensors.torch import save_file
from support import assert_no_hooks, random_input, relative_l2, running_server, tiny_config
from tiny_models import RaisesInsideReLU, RaisesOnNegativeSum

# Models whose forward raises for some inputs: before any module runs (RaisesOnNegativeSum,
# for an image with a negative sum) or inside a hooked ReLU, after its forward pre-hook and
# before its forward hook (RaisesInsideReLU, for activations above 1e4).
FAULTY = {"poison": RaisesOnNegativeSum, "poison_relu": RaisesInsideReLU}
GOOD = np.random.default_rng(0).uniform(0.5, 1.5, (3, 8, 8)).astype(np.float32)
BAD = {"poison": -np.ones((3, 8, 8), np.float32), "poison_relu": np.full((3, 8, 8), 1e6, np.float32)}


def few_samples(method: str) -> dict:
    return {"samples": 3} if method == "smoothgrad" else {}


@pytest.fixture(scope="module")
def faulty_configs(tmp_path_factory) -> tuple[ModelConfig, ...]:
    root = tmp_path_factory.mktemp("faulty")
    configs = []
    for seed, (name, cls) in enumerate(FAULTY.items()):
        torch.manual_seed(seed)
        weights = root / f"{name}.safetensors"
        save_file(cls(num_classes=4).state_dict(), str(weights))
        configs.append(tiny_config(name, cls.__name__, weights=weights))
    return tuple(configs)


@pytest.fixture(scope="module")
def faulty_server(faulty_configs):
    with running_server(faulty_configs) as background:
        yield background


def assert_untouched(background, model: str) -> None:
    """No hook on any module of any replica of `model`, nor a global one; every parameter
    frozen (as loaded) without a .grad."""
    for worker in background.server._pool.workers:
        module = worker.replicas[model].module
        assert_no_hooks(module, where=f"{model}.")
        for name, parameter in module.named_parameters():
            assert not parameter.requires_grad and parameter.grad is None, f"{model}.{name}"


@pytest.mark.parametrize("model", sorted(FAULTY))
def test_a_forward_pass_that_raises_leaves_no_trace(faulty_server, faulty_configs, model):
    client = Client(faulty_server.address, timeout=60)
    after_failure = {}
    with client:
        for method in ALL_METHODS:
            with pytest.raises(ExplainServeError) as caught:
                client.explain(BAD[model], model=model, method=method, targets=[1], **few_samples(method))
            assert caught.value.code.name == "INTERNAL", (method, caught.value)
            assert_untouched(faulty_server, model)
            after_failure[method] = client.explain(GOOD, model=model, method=method, targets=[1, 2],
                                                   **few_samples(method))
            assert_untouched(faulty_server, model)
    with running_server(faulty_configs) as fresh, Client(fresh.address, timeout=60) as fresh_client:
        for method, explanations in after_failure.items():
            expected = fresh_client.explain(GOOD, model=model, method=method, targets=[1, 2],
                                            **few_samples(method))
            for got, want in zip(explanations, expected):
                np.testing.assert_allclose(got.attribution, want.attribution, rtol=1e-6, atol=1e-9)
                np.testing.assert_allclose(got.heatmap, want.heatmap, rtol=1e-6, atol=1e-9)
                assert got.score == pytest.approx(want.score, rel=1e-6)


@pytest.mark.parametrize("model", ["resnet18", "tiny_cnn"])
def test_every_method_leaves_the_shared_models_untouched(server, client, model):
    size = {"resnet18": 64, "tiny_cnn": 8}[model]
    first = {}
    for method in ALL_METHODS:
        first[method] = client.explain(random_input((3, size, size), seed=50), model=model,
                                       method=method, **few_samples(method))[0]
        assert_untouched(server, model)
    for method in reversed(ALL_METHODS):  # each again, after all the others ran
        (again,) = client.explain(random_input((3, size, size), seed=50), model=model, method=method,
                                  **few_samples(method))
        # Equal to float32 rounding: SmoothGrad's noisy rows run in chunks sized from measured
        # time per row (max_chunk_ms), so the batch sizes of a repeat can differ, and
        # channels-last CPU convolutions round differently at different batch sizes (~1e-7
        # relative). A leaked hook or changed parameter would differ by far more.
        np.testing.assert_allclose(again.attribution, first[method].attribution, rtol=1e-5,
                                   atol=1e-6 * float(np.abs(first[method].attribution).max()))


@pytest.mark.parametrize("method", ALL_METHODS)
def test_a_batch_of_different_images_and_targets_gives_each_what_it_gets_alone(server, client, method):
    # tiny_cnn's convolution rounds the same at every batch size and its head's backward is a
    # row of W, so here "exactly as if alone" holds to the last bits, not just to 1e-4.
    images = [random_input((3, 8, 8), seed=60 + index) for index in range(8)]
    targets = [index % 4 for index in range(8)]
    together, (batches, rows) = explain_together(server, client, "tiny_cnn", method, images, targets,
                                                 **few_samples(method))
    assert rows == 8 * batches
    for image, target, got in zip(images, targets, together):
        (alone,) = client.explain(image, model="tiny_cnn", method=method, targets=[target],
                                  **few_samples(method))
        assert got.target == alone.target == target
        assert relative_l2(got.attribution, alone.attribution) < 1e-6
        assert relative_l2(got.heatmap, alone.heatmap) < 1e-6
