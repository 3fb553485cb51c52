"""Deletion and insertion scores (Petsiuk et al. 2018, RISE) through the real server and client,
against a plain numpy implementation of the same definition: pixels ranked by the returned
heatmap (highest first, ties in row-major order), floor(i * H * W / n) of them changed after
step i, the target's softmax probability at each step, the trapezoidal area over [0, 1]."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
import torch
from explainserve_client import Client, ExplainServeError
from scipy.ndimage import gaussian_filter
from support import random_input, random_inputs


def blurred(image: np.ndarray, sigma: float) -> np.ndarray:
    """scipy's Gaussian with the server's support (radius ceil(3 sigma)) and replicated edges
    (scipy's "nearest"); each channel on its own."""
    radius = math.ceil(3 * sigma)
    return gaussian_filter(image.astype(np.float64), sigma=(0, sigma, sigma), mode="nearest",
                           truncate=radius / sigma).astype(np.float32)


def reference_curves(module, image, heatmap, target, steps, baselines) -> dict[str, np.ndarray]:
    """baselines: metric -> baseline image. The curve of each metric, computed plainly."""
    channels, height, width = image.shape
    order = np.argsort(-heatmap.ravel(), kind="stable")
    curves = {}
    for metric, baseline in baselines.items():
        start, end = (image, baseline) if metric == "deletion" else (baseline, image)
        copies = []
        for step in range(steps + 1):
            changed = order[:height * width * step // steps]
            copy = start.copy().reshape(channels, -1)
            copy[:, changed] = end.reshape(channels, -1)[:, changed]
            copies.append(copy.reshape(image.shape))
        with torch.no_grad():
            logits = module(torch.from_numpy(np.stack(copies))).double()
        curves[metric] = logits.softmax(dim=1)[:, target].numpy()
    return curves


def trapezoid_auc(curve: np.ndarray) -> float:
    return float(np.trapezoid(curve, dx=1 / (len(curve) - 1)))


@pytest.mark.parametrize("model, method, baseline, steps", [
    ("tiny_cnn", "saliency", None, 8),           # RISE defaults: constant / blur sigma 5
    ("tiny_cnn", "gradcam", "blur", 5),          # 64 pixels in 5 unequal steps
    ("resnet18", "occlusion", "constant", 16),
])
def test_deletion_and_insertion_equal_the_definition(client, reference_modules, model, method,
                                                     baseline, steps):
    size = 8 if model == "tiny_cnn" else 64
    image = random_input((3, size, size), seed=7)
    params = {"window": 16, "stride": 8} if method == "occlusion" else {}
    explanations = client.explain(
        image, model=model, method=method, targets=[0, 2], evaluate=("deletion", "insertion"),
        evaluation_steps=steps, evaluation_baseline=baseline, evaluation_constant=0.25,
        outputs=("heatmap",), **params)
    constant = np.full_like(image, 0.25)  # also deletion's default baseline
    blur = blurred(image, 5.0)
    baselines = {"deletion": blur if baseline == "blur" else constant,
                 "insertion": constant if baseline == "constant" else blur}
    module = reference_modules(model)
    for explanation, target in zip(explanations, [0, 2]):
        assert explanation.target == target
        expected = reference_curves(module, image, explanation.heatmap, target, steps, baselines)
        for metric in ("deletion", "insertion"):
            curve = explanation.tensors[f"{metric}_curve"]
            assert curve.shape == (steps + 1,) and curve.dtype == np.float32
            np.testing.assert_allclose(curve, expected[metric], rtol=1e-4, atol=1e-6)
            assert explanation.quality[f"{metric}_auc"] == pytest.approx(
                trapezoid_auc(expected[metric]), rel=1e-4, abs=1e-6)
        # the unperturbed ends of the curves are the model's own answer for the image
        assert expected["deletion"][0] == pytest.approx(explanation.probability, rel=1e-4)
        assert expected["insertion"][-1] == pytest.approx(explanation.probability, rel=1e-4)


@pytest.mark.parametrize("method", ["saliency", "guided_backprop", "gradcam", "smoothgrad",
                                    "occlusion"])
def test_evaluate_on_the_demo_model(demo_client, star_png, method):
    """Every map method can be scored; on the trained demo model the probability of the
    predicted star falls when its map's top pixels go first and comes back when they return."""
    params = {"samples": 4} if method == "smoothgrad" else (
        {"window": 16, "stride": 8} if method == "occlusion" else {})
    (explanation,) = demo_client.explain(star_png, model="demo", method=method,
                                         evaluate=("deletion", "insertion"), evaluation_steps=16,
                                         outputs=("heatmap",), **params)
    deletion = explanation.tensors["deletion_curve"]
    insertion = explanation.tensors["insertion_curve"]
    assert deletion[0] == pytest.approx(explanation.probability, rel=1e-4)
    assert insertion[-1] == pytest.approx(explanation.probability, rel=1e-4)
    assert explanation.quality["deletion_auc"] == pytest.approx(trapezoid_auc(deletion), rel=1e-5)
    assert explanation.quality["insertion_auc"] == pytest.approx(trapezoid_auc(insertion), rel=1e-5)
    assert set(explanation.quality) >= {"deletion_auc", "insertion_auc"}


def test_without_evaluate_there_are_no_scores(client):
    (explanation,) = client.explain(random_input((3, 8, 8)), model="tiny_cnn", method="saliency",
                                    targets=[1])
    assert "deletion_auc" not in explanation.quality and not explanation.tensors


def test_a_batch_of_different_requests_gives_each_what_it_gives_alone(server):
    """Concurrent requests share device passes; each curve must be what it is alone."""
    images = random_inputs(6, (3, 8, 8), seed=11)
    requests = [dict(method=m, targets=[t], evaluate=e, evaluation_steps=s, evaluation_baseline=b)
                for m, t, e, s, b in [("saliency", 0, ("deletion",), 8, None),
                                      ("gradcam", 1, ("insertion",), 4, "blur"),
                                      ("saliency", 2, ("deletion", "insertion"), 6, "constant"),
                                      ("input_x_gradient", 3, ("insertion", "deletion"), 8, None),
                                      ("gradcam", 0, ("deletion",), 3, None),
                                      ("occlusion", 1, ("insertion",), 8, "blur")]]
    for request in requests:
        if request["method"] == "occlusion":
            request.update(window=4, stride=2)

    def one(index):
        with Client(server.address, timeout=60) as connection:
            (explanation,) = connection.explain(images[index], model="tiny_cnn",
                                                outputs=("heatmap",), **requests[index])
            return explanation
    alone = [one(index) for index in range(len(requests))]
    with ThreadPoolExecutor(len(requests)) as pool:
        together = list(pool.map(one, range(len(requests))))
    for single, shared, request in zip(alone, together, requests):
        assert set(shared.quality) == {f"{m}_auc" for m in request["evaluate"]}
        assert set(shared.tensors) == {f"{m}_curve" for m in request["evaluate"]}
        for name, curve in single.tensors.items():
            assert curve.shape == (request["evaluation_steps"] + 1,)
            np.testing.assert_allclose(shared.tensors[name], curve, rtol=1e-5, atol=1e-7)
        for name, value in single.quality.items():
            assert shared.quality[name] == pytest.approx(value, rel=1e-5, abs=1e-7)


def test_an_unknown_score_is_invalid_argument_naming_it(client):
    request = client.explain_request(random_input((3, 8, 8)), "tiny_cnn", "saliency", [0])
    request.evaluate.append(7)
    with pytest.raises(grpc.RpcError) as refused:
        list(client.stub.Explain(request, timeout=30))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "evaluate [7]" in refused.value.details()
    assert "FAITHFULNESS_DELETION" in refused.value.details()
    with pytest.raises(ValueError, match="'roar'"):
        client.explain_request(random_input((3, 8, 8)), "tiny_cnn", "saliency", [0],
                               evaluate=["roar"])


@pytest.mark.parametrize("options, named", [
    ({"evaluation_steps": 257}, "257"),                      # LimitsConfig.max_evaluate_steps
    ({"evaluation_blur_sigma": 1000.0}, "1000"),
    ({"evaluation_constant": float("inf")}, "inf"),
])
def test_bad_evaluation_options_are_invalid_argument(client, options, named):
    with pytest.raises(ExplainServeError) as refused:
        client.explain(random_input((3, 8, 8)), model="tiny_cnn", method="saliency", targets=[0],
                       evaluate=("deletion",), **options)
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert named in refused.value.details


def test_an_unknown_baseline_value_is_invalid_argument(client):
    request = client.explain_request(random_input((3, 8, 8)), "tiny_cnn", "saliency", [0],
                                     evaluate=("deletion",))
    request.evaluation.baseline = 9
    with pytest.raises(grpc.RpcError) as refused:
        list(client.stub.Explain(request, timeout=30))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "baseline 9" in refused.value.details()


def test_a_method_without_a_heatmap_cannot_be_scored(client):
    with pytest.raises(ExplainServeError) as refused:
        client.explain(random_input((3, 8, 8)), model="tiny_cnn", method="filters",
                       evaluate=("deletion",))
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "'filters'" in refused.value.details


def test_a_methods_own_quality_figures_come_with_the_scores(client):
    """Integrated gradients reports its completeness gap and steps (Sundararajan et al. 2017,
    eq. 1's completeness); they travel in the same quality map as the faithfulness scores."""
    from explainserve.methods.explain.registry import list_methods
    if "integrated_gradients" not in list_methods():
        pytest.skip("integrated gradients is not registered")
    (explanation,) = client.explain(random_input((3, 8, 8)), model="tiny_cnn",
                                    method="integrated_gradients", targets=[1],
                                    evaluate=("deletion",), evaluation_steps=4, steps=8,
                                    max_completeness_gap=0.0)
    assert {"completeness_gap", "steps", "deletion_auc"} <= set(explanation.quality)
    assert explanation.quality["steps"] == 8
    assert math.isfinite(explanation.quality["completeness_gap"])
