"""Occlusion through the real server and client: Captum's Occlusion, a closed form on the linear
model, shared batches with other traffic, and bad parameters."""

from __future__ import annotations

import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
import torch
from captum.attr import Occlusion
from explainserve.config import LimitsConfig
from explainserve.models.demo import shapes
from explainserve.models.demo.repository import demo_model_config
from explainserve_client import Client, ExplainServeError
from support import random_input, reference_module, relative_l2, running_server


def captum_occlusion(module, image, target, window, stride, baseline=0.0) -> np.ndarray:
    channels = image.shape[0]
    attribution = Occlusion(module).attribute(
        torch.from_numpy(image)[None], sliding_window_shapes=(channels, window, window),
        strides=(channels, stride, stride), baselines=baseline, target=target,
        perturbations_per_eval=64)[0]
    # The window spans every channel, so Captum's [C,H,W] map is the same in each channel.
    assert torch.equal(attribution[0], attribution[-1])
    return attribution[0].numpy()


def linear_closed_form(weights, bias, image, target, window, stride, baseline, score="logit"):
    """Occluding window W_p changes the logits by exactly -sum_{(k,i,j) in W_p} w_kij (x_kij - b);
    each pixel gets the mean drop of the windows that cover it."""
    _, height, width = image.shape
    flat_weights = weights.reshape(len(weights), *image.shape)
    # Captum's positions: ceil((size - window) / stride) + 1 per axis, cut at the border
    offsets = [[k * stride for k in range(math.ceil((size - window) / stride) + 1)]
               for size in (height, width)]
    total, count = np.zeros((height, width)), np.zeros((height, width))
    logits = flat_weights.reshape(len(weights), -1) @ image.ravel() + bias
    for top in offsets[0]:
        for left in offsets[1]:
            occluded = image.copy()
            occluded[:, top:top + window, left:left + window] = baseline
            if score == "logit":
                inside = (image - occluded)[None] * flat_weights
                drop = inside[target].sum()
            else:
                changed = flat_weights.reshape(len(weights), -1) @ occluded.ravel() + bias
                drop = softmax(logits)[target] - softmax(changed)[target]
            total[top:top + window, left:left + window] += drop
            count[top:top + window, left:left + window] += 1
    return total / count


def softmax(values):
    exponents = np.exp(values - values.max())
    return exponents / exponents.sum()


@pytest.mark.parametrize("window,stride,baseline", [(3, 2, 0.0), (4, 1, 0.5), (8, 5, -1.0)])
def test_occlusion_on_the_linear_model_is_the_closed_form(client, models_by_name, window, stride,
                                                          baseline):
    module = reference_module(models_by_name["linear"])
    weights, bias = module.linear.weight.detach().numpy(), module.linear.bias.detach().numpy()
    image = random_input((3, 8, 8), seed=window)
    explanations = client.explain(image, model="linear", method="occlusion", targets=[0, 2, 3],
                                  window=window, stride=stride, baseline=baseline)
    assert [e.target for e in explanations] == [0, 2, 3]
    for explanation in explanations:
        expected = linear_closed_form(weights, bias, image, explanation.target, window, stride,
                                      baseline)
        assert explanation.attribution.shape == (8, 8)
        np.testing.assert_allclose(explanation.attribution, expected, rtol=1e-4, atol=1e-5)
        positive = np.clip(expected, 0, None)  # evidence against c is clipped; 0 stays 0
        scaled = positive / positive.max() if positive.max() > 0 else positive
        np.testing.assert_allclose(explanation.heatmap, scaled, atol=1e-4)


