"""The Maximize loop: validate a request, then submit its optimisation to the batcher one pass
(a few steps) at a time and yield frames as they come.

Each pass is an ordinary batcher job whose kernel key is the AscentPlan, so concurrent
requests with the same objective, layer and settings are stepped in one batch (each row its
own unit), Explain traffic interleaves between passes, and a cancelled call stops at the next
pass: its pending job is dropped before it reaches a device (batcher.run_job).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from torch import Tensor

from explainserve.engine.core import Engine
from explainserve.engine.maximize_checks import layer_layout
from explainserve.engine.maximize_checks import (check_counts, check_layer, check_neuron,
                                                 check_size, check_units, layer_shape,
                                                 reference_image)
from explainserve.methods.base import Kernel, TensorRows, parse_params
from explainserve.methods.maximize import parameterization as param_space
from explainserve.methods.maximize.plan import (COUNT, NEURON_X, NEURON_Y, REPORT, SEED, STEP,
                                                UNIT, AscentPlan, pack)
from explainserve.methods.maximize.priors import mix_seed
from explainserve.methods.maximize.registry import ObjectiveSpec, get_objective
from explainserve.methods.maximize.step import ascent_kernel
from explainserve.models.registry import LoadedModel
from explainserve.scheduling.batcher import run_job

logger = logging.getLogger(__name__)

_INIT_STREAM = 1 << 40  # separates the start-noise stream from the per-step streams
_PLAN_FIELDS = {f.name for f in fields(AscentPlan)}


@dataclass(frozen=True)
class MaximizeQuery:
    """A MaximizeRequest decoded into plain values (the api layer builds it)."""

    model: str
    objective: str  # a registered objective (methods/maximize/registry.py)
    units: tuple[int, ...] = ()  # class or channel indices, one image each (spec.unit)
    layer: str = ""
    neuron: tuple[int, int] = (-1, -1)  # (y, x); -1 means the centre
    reference: bytes | Tensor | None = None
    initialization: str = ""  # "" (the objective's default_start) | "zeros" | "noise" | "image"
    steps: int = 0
    frame_every: int = 0
    seed: int = 0
    params: dict[str, Any] = field(default_factory=dict)
    deadline: float | None = None


@dataclass(frozen=True)
class Frame:
    image_index: int
    unit: int
    step: int
    final: bool
    objective: float
    predicted: int
    probability: float
    image: Tensor  # [C, H, W] in the model's normalised space


@dataclass(frozen=True)
class _Run:
    model: LoadedModel
    plan: AscentPlan
    units: list[int]
    restarts: int  # rows per image; each frame shows the image's best row
    steps: int
    steps_per_pass: int
    targets: Tensor  # [N, 7] with STEP, COUNT and REPORT filled in per pass
    state: Tensor


def unit_field(objective: str) -> str | None:
    """The request field that carries a known objective's units ("classes" or "channels"),
    None when it takes neither: the api layer checks the request's fields against it."""
    return get_objective(objective).unit.request_field


async def maximize(engine: Engine, query: MaximizeQuery) -> AsyncIterator[Frame]:
    """Validate (errors surface before the first frame), then optimise and yield frames."""
    run = await _prepare(engine, query)
    kernel = Kernel.of(ascent_kernel, plan=run.plan)
    state, step = run.state, 0
    while step < run.steps:
        due = _next_frame(step, query.frame_every, run.steps)
        count = min(run.steps_per_pass, due - step)
        targets = run.targets.clone()
        targets[:, STEP], targets[:, COUNT] = step, count
        targets[:, REPORT] = int(step + count == due)
        outputs = await run_job(engine.batcher, run.model.name, kernel,
                                TensorRows(state, targets), query.deadline)
        state, step = outputs["state"], step + count
        if step == due:
            for index, unit in enumerate(run.units):
                row = _best_row(outputs["objective"], index, run.restarts)
                yield Frame(index, unit, step, step == run.steps,
                            float(outputs["objective"][row]), int(outputs["predicted"][row]),
                            float(outputs["probability"][row]), outputs["image"][row])


