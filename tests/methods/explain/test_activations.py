"""Activations and filters through the real server and client: equal to a direct forward hook
and to the module's weight; large tensors arrive whole; the forward stops where it may."""

from __future__ import annotations

import io
import math
from dataclasses import replace

import grpc
import numpy as np
import pytest
import torch
from explainserve.methods.explain import activations as activations_module
from explainserve.models.registry import load_model
from explainserve.workers.pool import Replica
from explainserve_client import Client, ExplainServeError
from PIL import Image
from support import layer_outputs, random_input, reference_module, running_server


def hooked_outputs(module: torch.nn.Module, image: np.ndarray, names: list[str]):
    """support.layer_outputs for one image: each layer's output as an array, and the logits."""
    outputs, logits = layer_outputs(module, names, image)
    return {name: value[0].numpy() for name, value in outputs.items()}, logits[0]


def min_max_255(values: np.ndarray) -> np.ndarray:
    return np.round((values - values.min()) / (values.max() - values.min()) * 255)


@pytest.fixture(scope="module")
def resnet(models_by_name):
    return reference_module(models_by_name["resnet18"])


@pytest.fixture(scope="module")
def large_client(models_by_name):
    """resnet18 at 448x448: its conv1 output [64, 224, 224] is 12.8 MB of float32."""
    config = replace(models_by_name["resnet18"], name="resnet18_448", input_size=(448, 448))
    with running_server((config,)) as server, Client(server.address, timeout=120) as connection:
        yield connection


LAYERS = ["layer1", "conv1", "layer3.1.bn2", "layer1.0.relu"]


@pytest.mark.parametrize("score", [True, False])
def test_activations_equal_a_direct_forward_hook(client, resnet, score):
    image = random_input((3, 64, 64), seed=1)
    expected, logits = hooked_outputs(resnet, image, LAYERS)
    (explanation,) = client.explain(image, model="resnet18", method="activations",
                                    layer=LAYERS[0], extra_layers=LAYERS[1:], score=score)
    assert sorted(explanation.tensors) == sorted(LAYERS)
    for name in LAYERS:
        np.testing.assert_allclose(explanation.tensors[name], expected[name], rtol=1e-5, atol=1e-5)
    assert explanation.attribution is None and explanation.heatmap is None
    if score:
        assert explanation.target == int(logits.argmax())
        assert explanation.score == pytest.approx(float(logits.max()), rel=1e-5)
        assert explanation.probability == pytest.approx(float(logits.softmax(0).max()), rel=1e-5)
    else:  # the pass stopped after layer3.1: no logits, so no class was scored
        assert explanation.target == -1 and math.isnan(explanation.score)


def test_activations_of_a_layer_that_an_inplace_relu_follows(client, models_by_name):
    module = reference_module(models_by_name["vgg16"])
    image = random_input((3, 64, 64), seed=2)
    expected, _ = hooked_outputs(module, image, ["features.0", "features.28"])
    (explanation,) = client.explain(image, model="vgg16", method="activations",
                                    layer="features.0", extra_layers=["features.28"], targets=[3])
    assert explanation.target == 3
    assert (explanation.tensors["features.0"] < 0).any()  # taken before the in-place ReLU
    for name, value in expected.items():
        np.testing.assert_allclose(explanation.tensors[name], value, rtol=1e-5, atol=1e-5)


def test_a_large_feature_map_arrives_whole_through_the_client(large_client, models_by_name):
    module = reference_module(models_by_name["resnet18"])
    image = random_input((3, 448, 448), seed=3)
    expected, _ = hooked_outputs(module, image, ["conv1"])
    (explanation,) = large_client.explain(image, model="resnet18_448", method="activations",
                                          layer="conv1", score=False)
    assert explanation.tensors["conv1"].shape == (64, 224, 224)
    assert explanation.tensors["conv1"].nbytes == 64 * 224 * 224 * 4  # 12.8 MB, > 3 messages
    np.testing.assert_allclose(explanation.tensors["conv1"], expected["conv1"], rtol=1e-5,
                               atol=1e-5)


def test_the_forward_pass_stops_after_the_last_requested_layer(models_by_name):
    loaded = load_model(models_by_name["resnet18"])
    replica = Replica(loaded, torch.device("cpu"))
    facts = loaded.facts
    assert activations_module.stop_layer(facts, ["conv1", "layer1"]) == "layer1"
    # a block may call a module twice (resnet's shared ReLU): stop after the block
    assert activations_module.stop_layer(facts, ["layer1.0.relu"]) == "layer1.0"
    assert activations_module.stop_layer(facts, ["layer2.1.conv1", "maxpool"]) == "layer2.1"
    image = random_input((3, 64, 64), seed=4)
    expected, _ = hooked_outputs(loaded.module, image, ["layer1.0.relu"])
    calls = []
    handle = replica.layer("layer2").register_forward_hook(lambda *args: calls.append(1))
    try:
        outputs = activations_module.activations_kernel(
            replica, torch.from_numpy(image)[None], torch.tensor([-1]),
            layers=("layer1.0.relu",), stop_after="layer1.0")
    finally:
        handle.remove()
    assert calls == [] and "logits" not in outputs
    # the CPU replica runs channels-last: same values up to float32 rounding
    np.testing.assert_allclose(outputs["layer:layer1.0.relu"][0], expected["layer1.0.relu"],
                               rtol=1e-5, atol=1e-5)


