"""The Embed stream on the wire: the first message must be a config; items and finish follow.
Decoding validates the wire values; encoding splits big vectors and summaries into chunks."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import grpc
from explainserve_client import codec as wire
from explainserve_client import render, wire_names
from explainserve_client._proto import explainer_pb2 as pb

from explainserve.api.inputs import deadline_of, decode_input
from explainserve.engine.embed import MAX_NEIGHBOURS, MAX_TOP_K, MAX_UNITS, EmbedSession
from explainserve.engine.embed_top import Hit
from explainserve.engine.embed_types import EmbedInput, EmbedSpec, Finish, SetSummary, VectorResult
from explainserve.errors import InvalidArgument, echo

_POOLING = wire_names.names_by_value(wire_names.POOLINGS, unspecified=wire_names.POOLING_DEFAULT)
_PROJECTION = wire_names.names_by_value(wire_names.PROJECTIONS,
                                        unspecified=wire_names.PROJECTION_DEFAULT)
_METRIC = wire_names.names_by_value(wire_names.METRICS, unspecified=wire_names.METRIC_DEFAULT)
INDICES_PER_MESSAGE = 200_000  # a varint is at most 10 bytes: stays under the chunk size


def _choice(table: dict[int, str], value: int, field: str) -> str:
    if value not in table:
        raise InvalidArgument(f"config.{field} has unknown value {value}")
    return table[value]


def decode_config(config: pb.EmbedConfig) -> EmbedSpec:
    if not config.model:
        raise InvalidArgument("config.model is empty")
    dims = config.projection_dims or 2
    if dims not in (2, 3):
        raise InvalidArgument(f"config.projection_dims must be 2 or 3, got {dims}")
    if config.neighbours > MAX_NEIGHBOURS:
        raise InvalidArgument(f"config.neighbours is {config.neighbours}; at most {MAX_NEIGHBOURS}")
    units = tuple(dict.fromkeys((unit.layer, unit.channel) for unit in config.top_units))
    if len(units) > MAX_UNITS:
        raise InvalidArgument(f"config.top_units names {len(units)} units; at most {MAX_UNITS}")
    if any(not layer for layer, _ in units):
        raise InvalidArgument("config.top_units has a unit with an empty layer")
    top_k = config.top_k or 9
    if top_k > MAX_TOP_K:
        raise InvalidArgument(f"config.top_k is {top_k}; at most {MAX_TOP_K}")
    return EmbedSpec(
        model=config.model, layer=config.layer,
        pooling=_choice(_POOLING, config.pooling, "pooling"),
        projection=_choice(_PROJECTION, config.projection, "projection"), dims=dims,
        neighbours=config.neighbours, metric=_choice(_METRIC, config.metric, "metric"),
        units=units, top_k=top_k, return_vectors=config.return_vectors,
    )


async def decode_events(requests: AsyncIterator[pb.EmbedRequest]) -> AsyncIterator[EmbedInput | Finish]:
    """Everything after the config. A bad item becomes an EmbedInput with its error (the stream
    goes on); a malformed stream (a second config, an empty message) ends it."""
    position = 0
    async for request in requests:
        kind = request.WhichOneof("kind")
        if kind == "item":
            item = request.item
            try:
                yield EmbedInput(item.id, decode_input(item.input, f"item {position} input"))
            except InvalidArgument as error:
                yield EmbedInput(item.id, None, error)
            position += 1
        elif kind == "finish":
            yield Finish()
        elif kind == "config":
            raise InvalidArgument(f"a config arrived after {position} items; it may only be the "
                                  "first message of an Embed stream")
        else:
            raise InvalidArgument(f"Embed message after item {position} holds neither an item "
                                  "nor finish")


async def serve_embed(engine, requests: AsyncIterator[pb.EmbedRequest],
                      time_remaining: float | None) -> AsyncIterator[pb.EmbedResponse]:
    """The whole Embed call: config, then the session's results as they come."""
    iterator = aiter(requests)
    first = await anext(iterator, None)
    kind = first.WhichOneof("kind") if first is not None else "nothing"
    if kind != "config":
        raise InvalidArgument(f"the first message of an Embed stream must be a config, got {kind}")
    session = EmbedSession(engine, decode_config(first.config), deadline_of(time_remaining))
    await session.prepare()
    chunk_bytes = engine.limits.chunk_bytes
    # Closed as soon as this call ends (a cancelled call included), not when the garbage
    # collector gets to it: closing gives the stream's bytes back to the server's budget.
    async with contextlib.aclosing(session.run(decode_events(iterator))) as results:
        async for result in results:
            if isinstance(result, VectorResult):
                encoded = encode_vector(result, chunk_bytes)
            else:  # the summary's patches are PNG-encoded, too slow for the event loop
                encoded = await asyncio.to_thread(lambda: list(encode_summary(result, chunk_bytes)))
            for response in encoded:
                yield response


