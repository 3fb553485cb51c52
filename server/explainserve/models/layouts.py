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

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

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


# --- Inference from the modules and their output shapes -------------------------------------

MAX_PREFIX_TOKENS = 8  # class, distillation and register tokens before the patch tokens


def patchify(module: nn.Module) -> bool:
    """A convolution that cuts the image into non-overlapping patches (a ViT's patch embedding)."""
    return (isinstance(module, nn.Conv2d) and module.kernel_size == module.stride
            and module.kernel_size[0] * module.kernel_size[1] > 1)


def _last_dim_evidence(module: nn.Module, shape: tuple[int, ...]) -> bool:
    """nn.Linear and nn.LayerNorm act on the last dimension: their 3-D outputs are [h, w, K].
    (timm's LayerNorm2d subclasses nn.LayerNorm but normalises dimension 1 of NCHW.)"""
    if type(module) is nn.Linear:
        return module.out_features == shape[-1]
    if type(module) is nn.LayerNorm:
        return tuple(module.normalized_shape) == (shape[-1],)
    return False


def _first_dim_evidence(module: nn.Module, shape: tuple[int, ...]) -> bool:
    if isinstance(module, nn.Conv2d):
        return module.out_channels == shape[0]
    if isinstance(module, nn.BatchNorm2d):
        return module.num_features == shape[0]
    if isinstance(module, nn.LayerNorm):  # LayerNorm2d-style over channels of NCHW
        return tuple(module.normalized_shape) == (shape[0],) and shape[0] != shape[-1]
    return False


def infer_layouts(modules: Mapping[str, nn.Module], shapes: Mapping[str, tuple[int, ...]]
                  ) -> dict[str, LayerLayout]:
    """Each layer's layout from its module and output shape (`shapes` in forward order).

    [a, b, c] is nchw or nhwc where a module proves it (a convolution or BatchNorm: channels
    first; nn.Linear or nn.LayerNorm: channels last), or where the same shape occurs only among
    outputs proven one way, or where only a (nchw) or only c (nhwc) is a channel count of the
    model; anything else is none. A model with no channels-last module keeps every 3-D output
    nchw. [T, D] is tokens when T - h*w is 0..8 for the grid h x w of the patch embedding
    convolution run before it, or (P = 0) T = h*w of the channels-last map just before it."""
    first = {s for name, s in shapes.items() if len(s) == 3 and _first_dim_evidence(modules[name], s)}
    last = {s for name, s in shapes.items() if len(s) == 3 and _last_dim_evidence(modules[name], s)}
    # a Linear or LayerNorm on [T, D] tokens: the model keeps channels last (a transformer)
    token_ops = {s for name, s in shapes.items() if len(s) == 2 and _last_dim_evidence(modules[name], s)}
    channels = {s[0] for s in first} | {s[-1] for s in last | token_ops}
    layouts: dict[str, LayerLayout] = {}
    grid: tuple[int, int] | None = None
    stage_grid: tuple[int, int] | None = None
    for name, shape in shapes.items():
        module = modules[name]
        if patchify(module) and len(shape) == 3:
            grid = (shape[1], shape[2])
        if len(shape) == 3:
            layouts[name] = _spatial(module, shape, first, last, channels, bool(last or token_ops))
            if layouts[name].kind == "nhwc":
                stage_grid = layouts[name].grid
        elif len(shape) == 2 and grid is not None and tokens_layout(shape, grid).spatial:
            layouts[name] = tokens_layout(shape, grid)
        elif len(shape) == 2 and stage_grid and shape[0] == stage_grid[0] * stage_grid[1]:
            # a channels-last block flattening its own [h, w, K] map (timm Swin's MLP half)
            layouts[name] = LayerLayout("tokens", *stage_grid, shape[1], 0)
        else:
            layouts[name] = NONE
    return layouts


def _spatial(module: nn.Module, shape: tuple[int, ...], first: set, last: set,
             channels: set, channels_last_model: bool) -> LayerLayout:
    a, b, c = shape
    if not channels_last_model:
        return nchw_layout(shape)  # a CNN: today's rule
    if _last_dim_evidence(module, shape):
        kind = "nhwc"
    elif _first_dim_evidence(module, shape):
        kind = "nchw"
    elif a == c or (shape in first and shape in last):
        kind = "none"  # [7, 7, 7]: the shape cannot say which end holds the channels
    elif shape in last and shape not in first:
        kind = "nhwc"
    elif shape in first and shape not in last:
        kind = "nchw"
    elif (a in channels) != (c in channels):
        kind = "nchw" if a in channels else "nhwc"
    else:
        kind = "none"
    try:
        return make_layout(kind, shape)
    except ValueError:  # a single position: a vector, not a map
        return NONE


def tokens_layout(shape: tuple[int, ...], grid: tuple[int, int]) -> LayerLayout:
    """[P + h*w, D] with 0 <= P <= 8 on the patch grid, else none."""
    prefix = shape[0] - grid[0] * grid[1]
    if 0 <= prefix <= MAX_PREFIX_TOKENS and grid[0] * grid[1] > 1:
        return LayerLayout("tokens", grid[0], grid[1], shape[1], prefix)
    return NONE


def make_layout(kind: str, shape: tuple[int, ...], prefix_tokens: int = 0,
                grid: tuple[int, int] | None = None) -> LayerLayout:
    """The layout of `kind` for an output of `shape`; ValueError says why it cannot be."""
    if kind == "none":
        return NONE
    if kind in ("nchw", "nhwc"):
        if len(shape) != 3:
            raise ValueError(f"kind {kind!r} needs a 3-D output, the layer's is {list(shape)}")
        k, h, w = shape if kind == "nchw" else (shape[2], shape[0], shape[1])
        if h * w <= 1:
            raise ValueError(f"kind {kind!r} on output {list(shape)} has a single position")
        return LayerLayout(kind, h, w, k)
    if len(shape) != 2:
        raise ValueError(f"kind 'tokens' needs a [tokens, channels] output, the layer's is {list(shape)}")
    if grid is None:
        raise ValueError("kind 'tokens' needs height and width: the model has no patch "
                         "embedding convolution to read the patch grid from")
    if prefix_tokens + grid[0] * grid[1] != shape[0]:
        raise ValueError(f"{prefix_tokens} prefix tokens and a {grid[0]}x{grid[1]} grid make "
                         f"{prefix_tokens + grid[0] * grid[1]} tokens, the layer has {shape[0]}")
    return LayerLayout("tokens", grid[0], grid[1], shape[1], prefix_tokens)


def patch_grid(modules: Mapping[str, nn.Module], shapes: Mapping[str, tuple[int, ...]]
               ) -> tuple[int, int] | None:
    """The grid of the model's last patch embedding convolution, if it has one."""
    grids = [(s[1], s[2]) for name, s in shapes.items() if len(s) == 3 and patchify(modules[name])]
    return grids[-1] if grids else None


def describe(layout: LayerLayout) -> str:
    """A layout in words, for logs and the command line."""
    if layout.kind == "none":
        return "none"
    text = f"{layout.kind} {layout.channels}x{layout.height}x{layout.width}"
    return text + (f" +{layout.prefix_tokens} prefix" if layout.prefix_tokens else "")
