"""Maximize on the wire: MaximizeRequest -> MaximizeQuery, Frame -> MaximizeResponse(s)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

from explainserve_client import codec as wire
from explainserve_client import wire_names
from explainserve_client._proto import explainer_pb2 as pb
from google.protobuf import json_format

from explainserve.api.inputs import deadline_of, decode_input
from explainserve.engine import rendering
from explainserve.engine.core import Engine
from explainserve.engine.maximize import Frame, MaximizeQuery, maximize, unit_field
from explainserve.errors import InvalidArgument

OBJECTIVES = wire_names.names_by_value(wire_names.OBJECTIVES)
# UNSPECIFIED reads as "": the objective's own default start.
INITIALIZATIONS = wire_names.names_by_value(wire_names.INITIALIZATIONS, unspecified="")
FRAME_FORMATS = wire_names.names_by_value(wire_names.FRAME_FORMATS)


def objective_name(request: pb.MaximizeRequest) -> str:
    return OBJECTIVES.get(request.objective, "")


def decode_maximize(request: pb.MaximizeRequest, time_remaining: float | None) -> MaximizeQuery:
    if not request.model:
        raise InvalidArgument("model is empty")
    objective = objective_name(request)
    if not objective:
        known = request.objective in pb.Objective.values()
        name = pb.Objective.Name(request.objective) if known else str(request.objective)
        raise InvalidArgument(f"objective {name} is not one of "
                              f"{[pb.Objective.Name(o) for o in OBJECTIVES]}")
    if request.initialization not in INITIALIZATIONS:
        raise InvalidArgument(f"initialization {request.initialization} is not a known value")
    units = _units(request, objective)
    unknown = [f for f in request.frame_formats if f not in FRAME_FORMATS]
    if unknown:
        raise InvalidArgument(f"frame_formats {unknown} are not PNG or TENSOR")
    return MaximizeQuery(
        model=request.model, objective=objective, units=units, layer=request.layer,
        neuron=(request.neuron_y, request.neuron_x),
        reference=(decode_input(request.reference, "reference")
                   if request.HasField("reference") else None),
        initialization=INITIALIZATIONS[request.initialization], steps=request.steps,
        frame_every=request.frame_every, seed=request.seed,
        params=json_format.MessageToDict(request.parameters), deadline=deadline_of(time_remaining),
    )


def _units(request: pb.MaximizeRequest, objective: str) -> tuple[int, ...]:
    """The indices in the request field the objective's registered unit names (classes or
    channels); the other field must be empty."""
    wanted = unit_field(objective)
    for field in ("classes", "channels"):
        if field != wanted and getattr(request, field):
            raise InvalidArgument(f"objective {objective!r} takes "
                                  f"{wanted or 'neither classes nor channels'}, not {field}")
    return tuple(getattr(request, wanted)) if wanted else ()


def encode_frame(frame: Frame, png: bytes | None, want_tensor: bool,
                 chunk_bytes: int) -> Iterator[pb.MaximizeResponse]:
    """One response per frame; a tensor larger than chunk_bytes continues in further
    responses with the same image_index and step."""
    head = pb.MaximizeResponse(
        image_index=frame.image_index, unit=frame.unit, step=frame.step,
        final_frame=frame.final, objective_value=frame.objective,
        predicted_class=frame.predicted, probability=frame.probability)
    if png is not None:
        head.image_png = png
    if not want_tensor:
        yield head
        return
    tensor = wire.encode(frame.image.numpy(), "image")
    for index, piece in enumerate(wire.split(tensor, chunk_bytes)):
        message = head if index == 0 else pb.MaximizeResponse(
            image_index=frame.image_index, unit=frame.unit, step=frame.step,
            final_frame=frame.final)
        message.image.CopyFrom(piece)
        yield message


async def respond(engine: Engine, request: pb.MaximizeRequest,
                  time_remaining: float | None) -> AsyncIterator[pb.MaximizeResponse]:
    """Decode, run the optimisation through the batcher, encode each frame as it comes."""
    query = decode_maximize(request, time_remaining)
    model = engine.registry.get(query.model)
    formats = {FRAME_FORMATS[f] for f in request.frame_formats} or {wire_names.DEFAULT_FRAME_FORMAT}
    async for frame in maximize(engine, query):
        png = (await asyncio.to_thread(rendering.frame_png, frame.image, model)
               if "png" in formats else None)
        for response in encode_frame(frame, png, "tensor" in formats, engine.limits.chunk_bytes):
            yield response
