"""Channel maps [N, K, h, w] of a layer, with or without their gradients, whatever the layer's
layout (models/layouts.py): every layer method reads a layer through here, so a method written
for convolutions works unchanged on channels-last stages and transformer tokens."""

from __future__ import annotations

import torch
from torch import Tensor

from explainserve import hooks
from explainserve.methods.base import ModelHandle, score_targets
from explainserve.models.layouts import LayerLayout, to_channel_maps


def layer_gradients(model: ModelHandle, inputs: Tensor, targets: Tensor, layer: str,
                    layout: LayerLayout) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """Forward once, capturing A at `layer`; the backward stops at A (nothing below it needs a
    gradient: the input does not require one and the replica's parameters are frozen).
    Returns A and dS/dA as channel maps, and the scored targets."""
    with hooks.capture_outputs({layer: model.layer(layer)}, for_gradient=True) as captured:
        logits = model.module(inputs)
    output = captured.outputs[layer]
    scored = score_targets(logits, targets)
    (gradients,) = torch.autograd.grad(scored["score"].sum(), output)
    return (to_channel_maps(output.detach(), layout), to_channel_maps(gradients, layout), scored)


def layer_activations(model: ModelHandle, inputs: Tensor, layer: str,
                      layout: LayerLayout) -> tuple[Tensor, Tensor]:
    """Forward once without gradients; returns A as channel maps and the logits. A is the
    captured copy (for_gradient hands the network a clone), so a later in-place op in the
    network (resnet's `out += identity` after bn2) cannot change it."""
    with torch.no_grad(), hooks.capture_outputs({layer: model.layer(layer)},
                                                for_gradient=True) as captured:
        logits = model.module(inputs)
    return to_channel_maps(captured.outputs[layer].detach(), layout), logits
