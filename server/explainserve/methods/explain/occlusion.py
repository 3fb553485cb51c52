"""Occlusion sensitivity (Zeiler & Fergus 2014, sec. 4.2; the seeds' 32x32 mask, stride 2).

A window slides over the input with a stride; at each position p the copy x_p has the window's
pixels (every channel) set to the baseline value, and the drop d_p = S_c(x) - S_c(x_p) says how
much the class score relies on them. Each pixel gets the mean drop of the windows covering it,
which is Captum's Occlusion convention, so the map has the input's resolution:

    A_c(i, j) = sum_{p : (i,j) in W_p} d_p / |{p : (i,j) in W_p}|

Positions follow Captum too: ceil((size - window) / stride) + 1 offsets per axis, spaced by the
stride from 0; a window that runs past the border is cut there. The copies are built lazily, a
device-sized chunk at a time, and only ever run forward (no gradient is computed at all); one
forward gives every class score, so all targets of a request share the same passes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from explainserve.errors import InvalidArgument
from explainserve.methods.base import PREDICTED, Attribution, Kernel, Param, normalize_maps
from explainserve.methods.explain.predict import logits_kernel
from explainserve.methods.explain.registry import register_method

PARAMS = (
    Param("window", int, 32, minimum=1, help="side of the square occluding window, in pixels"),
    Param("stride", int, 2, minimum=1, help="step between window positions, in pixels"),
    Param("baseline", float, 0.0, minimum=-1e3, maximum=1e3,
          help="value of the occluded pixels, in the model's normalised input space (0 is the "
               "mean colour: a gray patch; valid pixels lie within about [-3, 3])"),
    Param("score", str, "logit", choices=("logit", "probability"),
          help="what drops: the class logit (Captum's convention) or its softmax probability"),
)


@dataclass(frozen=True)
class OcclusionGrid:
    """The window positions over an input of `size` (H, W), row-major."""

    size: tuple[int, int]
    window: int
    stride: int

    def offsets(self, axis: int) -> Tensor:
        count = math.ceil((self.size[axis] - self.window) / self.stride) + 1
        return torch.arange(count) * self.stride

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.offsets(0)), len(self.offsets(1)))

    def __len__(self) -> int:
        return self.shape[0] * self.shape[1]

    def masks(self, start: int, stop: int) -> Tensor:
        """bool [stop - start, H, W]: True inside the window of each position in [start, stop)."""
        tops, lefts = self.offsets(0), self.offsets(1)
        index = torch.arange(start, stop)
        top, left = tops[index // len(lefts), None], lefts[index % len(lefts), None]
        rows, cols = torch.arange(self.size[0]), torch.arange(self.size[1])
        in_rows = (rows >= top) & (rows < top + self.window)
        in_cols = (cols >= left) & (cols < left + self.window)
        return in_rows[:, :, None] & in_cols[:, None, :]

    def spread(self, drops: Tensor) -> Tensor:
        """[T, h, w] drops per position -> [T, H, W] mean drop of the windows covering each
        pixel. A transposed convolution with a ones kernel adds each drop over its window."""
        ones = torch.ones(1, 1, self.window, self.window, dtype=drops.dtype)
        height, width = self.size

        def cover(values: Tensor) -> Tensor:
            summed = F.conv_transpose2d(values[:, None], ones, stride=self.stride)
            return summed[:, 0, :height, :width]  # cut the windows at the border

        return cover(drops) / cover(torch.ones_like(drops[:1]))


@dataclass(frozen=True)
class OcclusionRows:
    """Row 0 is the image itself (its scores are the reference S_c(x)); row 1 + p is the copy
    occluded at position p. take() builds only the copies it is asked for."""

    image: Tensor  # [C, H, W]
    grid: OcclusionGrid
    baseline: float

    def __len__(self) -> int:
        return 1 + len(self.grid)

    def take(self, start: int, stop: int) -> tuple[Tensor, Tensor]:
        masks = self.grid.masks(max(start, 1) - 1, stop - 1)
        baseline = torch.tensor(self.baseline, dtype=self.image.dtype)
        copies = torch.where(masks[:, None], baseline, self.image)
        if start == 0:
            copies = torch.cat([self.image[None], copies])
        return copies, torch.zeros(len(copies), dtype=torch.long)  # targets: unused by the kernel


def occlusion_grid(image: Tensor, window: int, stride: int, max_positions: int) -> OcclusionGrid:
    """Validate the window against the input and the limit on forward passes."""
    height, width = image.shape[-2:]
    where = "of method 'occlusion'"
    if window > min(height, width):
        raise InvalidArgument(f"parameter 'window' {where} is {window}, larger than the "
                              f"{height}x{width} input")
    if stride > window and window < max(height, width):
        raise InvalidArgument(f"parameter 'stride' {where} is {stride}, larger than the window "
                              f"({window}): pixels between windows would never be occluded")
    grid = OcclusionGrid((height, width), window, stride)
    if len(grid) > max_positions:
        raise InvalidArgument(
            f"window {window} with stride {stride} gives {len(grid)} occlusion positions on a "
            f"{height}x{width} input; at most {max_positions} (raise 'window' or 'stride')")
    return grid


@register_method("occlusion", params=PARAMS)
async def occlusion(ctx, image, targets, layer, params):
    """Drop of the class score when a window of the input is occluded (Zeiler & Fergus 2014)."""
    grid = occlusion_grid(image, params["window"], params["stride"],
                          ctx.limits.max_occlusion_positions)
    rows = OcclusionRows(image, grid, params["baseline"])
    logits = (await ctx.run(Kernel.of(logits_kernel), rows))["logits"]
    scores = logits.softmax(dim=1) if params["score"] == "probability" else logits
    probabilities = logits[0].softmax(dim=0)
    classes = [int(logits[0].argmax()) if target == PREDICTED else target for target in targets]
    drops = scores[0, classes][:, None] - scores[1:, classes].T  # [T, positions]
    maps = grid.spread(drops.reshape(len(classes), *grid.shape))
    heatmaps = normalize_maps(maps)
    return [Attribution(target=c, score=float(logits[0, c]), probability=float(probabilities[c]),
                        attribution=maps[i], heatmap=heatmaps[i])
            for i, c in enumerate(classes)]
