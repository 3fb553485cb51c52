"""Ablation-CAM (Desai & Ramaswamy, WACV 2020, eq. 3-5): no gradient; channel k's weight is the
relative drop of the class score y^c when A^k is set to zero (y^c_k), as pytorch-grad-cam's
AblationCAM computes it:

    w^c_k = (y^c - y^c_k) / y^c,    L^c = ReLU(sum_k w^c_k A^k)

One row per channel; each pass gives every class score, so all targets of a request share the
K rows. Only the layers above `layer` depend on the ablation: where the network allows it
(suffix.py: the layer runs once per forward and nothing from below reaches the logits around
it) a row is the layer's output with channel k zeroed and runs through that suffix only, the
layers below having run once for the image. Otherwise a row is the image, and the whole forward
reruns with the layer's output replaced by its ablated copy (hooks.replace_output).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from explainserve import hooks
from explainserve.errors import FailedPrecondition
from explainserve.methods.base import (PREDICTED, Attribution, Kernel, ModelHandle, TensorRows,
                                       normalize_maps, upsample)
from explainserve.methods.explain.cam import UPSAMPLE
from explainserve.methods.explain.channel_passes import check_channels, run_in_windows
from explainserve.methods.explain.registry import register_method
from explainserve.methods.explain.suffix import suffix_above
from explainserve.models.layouts import LayerLayout, from_channel_maps, to_channel_maps


def layer_output_kernel(model: ModelHandle, inputs: Tensor, targets: Tensor, *, layer: str
                        ) -> dict[str, Tensor]:
    """The layer's output as the network above it reads it (a copy taken when the layer
    returns, so later in-place ops do not change it; a layer called several times: its last
    call, as layer_maps reads it), its number of calls, the logits, and whether a suffix exists."""
    seen: dict[str, object] = {}

    def record(call: int, output: Tensor) -> None:
        seen.update(output=output.detach().clone(), calls=call + 1)

    with torch.no_grad(), hooks.replace_output(model.layer(layer), record):
        logits = model.module(inputs)
    rows = inputs.shape[0]
    return {"output": seen["output"], "logits": logits,
            "calls": torch.full((rows,), seen["calls"]),
            "suffix": torch.full((rows,), suffix_above(model.module, layer) is not None)}


def ablate(output: Tensor, channels: Tensor, layout: LayerLayout) -> Tensor:
    """Copies of output [R, ...] with channel channels[r] of row r set to zero (eq. 3)."""
    maps = to_channel_maps(output, layout).clone()
    maps[torch.arange(len(maps), device=maps.device), channels] = 0
    return from_channel_maps(maps, layout, output)


def suffix_kernel(model: ModelHandle, inputs: Tensor, targets: Tensor, *, layer: str,
                  shape: tuple[int, ...]) -> dict[str, Tensor]:
    """inputs: ablated layer outputs (`shape` keeps outputs of other sizes out of the batch)."""
    with torch.no_grad():
        return {"logits": suffix_above(model.module, layer)(inputs)}


def rerun_kernel(model: ModelHandle, inputs: Tensor, targets: Tensor, *, layer: str,
                 layout: LayerLayout, call: int) -> dict[str, Tensor]:
    """inputs: the images; targets: the channel each row ablates at the layer's `call`."""
    def replace(index: int, output: Tensor) -> Tensor | None:
        return ablate(output, targets, layout) if index == call else None

    with torch.no_grad(), hooks.replace_output(model.layer(layer), replace):
        return {"logits": model.module(inputs)}


@dataclass(frozen=True, eq=False)
class AblatedRows:
    """Row k: the layer's output [...] of the image with channel k zeroed."""

    output: Tensor
    layout: LayerLayout
    channels: int

    def __len__(self) -> int:
        return self.channels

    def take(self, start: int, stop: int) -> tuple[Tensor, Tensor]:
        channels = torch.arange(start, stop)
        copies = self.output[None].expand(len(channels), *self.output.shape)
        return ablate(copies, channels, self.layout), channels


@dataclass(frozen=True, eq=False)
class ImageRows:
    """Row k: the image, ablating channel k (its target)."""

    image: Tensor
    channels: int

    def __len__(self) -> int:
        return self.channels

    def take(self, start: int, stop: int) -> tuple[Tensor, Tensor]:
        return self.image[None].expand(stop - start, *self.image.shape), torch.arange(start, stop)


def combine(maps: Tensor, logits: Tensor, ablated: Tensor, classes: list[int],
            size: tuple[int, int], mode: str) -> tuple[Tensor, Tensor]:
    """Eq. 4-5 for each target: maps [K, h, w], logits [classes], ablated [K, classes]."""
    scores = logits[classes]
    weights = (scores[:, None] - ablated[:, classes].T) / scores[:, None]
    cams = F.relu(torch.einsum("tk,khw->thw", weights, maps))
    return cams, normalize_maps(upsample(cams, size, mode))


@register_method("ablation_cam", params=(UPSAMPLE,), uses_layer=True, spatial_layer=True)
async def ablation_cam(ctx, image, targets, layer, params):
    """Ablation-CAM: activations weighted by the score drop when each one is zeroed."""
    layout = ctx.model.layer_layouts[layer]
    check_channels("ablation_cam", layer, layout, ctx.limits.max_cam_channels)
    first = await ctx.run(Kernel.of(layer_output_kernel, layer=layer), TensorRows.repeat(image, [0]))
    output, logits = first["output"][0], first["logits"][0]
    maps = to_channel_maps(output[None], layout)[0]
    classes = [int(logits.argmax()) if target == PREDICTED else target for target in targets]
    zero = [c for c in classes if logits[c] == 0]
    if zero:
        raise FailedPrecondition(f"the score of class {zero[0]} is exactly 0, and Ablation-CAM "
                                 f"divides each channel's score drop by it")
    if bool(first["suffix"][0]):
        kernel = Kernel.of(suffix_kernel, layer=layer, shape=tuple(output.shape))
        rows = AblatedRows(output, layout, maps.shape[0])
    else:
        kernel = Kernel.of(rerun_kernel, layer=layer, layout=layout, call=int(first["calls"][0]) - 1)
        rows = ImageRows(image, maps.shape[0])
    ablated = await run_in_windows(ctx, kernel, rows)
    cams, heatmaps = await asyncio.to_thread(combine, maps, logits, ablated, classes,
                                             tuple(image.shape[-2:]), params["upsample"])
    probabilities = logits.softmax(dim=0)
    return [Attribution(target=c, score=float(logits[c]), probability=float(probabilities[c]),
                        attribution=cams[i], heatmap=heatmaps[i]) for i, c in enumerate(classes)]
