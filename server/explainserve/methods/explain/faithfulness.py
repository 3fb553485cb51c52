"""Deletion and insertion scores of a heatmap (Petsiuk et al. 2018, RISE, arXiv:1806.07421,
sec. 4.1): how fast the target's probability falls when the pixels the map ranks highest are
removed first, and how fast it rises when they are revealed first.

Pixels are ranked by the [H, W] heatmap, highest first (ties in row-major order). After step
i of n, the first floor(i * H * W / n) pixels of that order are taken from the end image, the
rest from the start image: deletion runs from the image to the baseline, insertion from the
baseline to the image. The curve is the target's softmax probability at steps 0..n and its
score the trapezoidal area under it over the fraction of pixels changed (RISE's `auc`). The
n + 1 perturbed copies per curve are rows like any others, made on demand (SmoothGrad's
NoisyRows pattern), so they share device passes with other requests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from explainserve.errors import InvalidArgument
from explainserve.methods.base import Attribution, Context, Kernel, ModelHandle

DELETION, INSERTION = "deletion", "insertion"
METRICS = (DELETION, INSERTION)
BLUR, CONSTANT = "blur", "constant"
# RISE's own choices: deletion blends to a constant (zero) image, insertion starts from a blur.
DEFAULT_BASELINE = {DELETION: CONSTANT, INSERTION: BLUR}
DEFAULT_STEPS = 64
DEFAULT_BLUR_SIGMA = 5.0  # RISE blurs with sigma 5 (an 11-tap kernel)


@dataclass(frozen=True)
class Evaluation:
    """Which scores to compute and how to perturb; baseline "" means DEFAULT_BASELINE."""

    metrics: tuple[str, ...]
    steps: int = DEFAULT_STEPS
    baseline: str = ""
    constant: float = 0.0
    blur_sigma: float = DEFAULT_BLUR_SIGMA

    def baseline_of(self, metric: str) -> str:
        return self.baseline or DEFAULT_BASELINE[metric]


def probability_kernel(model: ModelHandle, inputs: Tensor, targets: Tensor) -> dict[str, Tensor]:
    """The softmax probability of each row's target: the value a RISE curve plots."""
    with torch.no_grad():
        logits = model.module(inputs)
    return {"probability": logits.softmax(dim=1).gather(1, targets[:, None])[:, 0]}


def gaussian_blur(image: Tensor, sigma: float) -> Tensor:
    """[C, H, W] blurred by a separable Gaussian of radius ceil(3 sigma), edges replicated."""
    radius = math.ceil(3 * sigma)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    weights = torch.exp(-0.5 * (offsets / sigma) ** 2)
    weights = (weights / weights.sum()).to(image.dtype)
    channels = image.shape[0]
    x = F.pad(image[None], (radius, radius, radius, radius), mode="replicate")
    x = F.conv2d(x, weights.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    x = F.conv2d(x, weights.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)
    return x[0]


def baseline_image(image: Tensor, kind: str, evaluation: Evaluation) -> Tensor:
    if kind == BLUR:
        return gaussian_blur(image, evaluation.blur_sigma)
    return torch.full_like(image, evaluation.constant)


def pixel_ranks(heatmap: Tensor) -> Tensor:
    """Each pixel's place in the order, 0 for the highest value; ties keep row-major order."""
    order = torch.sort(heatmap.flatten(), descending=True, stable=True).indices
    ranks = torch.empty_like(order)
    ranks[order] = torch.arange(order.numel())
    return ranks


def auc(curve: Tensor) -> float:
    """Trapezoidal area under points equally spaced on [0, 1] (RISE's evaluation.py `auc`)."""
    values = curve.to(torch.float64)
    return float((values.sum() - values[0] / 2 - values[-1] / 2) / (values.numel() - 1))


@dataclass(frozen=True, eq=False)
class Curve:
    target: int
    start: Tensor  # [C, H, W], the image at step 0
    end: Tensor  # [C, H, W], the image once every pixel is changed
    ranks: Tensor  # [H * W]


@dataclass(frozen=True, eq=False)
class CurveRows:
    """Rows r = c * (steps + 1) + i: curve c after step i; made on demand."""

    curves: tuple[Curve, ...]
    steps: int

    def __len__(self) -> int:
        return len(self.curves) * (self.steps + 1)

    def take(self, start: int, stop: int) -> tuple[Tensor, Tensor]:
        inputs, targets = [], []
        for row in range(start, stop):
            curve, step = self.curves[row // (self.steps + 1)], row % (self.steps + 1)
            changed = curve.ranks.numel() * step // self.steps
            mask = (curve.ranks < changed).view(1, *curve.start.shape[1:])
            inputs.append(torch.where(mask, curve.end, curve.start))
            targets.append(curve.target)
        return torch.stack(inputs), torch.tensor(targets, dtype=torch.long)


async def evaluate(ctx: Context, image: Tensor, method: str, attributions: list[Attribution],
                   evaluation: Evaluation) -> None:
    """Adds "<metric>_auc" to each attribution's quality and "<metric>_curve" to its tensors."""
    baselines = {kind: baseline_image(image, kind, evaluation)
                 for kind in {evaluation.baseline_of(m) for m in evaluation.metrics}}
    curves = []
    for item in attributions:
        if item.heatmap is None:
            raise InvalidArgument(f"method {method!r} returns no heatmap, so it has no pixel "
                                  f"order to score; evaluate {list(evaluation.metrics)} needs one")
        if item.target < 0:
            raise InvalidArgument(f"method {method!r} explains no class here, so there is no "
                                  "probability to score; ask for a target class")
        ranks = pixel_ranks(item.heatmap)
        for metric in evaluation.metrics:
            baseline = baselines[evaluation.baseline_of(metric)]
            start, end = (image, baseline) if metric == DELETION else (baseline, image)
            curves.append(Curve(item.target, start, end, ranks))
    rows = CurveRows(tuple(curves), evaluation.steps)
    probabilities = (await ctx.run(Kernel.of(probability_kernel), rows))["probability"]
    points = probabilities.view(len(curves), evaluation.steps + 1).float()
    for index, (item, metric) in enumerate((item, metric) for item in attributions
                                           for metric in evaluation.metrics):
        item.quality[f"{metric}_auc"] = auc(points[index])
        item.tensors[f"{metric}_curve"] = points[index].clone()
