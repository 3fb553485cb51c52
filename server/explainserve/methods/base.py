"""What every method shares: parameters, kernels, results and the heatmap conventions.

A method is two parts. Its kernel is the device work: `kernel(model, inputs[N,C,H,W],
targets[N], **params) -> dict of tensors [N, ...]`, computing each row exactly as if it were
alone, so rows from different requests can share one pass. Its orchestration is a coroutine
that turns one image and its targets into rows, awaits `ctx.run(kernel, rows)` (the batcher
decides with whom those rows share a pass) and reduces the outputs to one Attribution per
target. Neither part sees a proto, a queue or a numpy array.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from explainserve.errors import InvalidArgument
from explainserve.models.facts import ModelFacts

# Target -1 in a row means "the class the model predicts for this row", resolved in the kernel
# from the logits it computes anyway, so the default request costs no extra forward pass.
PREDICTED = -1


@dataclass(frozen=True)
class Param:
    """One method parameter: its type, default and valid range."""

    name: str
    kind: type  # int, float, bool or str
    default: Any
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] | None = None
    help: str = ""

    def parse(self, method: str, value: Any) -> Any:
        where = f"parameter {self.name!r} of method {method!r}"
        if self.kind is bool:
            if not isinstance(value, bool):
                raise InvalidArgument(f"{where} must be true or false, got {value!r}")
            return value
        if self.kind is str:
            if not isinstance(value, str) or (self.choices and value not in self.choices):
                raise InvalidArgument(f"{where} must be one of {list(self.choices or [])}, got {value!r}")
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise InvalidArgument(f"{where} must be a finite number, got {value!r}")
        if self.kind is int:
            if value != int(value):
                raise InvalidArgument(f"{where} must be an integer, got {value!r}")
            value = int(value)
        else:
            value = float(value)
        if self.minimum is not None and value < self.minimum:
            raise InvalidArgument(f"{where} must be at least {self.minimum}, got {value!r}")
        if self.maximum is not None and value > self.maximum:
            raise InvalidArgument(f"{where} must be at most {self.maximum}, got {value!r}")
        return value


def parse_params(method: str, specs: tuple[Param, ...], raw: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults overlaid with the request's values; an unknown name is INVALID_ARGUMENT."""
    by_name = {spec.name: spec for spec in specs}
    unknown = sorted(set(raw) - set(by_name))
    if unknown:
        raise InvalidArgument(
            f"unknown parameters {unknown} for method {method!r}; valid: {sorted(by_name) or 'none'}"
        )
    return {name: spec.parse(method, raw[name]) if name in raw else spec.default
            for name, spec in by_name.items()}


@dataclass(frozen=True)
class Kernel:
    """A batchable device computation with its bound parameters; `key` groups rows that can
    share a pass (same function, same parameters)."""

    function: Callable[..., dict[str, Tensor]]
    params: tuple[tuple[str, Hashable], ...] = ()

    @classmethod
    def of(cls, function: Callable[..., dict[str, Tensor]], **params: Hashable) -> Kernel:
        return cls(function, tuple(sorted(params.items())))

    @property
    def key(self) -> Hashable:
        return (self.function.__module__, self.function.__qualname__, self.params)

    def __call__(self, model: ModelHandle, inputs: Tensor, targets: Tensor) -> dict[str, Tensor]:
        return self.function(model, inputs, targets, **dict(self.params))


class ModelHandle(Protocol):
    """What a kernel sees of a model replica."""

    module: nn.Module
    device: torch.device

    def layer(self, name: str) -> nn.Module: ...


class Rows(Protocol):
    """Rows a method submits: sliced lazily, so a 10,000-row occlusion never exists whole."""

    def __len__(self) -> int: ...

    def take(self, start: int, stop: int) -> tuple[Tensor, Tensor]: ...


