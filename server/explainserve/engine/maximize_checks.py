"""Validation of a Maximize request against its model and the server's limits; every
failure names the bad value (INVALID_ARGUMENT, OUT_OF_RANGE or NOT_FOUND)."""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from explainserve.engine.core import Engine
from explainserve.errors import InvalidArgument, OutOfRange
from explainserve.methods.base import Kernel, TensorRows
from explainserve.methods.maximize.layers import layer_kernel
from explainserve.methods.maximize.registry import (ObjectiveSpec, Unit, get_objective,
                                                    list_objectives)
from explainserve.models.layouts import NONE, LayerLayout
from explainserve.models.registry import LoadedModel
from explainserve.scheduling.batcher import run_job

if TYPE_CHECKING:
    from explainserve.engine.maximize import MaximizeQuery


def check_counts(engine: Engine, query: MaximizeQuery, spec: ObjectiveSpec,
                 restarts: int) -> int:
    """Steps (0: the objective's default), frames per image and optimised rows (images times
    restarts) against the limits."""
    limits = engine.limits
    steps = query.steps or spec.default_steps
    if steps > limits.max_maximize_steps:
        raise InvalidArgument(f"steps {steps} exceeds the limit of {limits.max_maximize_steps}")
    frames = math.ceil(steps / query.frame_every) if query.frame_every else 1
    if frames > limits.max_maximize_frames:
        raise InvalidArgument(
            f"frame_every {query.frame_every} gives {frames} frames per image for {steps} steps; "
            f"at most {limits.max_maximize_frames} (raise frame_every)")
    images = 1 if spec.one_image else len(query.units)
    if images * restarts > limits.max_maximize_images:
        raise InvalidArgument(f"{images} images x {restarts} restarts requested; at most "
                              f"{limits.max_maximize_images} optimised images")
    return steps


def check_size(engine: Engine, model: LoadedModel, size: int) -> tuple[int, int, int]:
    """The optimised image's [C, H, W]: the model's input, or size x size."""
    side = size or max(model.input_shape[1:])
    if side > engine.limits.max_maximize_size:
        raise InvalidArgument(f"image size {side} exceeds the limit of "
                              f"{engine.limits.max_maximize_size} pixels")
    if size and size < 8:
        raise InvalidArgument(f"parameter 'size' must be 0 or at least 8, got {size}")
    return (model.input_shape[0], size, size) if size else model.input_shape


def check_layer(model: LoadedModel, query: MaximizeQuery, spec: ObjectiveSpec) -> str:
    """The layer the objective reads (default: the model's default layer), "" for one that
    reads none; NOT_FOUND names the valid ones."""
    if not spec.needs_layer:
        return ""
    return model.check_layer(query.layer or model.default_layer).name


async def layer_shape(engine: Engine, model: LoadedModel, query: MaximizeQuery,
                      spec: ObjectiveSpec, layer: str,
                      image_shape: tuple[int, int, int]) -> tuple[int, ...]:
    """The layer's output shape for one image; at a size other than the model's, one probe
    pass finds it (and whether the model runs at that size at all)."""
    if image_shape == model.input_shape:
        if not layer:
            return (model.config.num_classes,)
        layout = model.facts.layer_layouts[layer]
        if layout.kind in ("nhwc", "tokens"):
            return (layout.channels, layout.height, layout.width)  # read as channel maps
        return tuple(model.facts.layer_shapes[layer])
    if layer and model.facts.layer_layouts[layer].kind == "tokens":
        raise InvalidArgument(f"parameter 'size' must be 0 for layer {layer!r}: its patch tokens "
                              f"are laid out for the model's input size")
    if uses_reference(query, spec):
        with_reference = [name for name in list_objectives() if get_objective(name).needs_reference]
        raise InvalidArgument(f"parameter 'size' must be 0 for {' and '.join(with_reference)} "
                              "and for a start image: the reference image has the model's "
                              "input size")
    kernel = Kernel.of(layer_kernel, layer=layer)
    try:
        outputs = await run_job(engine.batcher, model.name, kernel,
                                TensorRows(torch.zeros(1, *image_shape),
                                           torch.zeros(1, dtype=torch.long)), query.deadline)
    except (RuntimeError, ValueError) as error:
        raise InvalidArgument(f"model {model.name!r} cannot run at size {image_shape[1]}: "
                              f"{str(error)[:200]}") from None
    shape = tuple(outputs["code"].shape[1:])
    if layer and model.facts.layer_layouts[layer].kind == "nhwc" and len(shape) == 3:
        return (shape[2], shape[0], shape[1])
    return shape


def layer_layout(model: LoadedModel, layer: str, shape: tuple[int, ...]) -> LayerLayout:
    """The plan's layout: the layer's own, on the channel-map grid of this image size."""
    layout = model.facts.layer_layouts[layer] if layer else NONE
    if layout.kind not in ("nhwc", "tokens") or len(shape) != 3:
        return NONE
    return dataclasses.replace(layout, channels=shape[0], height=shape[1], width=shape[2])


def check_units(model: LoadedModel, query: MaximizeQuery, spec: ObjectiveSpec,
                shape: tuple[int, ...]) -> list[int]:
    """One image per class or channel index (one unit 0 for an objective without units),
    each in range."""
    if spec.one_image:
        return [0]
    kind = spec.unit.index_kind
    if not query.units:
        raise InvalidArgument(f"objective {spec.name!r} needs at least one {kind} index "
                              f"(field {spec.unit.request_field})")
    of_classes = spec.unit is Unit.CLASS
    count = model.config.num_classes if of_classes else shape[0]
    where = f"model {model.name!r}" if of_classes else "the layer"
    for unit in query.units:
        if not 0 <= unit < count:
            raise OutOfRange(f"{kind} {unit} is out of range [0, {count}) for {where}")
    return list(query.units)


def check_neuron(query: MaximizeQuery, spec: ObjectiveSpec, shape: tuple[int, ...]
                 ) -> tuple[int, int]:
    """A spatial objective's layer has a [K, h, w] output; a neuron's (y, x) lies in it (-1
    means the centre). (0, 0) for the others, whose rows ignore the position."""
    if spec.spatial_layer and len(shape) != 3:
        raise InvalidArgument(f"objective {spec.name!r} needs a layer with a [K, h, w] output; "
                              f"this layer's output shape is {list(shape)}")
    if spec.unit is not Unit.NEURON:
        return (0, 0)
    position = []
    for name, value, extent in (("neuron_y", query.neuron[0], shape[1]),
                                ("neuron_x", query.neuron[1], shape[2])):
        value = extent // 2 if value == -1 else value
        if not 0 <= value < extent:
            raise OutOfRange(f"{name} {value} is out of range [0, {extent}) for the layer")
        position.append(value)
    return position[0], position[1]


def uses_reference(query: MaximizeQuery, spec: ObjectiveSpec) -> bool:
    """Whether the request needs its reference image: for the objective's code, or to start."""
    return spec.needs_reference or spec.start(query.initialization) == "image"


async def reference_image(engine: Engine, model: LoadedModel, query: MaximizeQuery,
                          spec: ObjectiveSpec) -> Tensor | None:
    """The preprocessed reference (the objective's target code, or the start image)."""
    if uses_reference(query, spec) and query.reference is None:
        raise InvalidArgument(f"field reference is required for objective {spec.name!r} "
                              f"and initialization {query.initialization or 'default'!r}")
    return await engine.prepare(model, query.reference) if query.reference is not None else None