def test_occlusion_of_the_probability_is_the_drop_of_the_softmax(client, models_by_name):
    module = reference_module(models_by_name["linear"])
    weights, bias = module.linear.weight.detach().numpy(), module.linear.bias.detach().numpy()
    image = random_input((3, 8, 8), seed=11)
    for explanation in client.explain(image, model="linear", method="occlusion", targets=[1, 3],
                                      window=4, stride=2, score="probability"):
        expected = linear_closed_form(weights.astype(np.float64), bias, image.astype(np.float64),
                                      explanation.target, 4, 2, 0.0, score="probability")
        np.testing.assert_allclose(explanation.attribution, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("model", ["resnet18", "vgg16"])
def test_occlusion_matches_captum(client, models_by_name, model):
    module = reference_module(models_by_name[model])
    image = random_input((3, 64, 64), seed=7)
    # window 32, stride 24: 3x3 overlapping positions, the last ones cut at the border
    explanations = client.explain(image, model=model, method="occlusion", targets=[0, 4, 9],
                                  window=32, stride=24, baseline=0.25)
    for explanation in explanations:
        expected = captum_occlusion(module, image, explanation.target, 32, 24, 0.25)
        assert explanation.attribution.shape == (64, 64)
        assert relative_l2(explanation.attribution, expected) < 1e-4
        assert explanation.heatmap.shape == (64, 64)
        assert 0.0 <= explanation.heatmap.min() and explanation.heatmap.max() == pytest.approx(1.0)


def test_the_predicted_class_is_explained_by_default(client, models_by_name):
    module = reference_module(models_by_name["resnet18"])
    image = random_input((3, 64, 64), seed=8)
    predicted = int(module(torch.from_numpy(image)[None]).argmax())
    (explanation,) = client.explain(image, model="resnet18", method="occlusion", window=32,
                                    stride=32)
    assert explanation.target == predicted
    expected = captum_occlusion(module, image, predicted, 32, 32)
    assert relative_l2(explanation.attribution, expected) < 1e-4


def test_concurrent_requests_each_get_their_own_answer(client, models_by_name):
    """Eight images with eight targets share batches; each gets exactly its closed form."""
    module = reference_module(models_by_name["linear"])
    weights, bias = module.linear.weight.detach().numpy(), module.linear.bias.detach().numpy()
    images = [random_input((3, 8, 8), seed=100 + i) for i in range(8)]

    def explain(index):
        return client.explain(images[index], model="linear", method="occlusion",
                              targets=[index % 4], window=3, stride=1)[0]

    with ThreadPoolExecutor(max_workers=8) as pool:
        explanations = list(pool.map(explain, range(8)))
    for index, explanation in enumerate(explanations):
        expected = linear_closed_form(weights, bias, images[index], index % 4, 3, 1, 0.0)
        np.testing.assert_allclose(explanation.attribution, expected, rtol=1e-4, atol=1e-5)


def test_a_small_request_overtakes_a_long_occlusion(client):
    """The occlusion's copies run in chunks that go to the back of the line, so a saliency
    request sent while it runs finishes first."""
    finished: dict[str, float] = {}
    image = random_input((3, 64, 64), seed=9)

    def occlude():
        client.explain(image, model="resnet18", method="occlusion", window=16, stride=3)
        finished["occlusion"] = time.monotonic()

    worker = threading.Thread(target=occlude)
    worker.start()
    time.sleep(0.2)  # the occlusion (289 positions, about a second) is queued and running
    client.explain(image, model="resnet18", method="saliency")
    finished["saliency"] = time.monotonic()
    worker.join()
    assert finished["saliency"] < finished["occlusion"]


@pytest.mark.parametrize("params,named", [
    ({"window": 9}, "window"),
    ({"window": 0}, "window"),
    ({"stride": 0}, "stride"),
    ({"window": 3, "stride": -2}, "stride"),
    ({"window": 3, "stride": 4}, "stride"),
    ({"window": 3, "score": "loss"}, "score"),
])
def test_bad_parameters_are_invalid_arguments_that_name_them(client, params, named):
    with pytest.raises(ExplainServeError) as caught:
        client.explain(random_input((3, 8, 8)), model="linear", method="occlusion", **params)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert named in caught.value.details


def test_more_positions_than_the_limit_is_an_invalid_argument(models_by_name):
    limits = LimitsConfig(max_occlusion_positions=30)
    with running_server((models_by_name["linear"],), limits=limits) as server, \
            Client(server.address, timeout=60) as small:
        image = random_input((3, 8, 8))
        (allowed,) = small.explain(image, model="linear", method="occlusion", window=3, stride=2)
        assert allowed.attribution.shape == (8, 8)  # 4 x 4 = 16 positions
        with pytest.raises(ExplainServeError) as caught:
            small.explain(image, model="linear", method="occlusion", window=2, stride=1)  # 49
        assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "49 occlusion positions" in caught.value.details and "30" in caught.value.details


def test_occlusion_matches_captum_on_the_demo_model(demo_client):
    config = demo_model_config()
    module = reference_module(config)
    sample = shapes.generate(1, seed=31, two_object_fraction=1.0)[0]
    image = ((sample.image / 255.0 - np.array(config.mean)) / np.array(config.std))
    image = image.transpose(2, 0, 1).astype(np.float32)
    targets = [*sample.labels, 7 if 7 not in sample.labels else 0]
    explanations = demo_client.explain(image, model="demo", method="occlusion", targets=targets,
                                       window=16, stride=6)
    assert [e.target for e in explanations] == targets
    for explanation in explanations:
        expected = captum_occlusion(module, image, explanation.target, 16, 6)
        assert relative_l2(explanation.attribution, expected) < 1e-4
