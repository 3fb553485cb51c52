"""A layer's output for the objectives: during a step the forward pass stops at the layer; for
a report, a reference code or a shape probe it runs to the logits."""

from __future__ import annotations

import torch
from torch import Tensor

from explainserve import hooks
from explainserve.methods.base import ModelHandle


def layer_output(model: ModelHandle, images: Tensor, layer: str, full: bool
                 ) -> tuple[Tensor, Tensor | None]:
    """The layer's output [N, K, ...] and, with full, the logits. Without full the forward
    pass stops at the layer (nothing above it is needed for the gradient)."""
    modules = {layer: model.layer(layer)}
    if full:
        # for_gradient hands the network a clone, so an in-place op after the layer cannot
        # change the captured values; under no_grad it costs one copy.
        with hooks.capture_outputs(modules, for_gradient=True) as captured:
            logits = model.module(images)
        return captured.outputs[layer].detach(), logits
    with hooks.capture_outputs(modules, stop_after=layer) as captured:
        try:
            model.module(images)
        except hooks.StopForward:
            pass
    return captured.outputs[layer], None


def layer_kernel(model: ModelHandle, inputs: Tensor, targets: Tensor, *,
                 layer: str) -> dict[str, Tensor]:
    """The code of each input at the layer, and its logits: inversion's Phi0, and the probe
    that finds a layer's shape at another image size."""
    with torch.no_grad():
        code, logits = layer_output(model, inputs, layer, full=True)
    return {"code": code, "logits": logits}
