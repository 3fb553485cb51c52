"""The rows of integrated gradients' path and their reduction (arXiv:1703.01365, eq. 1).

The path points are rows like any others: made lazily on the worker thread, submitted a
window at a time, so the points of many requests share passes through the batcher. One forward
pass over [x, x'] gives F(x) and F(x') for every target (and resolves the predicted class);
each target's completeness gap |sum_i IG_i - (F(x) - F(x'))| / |F(x) - F(x')| is reported, and
while it exceeds `max_gap` that target's rule is refined (quadrature.refined_steps) up to
limits.max_integrated_gradients_steps points.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor

from explainserve.errors import InvalidArgument
from explainserve.methods.base import PREDICTED, Kernel, ModelHandle
from explainserve.methods.explain.baselines import Baseline
from explainserve.methods.explain.predict import logits_kernel
from explainserve.methods.explain.quadrature import minimum_steps, nodes, refined_steps, reuse
from explainserve.methods.explain.saliency import input_gradient
from explainserve.methods.base import RowWindow
from explainserve.methods.explain.smoothgrad import ROWS_PER_WINDOW


def path_gradient_kernel(model: ModelHandle, inputs: Tensor, targets: Tensor) -> dict[str, Tensor]:
    gradient, _ = input_gradient(model, inputs, targets)
    return {"gradient": gradient}


PATH_GRADIENT = Kernel.of(path_gradient_kernel)


@dataclass(frozen=True, eq=False)
class Path:
    """The straight path from the baseline x' to the image x; x' is made once, on first use
    (on a worker thread)."""

    image: Tensor
    spec: Baseline

    @cached_property
    def baseline(self) -> Tensor:
        return self.spec.make(self.image)

    def points(self, alphas: Tensor) -> Tensor:
        baseline = self.baseline
        return baseline + alphas[:, None, None, None] * (self.image - baseline)


@dataclass(frozen=True, eq=False)
class EndRows:
    """Row 0 is x, row 1 is x'."""

    path: Path

    def __len__(self) -> int:
        return 2

    def take(self, start: int, stop: int) -> tuple[Tensor, Tensor]:
        return self.path.points(torch.tensor([1.0, 0.0]))[start:stop], torch.zeros(stop - start, dtype=torch.long)


@dataclass(frozen=True, eq=False)
class PathRows:
    """Rows r = t * len(alphas) + k: the point x' + a_k (x - x') for target t."""

    path: Path
    alphas: tuple[float, ...]
    targets: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.targets) * len(self.alphas)

    def take(self, start: int, stop: int) -> tuple[Tensor, Tensor]:
        rows = torch.arange(start, stop)
        alphas = torch.tensor(self.alphas)[rows % len(self.alphas)]
        return self.path.points(alphas), torch.tensor(self.targets)[rows // len(self.alphas)]


def _add_weighted(sums: Tensor, gradient: Tensor, rows: Tensor, weights: Tensor) -> None:
    """sums[t] += w_k * g_k for each row r = t * steps + k."""
    steps = len(weights)
    sums.index_add_(0, rows // steps, gradient * weights[rows % steps][:, None, None, None])


async def path_sums(ctx, path: Path, rule: tuple[list[float], list[float]], targets: list[int]) -> Tensor:
    """sum_k w_k dF_t(x' + a_k (x - x'))/dx per target, ROWS_PER_WINDOW gradients at a time."""
    alphas, weights = rule
    rows = PathRows(path, tuple(alphas), tuple(targets))
    sums = torch.zeros(len(targets), *path.image.shape)
    for start in range(0, len(rows), ROWS_PER_WINDOW):
        stop = min(start + ROWS_PER_WINDOW, len(rows))
        gradient = (await ctx.run(PATH_GRADIENT, RowWindow(rows, start, stop)))["gradient"]
        await asyncio.to_thread(_add_weighted, sums, gradient, torch.arange(start, stop),
                                torch.tensor(weights, dtype=sums.dtype))
    return sums


def _refine(sums: Tensor, todo: list[int], scale: float, extra: Tensor) -> None:
    sums[todo] = scale * sums[todo] + extra


def _complete(sums: Tensor, path: Path, delta: Tensor) -> tuple[Tensor, Tensor]:
    """Eq. 1's attribution and the completeness gap of each target."""
    attribution = sums * (path.image - path.baseline)
    missing = (attribution.flatten(1).sum(dim=1, dtype=torch.float64) - delta.double()).abs()
    # relative to F(x) - F(x'); where that is 0 the relative gap is undefined: the absolute one
    gaps = missing / torch.where(delta != 0, delta.double().abs(), 1.0)
    return attribution, gaps


@dataclass
class Integrated:
    """One image's integrated gradients: per target the attribution, gap and points used."""

    targets: list[int]
    logits: Tensor  # [K] of the image
    attribution: Tensor  # [T, C, H, W]
    gaps: list[float]
    steps: list[int]


def check_steps(method_name: str, steps: int, quadrature: str, limit: int) -> None:
    if steps > limit:
        raise InvalidArgument(f"parameter 'steps' of method {method_name!r} must be at most "
                              f"{limit}, got {steps}")
    if steps < minimum_steps(quadrature):
        raise InvalidArgument(f"parameter 'steps' of method {method_name!r} must be at least "
                              f"{minimum_steps(quadrature)} for {quadrature!r}, got {steps}")


async def integrate(ctx, image: Tensor, targets: list[int], spec: Baseline, quadrature: str,
                    steps: int, max_gap: float) -> Integrated:
    path = Path(image, spec)
    ends = (await ctx.run(Kernel.of(logits_kernel), EndRows(path)))["logits"]
    resolved = [int(ends[0].argmax()) if t == PREDICTED else t for t in targets]
    delta = ends[0, resolved] - ends[1, resolved]
    rule = nodes(quadrature, steps)
    sums = await path_sums(ctx, path, rule, resolved)
    used = [steps] * len(resolved)
    limit = ctx.limits.max_integrated_gradients_steps
    while True:
        attribution, gaps = await asyncio.to_thread(_complete, sums, path, delta)
        todo = [i for i, gap in enumerate(gaps.tolist()) if gap > max_gap] if max_gap > 0 else []
        finer_steps = refined_steps(quadrature, steps)
        if not todo or finer_steps > limit:
            return Integrated(resolved, ends[0], attribution, gaps.tolist(), used)
        finer = nodes(quadrature, finer_steps)
        scale, fresh = reuse(rule, finer)
        extra = await path_sums(ctx, path, ([finer[0][k] for k in fresh], [finer[1][k] for k in fresh]),
                                [resolved[i] for i in todo])
        await asyncio.to_thread(_refine, sums, todo, scale, extra)
        for i in todo:
            used[i] = finer_steps
        rule, steps = finer, finer_steps
