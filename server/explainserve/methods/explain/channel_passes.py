"""What Score-CAM and Ablation-CAM share: one forward pass per channel of a layer, run as lazy
rows in windows (as SmoothGrad runs its noisy copies), so the batcher cuts them into
device-sized chunks that share passes with other requests, and at most one window's logits
exist at a time. Every pass returns all class scores, so a request's targets share them."""

from __future__ import annotations

import torch
from torch import Tensor

from explainserve.errors import InvalidArgument
from explainserve.methods.base import Context, Kernel, Rows, RowWindow
from explainserve.models.layouts import LayerLayout

ROWS_PER_WINDOW = 512


def check_channels(method: str, layer: str, layout: LayerLayout, limit: int) -> None:
    """Refuse, before any device work, a layer with more channels than the limit allows."""
    if layout.channels > limit:
        raise InvalidArgument(
            f"layer {layer!r} has {layout.channels} channels and method {method!r} runs one "
            f"forward pass per channel; at most {limit} (choose a layer with fewer channels)")


async def run_in_windows(ctx: Context, kernel: Kernel, rows: Rows, output: str = "logits") -> Tensor:
    """The kernel's `output` for every row, window by window, stacked in row order."""
    parts = []
    for start in range(0, len(rows), ROWS_PER_WINDOW):
        window = RowWindow(rows, start, min(start + ROWS_PER_WINDOW, len(rows)))
        parts.append((await ctx.run(kernel, window))[output])
    return torch.cat(parts)
