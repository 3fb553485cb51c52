"""Receptive fields (methods/embed/receptive_field.py) against the gradient's support; no
server needed."""

from __future__ import annotations

import pytest
import torch
from explainserve.methods.embed.receptive_field import call_count, receptive_field


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


@pytest.mark.parametrize("layer", ["maxpool", "layer1.0.bn1", "layer2.0.downsample.0",
                                   "layer2", "layer3.0"])
def test_resnet18_receptive_field_is_where_the_gradient_reaches(resnet18, layer):
    field = receptive_field(resnet18, layer, (3, 96, 96))
    expected = gradient_boxes(resnet18, layer, 96, POSITIONS)
    assert [field.box(*position) for position in POSITIONS] == expected


@pytest.mark.parametrize("layer", ["features.block1.conv", "features.block1.pool",
                                   "features.block2", "features.block4"])
def test_demo_model_receptive_field_is_where_the_gradient_reaches(demo_network, layer):
    demo = demo_network
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
