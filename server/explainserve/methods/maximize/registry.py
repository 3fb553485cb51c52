"""Maximize objectives by name: a dict, a decorator, a clear error and a list function (the
shape of methods/explain/registry.py). A spec says everything the engine and the step kernel need to
know about an objective, so neither ever branches on its name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from torch import Tensor

from explainserve.errors import not_found
from explainserve.methods.base import ModelHandle, Param
from explainserve.methods.maximize.plan import AscentPlan

STARTS = ("zeros", "noise", "image")  # the start parameters a request may ask for


class Unit(Enum):
    """What a request names once per optimised image (one row's UNIT column)."""

    CLASS = "class"  # a class index, field `classes`, in range of the model's classes
    CHANNEL = "channel"  # a channel index of the layer, field `channels`
    NEURON = "neuron"  # a channel index at one (y, x) of a spatial layer, field `channels`
    NONE = "none"  # nothing: the request makes one image

    @property
    def request_field(self) -> str | None:
        """The request field that carries the indices (None: the request takes neither)."""
        fields = {Unit.CLASS: "classes", Unit.CHANNEL: "channels", Unit.NEURON: "channels"}
        return fields.get(self)

    @property
    def index_kind(self) -> str:
        """What one index counts, as messages name it: a neuron is indexed by its channel."""
        return "class" if self is Unit.CLASS else "channel"


# objective(model, images, targets, code, plan, full) -> (value per row [N], logits or None).
# full=False may stop the forward pass at the objective's layer; full=True must return logits.
ObjectiveFn = Callable[[ModelHandle, Tensor, Tensor, Tensor, AscentPlan, bool],
                       tuple[Tensor, Tensor | None]]
# code kernel(model, inputs, targets, *, layer) -> {"code": [N, ...], ...}: what each row's
# objective compares to, computed from the request's reference image at the layer.
CodeKernel = Callable[..., dict[str, Tensor]]


@dataclass(frozen=True)
class ObjectiveSpec:
    name: str
    function: ObjectiveFn
    params: tuple[Param, ...]
    unit: Unit
    needs_layer: bool = True  # reads the request's layer (default: the model's default layer)
    spatial_layer: bool = False  # that layer must have a [K, h, w] output
    reference_code: CodeKernel | None = None  # the target code, from the reference image
    default_start: str = "noise"  # start parameters when the request leaves them unspecified
    default_steps: int = 256  # steps when the request asks for 0
    description: str = ""

    @property
    def needs_reference(self) -> bool:
        """The objective compares to a code of the reference image, so the request must send
        one (a start image needs one too, whatever the objective)."""
        return self.reference_code is not None

    @property
    def one_image(self) -> bool:
        """True: the request makes one image; False: one image per unit it names. A row holds
        one unit, so only an objective without units can make a single image."""
        return self.unit is Unit.NONE

    def start(self, requested: str) -> str:
        """The start a request gets: its own choice, or this objective's default."""
        return requested or self.default_start


_OBJECTIVES: dict[str, ObjectiveSpec] = {}


def register_objective(
    name: str, params: tuple[Param, ...], *, unit: Unit, needs_layer: bool = True,
    spatial_layer: bool = False, reference_code: CodeKernel | None = None,
    default_start: str = "noise", default_steps: int = 256,
) -> Callable[[ObjectiveFn], ObjectiveFn]:
    """Register an objective function under `name` with what a request for it must carry."""
    def decorator(function: ObjectiveFn) -> ObjectiveFn:
        if name in _OBJECTIVES:
            raise ValueError(f"objective {name!r} is registered twice")
        description = (function.__doc__ or "").strip().splitlines()[0] if function.__doc__ else ""
        spec = ObjectiveSpec(name, function, params, unit, needs_layer, spatial_layer,
                             reference_code, default_start, default_steps, description)
        _check_consistent(spec)
        _OBJECTIVES[name] = spec
        return function
    return decorator


def _check_consistent(spec: ObjectiveSpec) -> None:
    """Refuse, at import, a spec the engine could not serve."""
    where = f"objective {spec.name!r}"
    if spec.default_start not in STARTS:
        raise ValueError(f"{where}: default_start {spec.default_start!r} is not one of {STARTS}")
    layered = spec.unit in (Unit.CHANNEL, Unit.NEURON) or spec.spatial_layer or spec.needs_reference
    if layered and not spec.needs_layer:
        raise ValueError(f"{where}: channels, positions and codes belong to a layer; set "
                         "needs_layer")
    if spec.unit is Unit.NEURON and not spec.spatial_layer:
        raise ValueError(f"{where}: a neuron's (y, x) lies in a [K, h, w] output; set "
                         "spatial_layer")
    if spec.default_steps < 1:
        raise ValueError(f"{where}: default_steps must be positive, got {spec.default_steps}")


def get_objective(name: str) -> ObjectiveSpec:
    _load_builtin_objectives()
    try:
        return _OBJECTIVES[name]
    except KeyError:
        raise not_found("objective", name, list_objectives()) from None


def list_objectives() -> list[str]:
    _load_builtin_objectives()
    return sorted(_OBJECTIVES)


def _load_builtin_objectives() -> None:
    """Import the objective modules once; each registers itself on import."""
    from explainserve.methods.maximize import builtin  # noqa: F401
