"""Gradient ascent on the input: what a row holds, the plan that is its kernel key and the
request parameters (the objectives register themselves in registry.py; the step itself is
step.py).

A row is one image being optimised. Its whole optimiser state travels inside the row, as one
flat float vector [param | Adam m | Adam v | code], so a step is a pure function of the row:
rows of different requests share a pass, a request holds no device between steps, and a
cancelled request leaves nothing behind on the worker. (Keeping the moments per request on
the device would save the copies, but would pin memory to requests the batcher cannot see.)
The row's targets are integers [UNIT, NEURON_Y, NEURON_X, SEED, STEP, COUNT, REPORT].
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from explainserve.methods.maximize import parameterization as param_space
from explainserve.methods.base import Param
from explainserve.models.layouts import NONE, LayerLayout

UNIT, NEURON_Y, NEURON_X, SEED, STEP, COUNT, REPORT = range(7)


@dataclass(frozen=True)
class AscentPlan:
    """Everything a step needs besides its rows. Equal plans are one kernel key, so concurrent
    requests with the same objective, layer and settings are optimised as one batch."""

    objective: str
    layer: str
    image_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    code_shape: tuple[int, ...] = (0,)  # the target code per row (objectives with a reference)
    parameterization: str = "pixels"
    optimizer: str = "adam"
    learning_rate: float = 0.05
    l2: float = 0.0
    tv: float = 0.0
    blur_every: int = 0
    blur_sigma: float = 0.5
    jitter: int = 0
    scale: float = 0.0
    rotate: float = 0.0
    noise: float = 0.0
    clip: bool = True
    redirect_relu: bool = True
    redirect_steps: int = 0
    batch_invariant: bool = False
    # how the layer's output reads as [K, h, w] channel maps for the channel and neuron
    # objectives (models/layouts.py); none: the output is indexed as it is
    layout: LayerLayout = NONE

    @property
    def param_shape(self) -> tuple[int, ...]:
        return param_space.param_shape(self.parameterization, self.image_shape)

    def sizes(self) -> list[int]:
        param = int(torch.Size(self.param_shape).numel())
        return [param, param, param, int(torch.Size(self.code_shape).numel())]


def ascent_params(**defaults) -> tuple[Param, ...]:
    """The optimiser and prior parameters of a request, with per-objective defaults."""
    specs = (
        Param("learning_rate", float, 0.05, 1e-6, 1e3, help="step size"),
        Param("optimizer", str, "adam", choices=("adam", "sgd")),
        Param("parameterization", str, "pixels", choices=param_space.PARAMETERIZATIONS),
        Param("l2", float, 0.0, 0.0, 1e6, help="lambda of ||I||^2 (Simonyan eq. 1)"),
        Param("tv", float, 0.0, 0.0, 1e6, help="weight of the total variation prior"),
        Param("blur_every", int, 0, 0, 10_000, help="Gaussian blur every k steps; 0: never"),
        Param("blur_sigma", float, 0.5, 0.05, 16.0),
        Param("jitter", int, 0, 0, 256, help="random shift in pixels at each step"),
        Param("scale", float, 0.0, 0.0, 0.9, help="random zoom in [1-s, 1+s] at each step"),
        Param("rotate", float, 0.0, 0.0, 180.0, help="random rotation in degrees"),
        Param("noise", float, 0.0, 0.0, 10.0, help="std of Gaussian noise the model sees"),
        Param("clip", bool, True, help="clip pixels to the normalisation's valid range"),
        Param("redirect_relu", bool, True,
              help="let the gradient through ReLUs that block it entirely (lucid's redirected "
                   "ReLU), so a flat start where every unit is dead can move"),
        Param("redirect_steps", int, 0, 0, 1 << 16,
              help="for this many first steps, redirect the gradient at every ReLU unit that "
                   "blocks it, not only in a ReLU that blocks it entirely"),
        Param("restarts", int, 1, 1, 16,
              help="optimise this many seeded starts per image and show the best (highest "
                   "objective) in each frame"),
        Param("batch_invariant", bool, False,
              help="compute each image alone inside its batch: bit-identical frames whoever "
                   "shares the batch, at the cost of batched throughput"),
        Param("size", int, 0, 0, 1 << 16, help="image height and width; 0: the model's"),
        Param("steps_per_pass", int, 1, 1, 64, help="steps per batched device pass"),
    )
    unknown = sorted(set(defaults) - {spec.name for spec in specs})
    if unknown:
        raise ValueError(f"defaults for unknown parameters {unknown}")
    return tuple(replace(spec, default=defaults.get(spec.name, spec.default)) for spec in specs)


def unpack(plan: AscentPlan, rows: Tensor) -> list[Tensor]:
    """[N, D] rows -> param, Adam m, Adam v [N, *param_shape] and code [N, *code_shape]."""
    n = rows.shape[0]
    param, m, v, code = rows.split(plan.sizes(), dim=1)
    shaped = [t.reshape(n, *plan.param_shape) for t in (param, m, v)]
    return shaped + [code.reshape(n, *plan.code_shape)]


def pack(param: Tensor, m: Tensor, v: Tensor, code: Tensor) -> Tensor:
    """The inverse of unpack: one flat row per image."""
    return torch.cat([t.flatten(1) for t in (param, m, v, code)], dim=1)
