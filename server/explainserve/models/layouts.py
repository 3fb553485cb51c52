"""The spatial form of a layer's output: how a [K, h, w] map is read out of it.

    nchw    [K, h, w]                    convolutions (today's torchvision CNNs)
    nhwc    [h, w, K]                    channels-last stages (Swin, MaxViT, ConvNeXt blocks)
    tokens  [P + h*w, K]                 P prefix tokens (class, distillation, register), then
                                         h x w patch tokens in row-major order (ViT, DeiT)
    none    anything else                vectors, or a form that cannot be decided

A layout is never guessed: where the shape alone is ambiguous the layer is `none` until the
model's configuration declares it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

KINDS = ("nchw", "nhwc", "tokens", "none")


@dataclass(frozen=True)
class LayerLayout:
    """Hashable, so it can be a kernel parameter."""

    kind: str = "none"
    height: int = 0
    width: int = 0
    channels: int = 0
    prefix_tokens: int = 0  # tokens only

    @property
    def spatial(self) -> bool:
        return self.kind != "none"

    @property
    def grid(self) -> tuple[int, int]:
        return (self.height, self.width)


NONE = LayerLayout()


def nchw_layout(shape: tuple[int, ...]) -> LayerLayout:
    """Today's rule: a [K, h, w] output with more than one position is nchw."""
    if len(shape) == 3 and shape[1] * shape[2] > 1:
        return LayerLayout("nchw", height=shape[1], width=shape[2], channels=shape[0])
    return NONE


def to_channel_maps(output: Tensor, layout: LayerLayout) -> Tensor:
    """A batch of a layer's outputs [N, ...] as channel maps [N, K, h, w] (a view where the
    layout allows it, so a gradient taken w.r.t. `output` maps the same way)."""
    if layout.kind == "nchw":
        return output
    if layout.kind == "nhwc":
        return output.permute(0, 3, 1, 2)
    if layout.kind == "tokens":
        patches = output[:, layout.prefix_tokens:, :]
        return patches.reshape(output.shape[0], layout.height, layout.width,
                               output.shape[-1]).permute(0, 3, 1, 2)
    raise ValueError(f"layout {layout.kind!r} has no channel maps")


def from_channel_maps(maps: Tensor, layout: LayerLayout, like: Tensor) -> Tensor:
    """The inverse of to_channel_maps into a tensor shaped like `like` (prefix tokens zero):
    for methods that edit channel maps and feed them back (ablation, masking)."""
    if layout.kind == "nchw":
        return maps
    if layout.kind == "nhwc":
        return maps.permute(0, 2, 3, 1)
    if layout.kind == "tokens":
        patches = maps.permute(0, 2, 3, 1).reshape(maps.shape[0], -1, maps.shape[1])
        prefix = like[:, :layout.prefix_tokens, :]
        return torch.cat([prefix, patches], dim=1)
    raise ValueError(f"layout {layout.kind!r} has no channel maps")
