"""Score-CAM (Wang et al. 2020, arXiv:1910.01279, Algorithm 1): no gradient; channel k's weight
is the class score of the input masked by A^k, upsampled to the input and min-max normalised:

    H^k = s(Up(A^k)),  s(M) = (M - min M) / (max M - min M)           (eq. 6)
    alpha^c = softmax_k( S^c(X o H^k) ),   L^c = ReLU(sum_k alpha^c_k A^k)

S^c is the target's logit, or its softmax probability (`score`). The K masked copies are lazy
rows (channel_passes.py); each pass gives every class score, so all targets of a request share
the K rows. As in pytorch-grad-cam's ScoreCAM, the masks are upsampled bilinearly with aligned
corners and s divides by (max - min + 1e-8), so a constant channel masks everything out.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from explainserve.methods.base import (PREDICTED, Attribution, Kernel, ModelHandle, Param,
                                       TensorRows, normalize_maps, upsample)
from explainserve.methods.explain.cam import UPSAMPLE
from explainserve.methods.explain.channel_passes import check_channels, run_in_windows
from explainserve.methods.explain.layer_maps import layer_activations
from explainserve.methods.explain.predict import logits_kernel
from explainserve.methods.explain.registry import register_method
from explainserve.models.layouts import LayerLayout

SCORE = Param("score", str, "logit", choices=("logit", "probability"),
              help="the class score of each masked input that the softmax over channels weighs")
EPSILON = 1e-8  # of the normalisation s, as pytorch-grad-cam's ScoreCAM


def channel_maps_kernel(model: ModelHandle, inputs: Tensor, targets: Tensor, *, layer: str,
                        layout: LayerLayout) -> dict[str, Tensor]:
    maps, logits = layer_activations(model, inputs, layer, layout)
    return {"maps": maps, "logits": logits}


@dataclass(frozen=True, eq=False)
class MaskedRows:
    """Row k: the image masked by H^k; built a chunk at a time on the worker."""

    image: Tensor  # [C, H, W]
    maps: Tensor  # [K, h, w]

    def __len__(self) -> int:
        return self.maps.shape[0]

    def take(self, start: int, stop: int) -> tuple[Tensor, Tensor]:
        masks = F.interpolate(self.maps[None, start:stop].float(), size=self.image.shape[-2:],
                              mode="bilinear", align_corners=True)[0]
        low = masks.amin(dim=(1, 2), keepdim=True)
        high = masks.amax(dim=(1, 2), keepdim=True)
        masks = (masks - low) / (high - low + EPSILON)
        copies = self.image[None] * masks[:, None].to(self.image.dtype)
        return copies, torch.zeros(len(copies), dtype=torch.long)  # targets: unused


def combine(maps: Tensor, logits: Tensor, classes: list[int], score: str, size: tuple[int, int],
            mode: str) -> tuple[Tensor, Tensor]:
    """maps [K, h, w], masked logits [K, classes] -> ReLU(sum_k alpha^c_k A^k) [T, h, w] for
    each target c, and their heatmaps."""
    scores = logits.softmax(dim=1) if score == "probability" else logits
    weights = scores[:, classes].softmax(dim=0)
    cams = F.relu(torch.einsum("kt,khw->thw", weights, maps))
    return cams, normalize_maps(upsample(cams, size, mode))


@register_method("score_cam", params=(UPSAMPLE, SCORE), uses_layer=True, spatial_layer=True)
async def score_cam(ctx, image, targets, layer, params):
    """Score-CAM: activations weighted by the class score of the input they mask."""
    layout = ctx.model.layer_layouts[layer]
    check_channels("score_cam", layer, layout, ctx.limits.max_cam_channels)
    first = await ctx.run(Kernel.of(channel_maps_kernel, layer=layer, layout=layout),
                          TensorRows.repeat(image, [0]))
    maps, logits = first["maps"][0], first["logits"][0]
    classes = [int(logits.argmax()) if target == PREDICTED else target for target in targets]
    masked = await run_in_windows(ctx, Kernel.of(logits_kernel), MaskedRows(image, maps))
    cams, heatmaps = await asyncio.to_thread(combine, maps, masked, classes, params["score"],
                                             tuple(image.shape[-2:]), params["upsample"])
    probabilities = logits.softmax(dim=0)
    return [Attribution(target=c, score=float(logits[c]), probability=float(probabilities[c]),
                        attribution=cams[i], heatmap=heatmaps[i]) for i, c in enumerate(classes)]
