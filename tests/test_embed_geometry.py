"""Receptive fields against the gradient's support, the set results against known answers, and
the running top-k; no server needed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from explainserve.methods.embed import projection
from explainserve.methods.embed.features import penultimate_layer
from explainserve.methods.embed.receptive_field import call_count, receptive_field
from explainserve.models.demo.network import build_demo_model
from explainserve.models.registry import describe_layers
from explainserve.engine.embed_top import TopK


class _Reached(Exception):
    pass


def gradient_boxes(module: torch.nn.Module, layer: str, size: int, positions, trials: int = 2):
    """Per position (y, x): the bounding box (x_min, y_min, x_max, y_max) of the input pixels
    where the gradient of the layer's units there, summed over channels, is non-zero for any
    of a few random inputs (several, because a ReLU or max-pool can zero part of the field for
    one input). The forward pass stops at the layer."""
    target = dict(module.named_modules())[layer]
    supports = [torch.zeros(size, size, dtype=torch.bool) for _ in positions]
    generator = torch.Generator().manual_seed(0)
    for _ in range(trials):
        image = torch.randn(1, 3, size, size, generator=generator, requires_grad=True)
        captured = {}

        def stop(module, args, output):
            captured["out"] = output.clone()  # later in-place ops must not touch it
            raise _Reached

        handle = target.register_forward_hook(stop)
        try:
            module(image)
        except _Reached:
            pass
        finally:
            handle.remove()
        for support, (y, x) in zip(supports, positions):
            (gradient,) = torch.autograd.grad(captured["out"][0, :, y, x].sum(), image,
                                              retain_graph=True)
            support |= gradient[0].abs().sum(0) > 0
    boxes = []
    for support in supports:
        rows, cols = torch.nonzero(support, as_tuple=True)
        boxes.append((int(cols.min()), int(rows.min()), int(cols.max()), int(rows.max())))
    return boxes


POSITIONS = [(0, 0), (2, 3), (5, 1)]


def frozen(module: torch.nn.Module) -> torch.nn.Module:
    return module.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def resnet18():
    torch.manual_seed(0)
    return frozen(torchvision.models.resnet18(num_classes=10))


@pytest.mark.parametrize("layer", ["maxpool", "layer1.0.bn1", "layer2.0.downsample.0",
                                   "layer2", "layer3.0"])
def test_resnet18_receptive_field_is_where_the_gradient_reaches(resnet18, layer):
    field = receptive_field(resnet18, layer, (3, 96, 96))
    expected = gradient_boxes(resnet18, layer, 96, POSITIONS)
    assert [field.box(*position) for position in POSITIONS] == expected


@pytest.mark.parametrize("layer", ["features.block1.conv", "features.block1.pool",
                                   "features.block2", "features.block4"])
def test_demo_model_receptive_field_is_where_the_gradient_reaches(layer):
    torch.manual_seed(1)
    demo = frozen(build_demo_model())
    field = receptive_field(demo, layer, (3, 64, 64))
    positions = POSITIONS + [(7, 7)]
    assert [field.box(*p) for p in positions] == gradient_boxes(demo, layer, 64, positions)


def test_a_resnet_block_takes_its_deepest_path_and_pooling_to_a_point_takes_everything(resnet18):
    # layer2.0's shortcut is a 1x1 stride-2 conv: alone it would see a much smaller box.
    block = receptive_field(resnet18, "layer2.0", (3, 96, 96)).box(4, 4)
    shortcut = receptive_field(resnet18, "layer2.0.downsample.0", (3, 96, 96)).box(4, 4)
    assert block[2] - block[0] > shortcut[2] - shortcut[0]
    assert receptive_field(resnet18, "avgpool", (3, 96, 96)).box(0, 0) == (0, 0, 95, 95)
    assert call_count(resnet18, "layer1.0.relu", (3, 96, 96)) == 2
    assert call_count(resnet18, "layer1.0.conv1", (3, 96, 96)) == 1


def test_penultimate_layer_feeds_the_final_linear(resnet18):
    demo = frozen(build_demo_model())
    assert penultimate_layer(resnet18, describe_layers(resnet18, (3, 64, 64))) == "avgpool"
    with torch.device("meta"):  # shapes only: no 138M weights to initialise
        vgg = torchvision.models.vgg16(num_classes=10).eval()
        assert penultimate_layer(vgg, describe_layers(vgg, (3, 64, 64))) == "classifier.5"  # FC7
    assert penultimate_layer(demo, describe_layers(demo, (3, 64, 64))) == "flatten"


def test_nearest_neighbours_known_answer():
    # Points on a line at 0, 1, 3, 7, 15: each one's nearest others are known by hand.
    points = torch.tensor([[0.0], [1.0], [3.0], [7.0], [15.0]])
    indices, distances = projection.nearest_neighbours(points, 2, "l2")
    assert indices.tolist() == [[1, 2], [0, 2], [1, 0], [2, 1], [3, 2]]
    np.testing.assert_allclose(distances.numpy(), [[1, 3], [1, 2], [2, 3], [4, 6], [8, 12]])
    # Cosine: directions at 0, 10, 30 and 90 degrees (lengths must not matter).
    angles = np.deg2rad([0.0, 10.0, 30.0, 90.0])
    lengths = torch.tensor([1.0, 5.0, 0.2, 3.0])[:, None]
    directions = torch.tensor(np.stack([np.cos(angles), np.sin(angles)], 1), dtype=torch.float32)
    indices, distances = projection.nearest_neighbours(directions * lengths, 1, "cosine")
    assert indices[:, 0].tolist() == [1, 0, 1, 2]
    np.testing.assert_allclose(distances[:, 0].numpy(), 1 - np.cos(np.deg2rad([10, 10, 20, 60])),
                               atol=1e-6)
    few, _ = projection.nearest_neighbours(points[:3], 10, "l2")
    assert few.shape == (3, 2)  # k is capped at N - 1


def test_nearest_neighbours_in_blocks_equal_the_whole_matrix(monkeypatch):
    vectors = torch.randn(50, 8, generator=torch.Generator().manual_seed(3))
    whole = projection.nearest_neighbours(vectors, 4, "l2")
    monkeypatch.setattr(projection, "DISTANCE_BLOCK_ELEMENTS", 7 * 50)
    blocked = projection.nearest_neighbours(vectors, 4, "l2")
    assert torch.equal(whole[0], blocked[0])
    torch.testing.assert_close(whole[1], blocked[1])


def test_pca_equals_the_svd_and_tsne_has_the_asked_shape():
    generator = torch.Generator().manual_seed(4)
    vectors = torch.randn(40, 6, generator=generator) * torch.tensor([9.0, 4.0, 1, 1, 1, 1])
    centred = (vectors - vectors.mean(0)).double().numpy()
    u, s, _ = np.linalg.svd(centred, full_matrices=False)
    projected = projection.pca(vectors, 3).numpy()
    np.testing.assert_allclose(np.abs(projected), np.abs(u[:, :3] * s[:3]), rtol=1e-4, atol=1e-4)
    assert projection.pca(vectors[:2], 3).shape == (2, 3)  # rank 1: the rest are zeros
    assert projection.tsne(vectors[:20], 3).shape == (20, 3)
    assert projection.tsne(vectors[:3], 2).shape == (3, 2)  # too few points: PCA answers
    assert projection.tsne_perplexity(10) == 3.0 and projection.tsne_perplexity(1000) == 30.0


def test_top_k_keeps_the_best_and_crops_only_what_enters():
    made = []
    top = TopK(3)
    for index, activation in enumerate([0.5, 2.0, 1.0, 0.1, 3.0, 2.0, 0.0]):
        top.offer(activation, index, lambda i=index, a=activation: made.append(i) or (a, i))
    assert top.hits() == [(3.0, 4), (2.0, 1), (2.0, 5)]  # equal activations: earlier first
    assert made == [0, 1, 2, 4, 5]  # items 3 and 6 never beat the third best
