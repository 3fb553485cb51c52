"""Activations, Embed's vectors and top patches, and Maximize's channel and neuron objectives on
token (ViT) and channels-last (Swin) layers, through the real server and client: each reads
the layer as [K, h, w] channel maps through its layout, checked against the layer's output
captured by a plain forward hook."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from explainserve.config import ModelConfig
from explainserve_client import Client
from PIL import Image
from support import layer_outputs, random_inputs, reference_module, running_server

VIT = ModelConfig("vit", "python:vit_models:build_small_vit", None, 5, (32, 32))
SWIN = ModelConfig("swin", "python:vit_models:build_small_swin", None, 5, (64, 64))
TOKENS = "encoder.layers.encoder_layer_0"  # [17, 32]: class token + 4x4 patches
STAGE = "features.3"  # [8, 8, 32]


@pytest.fixture(scope="module")
def client():
    with running_server((VIT, SWIN)) as background, Client(background.address, timeout=120) as client:
        yield client


def as_maps(output: torch.Tensor, model: str) -> torch.Tensor:
    """[N, T, D] tokens or [N, h, w, K] -> [N, K, h, w], written out here independently."""
    if model == "vit":
        return output[:, 1:].reshape(-1, 4, 4, output.shape[-1]).permute(0, 3, 1, 2)
    return output.permute(0, 3, 1, 2)


@pytest.mark.parametrize(("model", "config", "layer"), [("vit", VIT, TOKENS), ("swin", SWIN, STAGE)])
def test_activations_grid_and_embed_read_channel_maps(client, model, config, layer):
    images = random_inputs(3, (3, *config.input_size), seed=4)
    seen, _ = layer_outputs(reference_module(config), [layer], images)
    maps = as_maps(seen[layer], model)
    (got,) = client.explain(images[0], model=model, method="activations", layer=layer, grid=True)
    np.testing.assert_allclose(got.tensors[layer], seen[layer][0].numpy(), rtol=1e-5, atol=1e-6)
    # K = 32 tiles of the [h, w] maps with a 1-pixel gap, 6 columns, enlarged to ~256 pixels
    side = 6 * (maps.shape[-1] + 1)
    grid = np.asarray(Image.open(io.BytesIO(got.grid_png)))
    assert grid.shape == (side * (256 // side), side * (256 // side), 3)
    channel = 3
    embedding = client.embed(images, model=model, layer=layer, top_patches=[(layer, channel)], top_k=2)
    np.testing.assert_allclose(embedding.vectors, maps.mean(dim=(2, 3)).numpy(), rtol=1e-4, atol=1e-5)
    peaks = maps[:, channel].flatten(1).max(dim=1)
    hits = embedding.top_patches[(layer, channel)]
    best = int(peaks.values.argmax())
    assert hits[0].index == best
    assert hits[0].activation == pytest.approx(float(peaks.values[best]), rel=1e-5)
    width = maps.shape[-1]
    assert (hits[0].y, hits[0].x) == divmod(int(peaks.indices[best]), width)


@pytest.mark.parametrize(("model", "config", "layer"), [("vit", VIT, TOKENS), ("swin", SWIN, STAGE)])
def test_channel_and_neuron_objectives_read_channel_maps(client, model, config, layer):
    (channel,) = client.maximize(model, [5], "channel", layer=layer, steps=3, formats=("tensor",))
    image = torch.from_numpy(channel.tensor)[None]
    seen, _ = layer_outputs(reference_module(config), [layer], image)
    maps = as_maps(seen[layer], model)
    # the frame's objective is the channel's mean over the [h, w] positions at the final image
    assert channel.objective_value == pytest.approx(float(maps[0, 5].mean()), rel=1e-3, abs=1e-5)
    (neuron,) = client.maximize(model, [2], "neuron", layer=layer, neuron=(1, 2), steps=3,
                                formats=("tensor",))
    seen, _ = layer_outputs(reference_module(config), [layer], torch.from_numpy(neuron.tensor)[None])
    assert neuron.objective_value == pytest.approx(float(as_maps(seen[layer], model)[0, 2, 1, 2]),
                                                   rel=1e-3, abs=1e-5)