@dataclass(frozen=True)
class TensorRows:
    """Rows that already exist as one tensor of inputs and one of targets."""

    inputs: Tensor
    targets: Tensor

    def __len__(self) -> int:
        return self.inputs.shape[0]

    def take(self, start: int, stop: int) -> tuple[Tensor, Tensor]:
        return self.inputs[start:stop], self.targets[start:stop]

    @classmethod
    def repeat(cls, image: Tensor, targets: list[int]) -> TensorRows:
        """The same image once per target."""
        return cls(image.unsqueeze(0).expand(len(targets), *image.shape),
                   torch.tensor(targets, dtype=torch.long))


@dataclass(frozen=True, eq=False)
class RowWindow:
    """Rows [start, stop) of other rows: a many-row method submits its rows window by window,
    so only one window's inputs and outputs exist at a time."""

    rows: Rows
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start

    def take(self, start: int, stop: int) -> tuple[Tensor, Tensor]:
        return self.rows.take(self.start + start, self.start + stop)


@dataclass
class Attribution:
    """One target's result, on the CPU."""

    target: int
    score: float
    probability: float
    attribution: Tensor | None = None
    heatmap: Tensor | None = None  # [H, W] in [0, 1]
    tensors: dict[str, Tensor] = field(default_factory=dict)
    grid: Tensor | None = None  # uint8 [H, W, 3] image grid (filters, activations)
    # figures that say how far to trust the map (completeness_gap, steps, deletion_auc, ...)
    quality: dict[str, float] = field(default_factory=dict)


class Context(Protocol):
    """What an orchestration coroutine gets: the model's facts, limits and the batcher."""

    model: ModelFacts
    limits: Any

    def run(self, kernel: Kernel, rows: Rows) -> Awaitable[dict[str, Tensor]]: ...


def score_targets(logits: Tensor, targets: Tensor) -> dict[str, Tensor]:
    """Resolve PREDICTED targets and return each row's target, score (logit) and probability."""
    resolved = torch.where(targets < 0, logits.argmax(dim=1), targets)
    scores = logits.gather(1, resolved[:, None]).squeeze(1)
    probabilities = logits.softmax(dim=1).gather(1, resolved[:, None]).squeeze(1)
    return {"target": resolved, "score": scores, "probability": probabilities}


def normalize_maps(maps: Tensor) -> Tensor:
    """Scale each map of a batch [N, H, W] to [0, 1] by its maximum, so 0 keeps meaning "no
    evidence" (min-max scaling would invent evidence where the map is merely smallest).
    Negative values (evidence against) are clipped; an all-zero map stays zero."""
    positive = maps.clamp(min=0)
    peak = positive.flatten(1).max(dim=1).values[:, None, None]
    return torch.where(peak > 0, positive / peak.clamp_min(torch.finfo(maps.dtype).tiny), 0.0)


def gradient_heatmap(attribution: Tensor) -> Tensor:
    """Simonyan et al. 2013, sec. 3.1: the map is max over channels of |attribution|."""
    return normalize_maps(attribution.abs().amax(dim=1))


def upsample(maps: Tensor, size: tuple[int, int], mode: str = "bilinear") -> Tensor:
    """Resize [N, h, w] maps to the input size."""
    extra = {"align_corners": False} if mode == "bilinear" else {}
    return F.interpolate(maps[:, None], size=size, mode=mode, **extra)[:, 0]


def to_attributions(outputs: dict[str, Tensor], *, extra: tuple[str, ...] = ()) -> list[Attribution]:
    """Split stacked kernel outputs back into one Attribution per row."""
    return [
        Attribution(
            target=int(outputs["target"][i]), score=float(outputs["score"][i]),
            probability=float(outputs["probability"][i]),
            attribution=outputs["attribution"][i] if "attribution" in outputs else None,
            heatmap=outputs["heatmap"][i] if "heatmap" in outputs else None,
            tensors={name: outputs[name][i] for name in extra},
        )
        for i in range(len(outputs["target"]))
    ]


async def run_single_pass(ctx: Context, kernel: Kernel, image: Tensor, targets: list[int],
                          extra: tuple[str, ...] = ()) -> list[Attribution]:
    """The orchestration of every one-pass method: one row per target of the same image."""
    outputs = await ctx.run(kernel, TensorRows.repeat(image, targets))
    return to_attributions(outputs, extra=extra)