def test_activations_grid_shows_each_channel_min_max_scaled(client, resnet):
    image = random_input((3, 64, 64), seed=5)
    expected, _ = hooked_outputs(resnet, image, ["layer1"])
    (explanation,) = client.explain(image, model="resnet18", method="activations",
                                    layer="layer1", grid=True)
    grid = np.asarray(Image.open(io.BytesIO(explanation.grid_png)))
    assert grid.shape == (8 * 17, 8 * 17, 3)  # 64 channels of 16x16, 8 columns, 1-pixel gaps
    for channel in (0, 9, 63):
        top, left = 1 + (channel // 8) * 17, 1 + (channel % 8) * 17
        tile = grid[top:top + 16, left:left + 16]
        np.testing.assert_allclose(tile[..., 0], min_max_255(expected["layer1"][channel]), atol=1)
        assert (tile[..., 0] == tile[..., 2]).all()


def test_filters_are_the_modules_weight(client, resnet):
    image = random_input((3, 64, 64), seed=6)
    (first,) = client.explain(image, model="resnet18", method="filters")  # the first conv
    np.testing.assert_array_equal(first.tensors["conv1.weight"],
                                  resnet.conv1.weight.detach().numpy())
    logits = resnet(torch.from_numpy(image)[None])[0]
    assert first.target == int(logits.argmax())
    (deep,) = client.explain(image, model="resnet18", method="filters", layer="layer2.0.conv2")
    np.testing.assert_array_equal(deep.tensors["layer2.0.conv2.weight"],
                                  resnet.layer2[0].conv2.weight.detach().numpy())


def test_first_layer_filter_grid_is_rgb_and_min_max_scaled(client, resnet):
    (explanation,) = client.explain(random_input((3, 64, 64)), model="resnet18", method="filters",
                                    grid=True)
    grid = np.asarray(Image.open(io.BytesIO(explanation.grid_png)))
    assert grid.shape == (256, 256, 3)  # 8x8 tiles of 7x7 with gaps = 64 px, enlarged 4x
    weight = resnet.conv1.weight.detach().numpy()
    for index in (0, 27, 63):
        top, left = 4 * (1 + (index // 8) * 8), 4 * (1 + (index % 8) * 8)
        tile = grid[top:top + 28:4, left:left + 28:4]  # one pixel per weight
        np.testing.assert_allclose(tile, min_max_255(weight[index]).transpose(1, 2, 0), atol=1)


def test_deep_filter_grid_has_a_row_per_filter(client, models_by_name):
    (explanation,) = client.explain(random_input((3, 64, 64)), model="vgg16", method="filters",
                                    layer="features.28", grid=True)
    grid = np.asarray(Image.open(io.BytesIO(explanation.grid_png)))
    assert grid.shape == (64 * 4, 64 * 4, 3)  # the first 64 filters x 64 input channels of 3x3


@pytest.mark.parametrize("method,layer,extra", [("activations", "layer9", []),
                                                ("activations", "layer1", ["nope.0"]),
                                                ("filters", "conv9", [])])
def test_unknown_layers_are_not_found_with_the_valid_names(client, method, layer, extra):
    with pytest.raises(ExplainServeError) as caught:
        client.explain(random_input((3, 64, 64)), model="resnet18", method=method, layer=layer,
                       extra_layers=extra)
    assert caught.value.code == grpc.StatusCode.NOT_FOUND
    assert (extra or [layer])[0] in caught.value.details
    assert "layer1.0.conv1" in caught.value.details


@pytest.mark.parametrize("method,layer,params,named", [
    ("filters", "layer1", {}, "convolution"),
    ("filters", "bn1", {"grid": True}, "convolution"),
    ("activations", "fc", {"grid": True}, "grid"),
    ("activations", "layer1", {"grid": 3}, "grid"),
])
def test_bad_layers_and_parameters_are_invalid_arguments(client, method, layer, params, named):
    with pytest.raises(ExplainServeError) as caught:
        client.explain(random_input((3, 64, 64)), model="resnet18", method=method, layer=layer,
                       **params)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert named in caught.value.details