def encode_vector(result: VectorResult, chunk_bytes: int) -> Iterator[pb.EmbedResponse]:
    """One message per item; a vector bigger than a chunk continues in messages with the same
    index (its Tensor chunks carry byte_offset)."""
    head = pb.EmbedVector(index=result.index, id=result.id, predicted_class=result.predicted)
    if result.error is not None:
        code = grpc.StatusCode[result.error.status].value[0]
        head.error.CopyFrom(pb.ItemError(code=code, message=f"item {result.index} (id "
                                         f"{echo(result.id)}): {result.error.message}"))
    if result.vector is None or result.error is not None:
        yield pb.EmbedResponse(vector=head)
        return
    for number, piece in enumerate(wire.split(wire.encode(result.vector.numpy(), "vector"), chunk_bytes)):
        message = head if number == 0 else pb.EmbedVector(index=result.index, id=result.id)
        message.vector.CopyFrom(piece)
        yield pb.EmbedResponse(vector=message)


def _hit(hit: Hit) -> pb.PatchHit:
    x_min, y_min, x_max, y_max = hit.box
    patch = hit.patch[..., 0] if hit.patch.shape[-1] == 1 else hit.patch
    return pb.PatchHit(index=hit.index, id=hit.id, activation=hit.activation, y=hit.y, x=hit.x,
                       box=pb.BoundingBox(x_min=x_min, y_min=y_min, x_max=x_max, y_max=y_max),
                       patch_png=render.image_png(patch))


def _pieces(summary: SetSummary, chunk_bytes: int) -> Iterator[pb.EmbedSummary]:
    """The summary cut into parts that each fit a message."""
    for start in range(0, max(1, len(summary.indices)), INDICES_PER_MESSAGE):
        yield pb.EmbedSummary(count=summary.count if start == 0 else 0,
                              indices=summary.indices[start:start + INDICES_PER_MESSAGE])
    for name in ("projection", "neighbour_indices", "neighbour_distances"):
        tensor = getattr(summary, name)
        if tensor is not None:
            for chunk in wire.split(wire.encode(tensor.numpy(), name), chunk_bytes):
                piece = pb.EmbedSummary()
                getattr(piece, name).CopyFrom(chunk)
                yield piece
    for (layer, channel), hits in summary.top_patches:
        group = pb.UnitPatches(unit=pb.UnitRef(layer=layer, channel=channel))
        for hit in map(_hit, hits):
            if group.hits and group.ByteSize() + hit.ByteSize() > chunk_bytes:
                yield pb.EmbedSummary(top_patches=[group])
                group = pb.UnitPatches(unit=group.unit)
            group.hits.append(hit)
        yield pb.EmbedSummary(top_patches=[group])


def encode_summary(summary: SetSummary, chunk_bytes: int) -> Iterator[pb.EmbedResponse]:
    """Pack the parts greedily into messages of at most chunk_bytes; the last has complete."""
    current: pb.EmbedSummary | None = None
    for piece in _pieces(summary, chunk_bytes):
        clash = current is not None and any(
            current.HasField(name) and piece.HasField(name)
            for name in ("projection", "neighbour_indices", "neighbour_distances"))
        if current is not None and (clash or current.ByteSize() + piece.ByteSize() > chunk_bytes):
            yield pb.EmbedResponse(summary=current)
            current = None
        if current is None:
            current = piece
        else:
            current.MergeFrom(piece)
    current.complete = True
    yield pb.EmbedResponse(summary=current)