def _best_row(objective: Tensor, image: int, restarts: int) -> int:
    """The row of `image` whose objective is highest (random restarts: Mahendran & Vedaldi's
    and the unit objectives' losses have local optima that another start avoids)."""
    first = image * restarts
    return first + int(objective[first:first + restarts].argmax())


def _next_frame(step: int, frame_every: int, steps: int) -> int:
    return min(steps, (step // frame_every + 1) * frame_every) if frame_every else steps


async def _prepare(engine: Engine, query: MaximizeQuery) -> _Run:
    model = engine.registry.get(query.model)
    spec = get_objective(query.objective)
    params = parse_params(f"maximize/{spec.name}", spec.params, query.params)
    restarts = params["restarts"]
    steps = check_counts(engine, query, spec, restarts)
    image_shape = check_size(engine, model, params["size"])
    layer = check_layer(model, query, spec)
    shape = await layer_shape(engine, model, query, spec, layer, image_shape)
    units = check_units(model, query, spec, shape)
    neuron = check_neuron(query, spec, shape)
    reference = await reference_image(engine, model, query, spec)
    code = await _target_code(engine, model, query, spec, layer, reference)
    rows = [unit for unit in units for _ in range(restarts)]  # image i: rows i*R .. i*R+R-1
    code = code.expand(len(rows), *code.shape[1:])
    plan = AscentPlan(objective=spec.name, layer=layer, image_shape=image_shape,
                      mean=tuple(model.config.mean), std=tuple(model.config.std),
                      code_shape=tuple(code.shape[1:]), layout=layer_layout(model, layer, shape),
                      **{k: v for k, v in params.items() if k in _PLAN_FIELDS})
    start = _start(plan, spec.start(query.initialization), query.seed, reference, len(rows))
    logger.debug("maximize %s on %s: %d images x %d restarts, %d steps", spec.name, model.name,
                 len(units), restarts, steps)
    return _Run(model, plan, units, restarts, steps, params["steps_per_pass"],
                _targets(rows, neuron, query.seed),
                pack(start, torch.zeros_like(start), torch.zeros_like(start), code))


async def _target_code(engine: Engine, model: LoadedModel, query: MaximizeQuery,
                       spec: ObjectiveSpec, layer: str, reference: Tensor | None) -> Tensor:
    """The reference's code the objective compares to (inversion's Phi0), computed on the
    device like any other pass; empty for an objective without one."""
    if spec.reference_code is None:
        return torch.zeros(1, 0)
    kernel = Kernel.of(spec.reference_code, layer=layer)
    outputs = await run_job(engine.batcher, model.name, kernel,
                            TensorRows(reference[None], torch.zeros(1, dtype=torch.long)),
                            query.deadline)
    return outputs["code"]


def _targets(units: list[int], neuron: tuple[int, int], seed: int) -> Tensor:
    """Each row's integers (plan.py's columns); each row gets its own random stream."""
    targets = torch.zeros(len(units), 7, dtype=torch.long)
    targets[:, UNIT] = torch.tensor(units)
    targets[:, NEURON_Y], targets[:, NEURON_X] = neuron
    targets[:, SEED] = torch.tensor([mix_seed(seed, index) for index in range(len(units))])
    return targets


def _start(plan: AscentPlan, kind: str, seed: int, reference: Tensor | None,
           count: int) -> Tensor:
    """Start parameters per row: zeros (the mean image), seeded noise, or the reference image."""
    shape = plan.param_shape
    if kind == "image":
        start = param_space.from_image(plan.parameterization, reference[None], plan.mean, plan.std)
        return start.expand(count, *shape).contiguous()
    if kind == "noise":
        return torch.stack([
            param_space.noise(plan.parameterization, shape,
                              torch.Generator().manual_seed(mix_seed(seed, index, _INIT_STREAM)))
            for index in range(count)])
    return torch.zeros(count, *shape)
