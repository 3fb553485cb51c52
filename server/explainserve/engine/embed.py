"""An Embed stream: items go through the batcher one job each as soon as they arrive, so items
of this stream and of others coalesce into device-sized batches; results come back in stream
order; the set results are computed when the client finishes.

Memory grows with the vectors kept, never with the images: an image lives only while its item
is in flight (at most `window` of them), and a unit's top-k keeps cropped patches only. What is
kept is bounded per stream (max_embed_stream_bytes) and over all open streams
(max_embed_server_bytes); an item that would go over either ends the stream, as too many items
do, because the set results the client asked for can no longer be computed.
A bad item (undecodable bytes, wrong tensor shape) fails alone with an error in its result;
trouble of the server's own (queue full for too long, deadline, shutdown) ends the stream.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

import torch
from torch import Tensor

from explainserve.engine.embed_top import Hit, TopK
from explainserve.engine.embed_types import (EmbedInput, EmbedSpec, Finish, SetSummary,
                                             VectorResult)
from explainserve.errors import FailedPrecondition, InvalidArgument, OutOfRange, ResourceExhausted
from explainserve.methods.base import Kernel, TensorRows
from explainserve.methods.embed import receptive_field
from explainserve.methods.embed.features import embed_kernel, penultimate_layer
from explainserve.methods.embed.projection import nearest_neighbours
from explainserve.methods.embed.registry import get_projection
from explainserve.scheduling.batcher import run_job

logger = logging.getLogger(__name__)

MAX_UNITS = 64
MAX_TOP_K = 100
MAX_NEIGHBOURS = 100
QUEUE_FULL_WAIT_S = 60.0
# Other streams free the server's budget only when they end, seconds to minutes away.
SERVER_BUDGET_RETRY_MS = 5000


@dataclass
class _Computed:
    index: int
    id: str
    image: Tensor | None = None
    outputs: dict[str, Tensor] | None = None
    error: InvalidArgument | None = None


def _patch_bytes(hit: Hit) -> int:
    return hit.patch.nbytes


class EmbedSession:
    """One stream's state: the model, the kernel, the vectors kept and the running top-k."""

    def __init__(self, engine, spec: EmbedSpec, deadline: float | None) -> None:
        self._engine = engine
        self._spec = spec
        self._deadline = deadline
        self._model = engine.registry.get(spec.model)
        self._projection = get_projection(spec.projection)  # an unknown name fails before any item
        self.layer = self._resolve_layer(spec.layer)
        for unit_layer, channel in spec.units:
            self._check_unit(unit_layer, channel)
        batching = self._model.config.batching
        self._window = max(1, min(2 * batching.max_batch_size, batching.max_queue_size // 2))
        self._kernel: Kernel | None = None
        self._fields: list[receptive_field.ReceptiveField] = []
        self._tops = [TopK(spec.top_k, size_of=_patch_bytes) for _ in spec.units]
        self._vectors: list[Tensor] = []
        self._indices: list[int] = []
        self._received = 0
        self._budget = engine.embed_budget
        self._vector_bytes = 0
        self._held_bytes = 0  # vectors and crops, all of it reserved from the server's budget

    def _resolve_layer(self, requested: str) -> str:
        if requested:
            return self._model.check_layer(requested).name
        layer = penultimate_layer(self._model.module, self._model.layers) or self._model.default_layer
        if not layer:
            raise FailedPrecondition(f"model {self._model.name!r} has no layer feeding a final "
                                     "nn.Linear and no spatial layer; name the layer to embed at")
        return layer

    def _check_unit(self, layer: str, channel: int) -> None:
        description = self._model.check_layer(layer)
        shape = description.output_shape
        # channels-last and token layers hold their channels last (models/layouts.py)
        count = description.layout.channels if description.layout.kind in ("nhwc", "tokens") else (
            shape[0] if shape else 0)
        if not shape or not 0 <= channel < count:
            raise OutOfRange(f"channel {channel} of layer {layer!r} is out of range: the layer "
                             f"has output shape {list(shape)}")

    async def prepare(self) -> None:
        """Trace the model's geometry (once per model, off the event loop) and pick where the
        forward pass may stop."""
        model, shape = self._model.module, self._model.input_shape
        self._fields = [await asyncio.to_thread(receptive_field.receptive_field, model, layer, shape)
                        for layer, _ in self._spec.units]
        order = {layer.name: i for i, layer in enumerate(self._model.layers)}
        deepest = max([self.layer, *(u for u, _ in self._spec.units)], key=order.__getitem__)
        head = penultimate_layer(model, self._model.layers)
        calls = await asyncio.to_thread(receptive_field.call_count, model, deepest, shape)
        # Past the penultimate layer only the classifier is left: finish the pass and report
        # the predicted class. A module called twice per pass cannot be a stopping point.
        full = (head and order[deepest] >= order[head]) or calls > 1
        layouts = {layer.name: layer.layout for layer in self._model.layers}
        read = dict.fromkeys([self.layer, *(u for u, _ in self._spec.units)])
        self._kernel = Kernel.of(embed_kernel, layer=self.layer, pooling=self._spec.pooling,
                                 units=self._spec.units, stop_after=None if full else deepest,
                                 layouts=tuple((name, layouts[name]) for name in read
                                               if layouts[name].kind in ("nhwc", "tokens")))

    async def run(self, events: AsyncIterator[EmbedInput | Finish]) -> AsyncIterator[VectorResult | SetSummary]:
        """Results in stream order, then a summary at each Finish and at the end of the stream.
        At most `window` items are in flight; beyond that the stream is not read, so a fast
        client is held back by gRPC flow control instead of queueing unbounded work."""
        pending: deque[asyncio.Task] = deque()
        reader: asyncio.Future | None = None
        iterator = aiter(events)
        try:
            while True:
                if reader is None and len(pending) < self._window:
                    reader = asyncio.ensure_future(anext(iterator, None))
                await asyncio.wait([t for t in (reader, *list(pending)[:1]) if t is not None],
                                   return_when=asyncio.FIRST_COMPLETED)
                while pending and pending[0].done():
                    yield self._record(pending.popleft().result())
                if reader is None or not reader.done():
                    continue
                event, reader = reader.result(), None
                if event is None or isinstance(event, Finish):
                    while pending:
                        yield self._record(await pending.popleft())
                    logger.debug("embed summary of %d vectors (%s)", len(self._vectors), self._spec)
                    yield await asyncio.to_thread(self.summary)
                    if event is None:
                        return
                else:
                    pending.append(asyncio.ensure_future(self._compute(self._admit(), event)))
        finally:
            self._budget.release(self._held_bytes)
            self._held_bytes = 0
            for task in (reader, *pending):
                if task is not None and not task.done():
                    task.cancel()
                elif task is not None and not task.cancelled():
                    task.exception()  # retrieved: a stream that ended early logs no stray error

    def _admit(self) -> int:
        if self._received >= self._engine.limits.max_embed_items:
            raise ResourceExhausted(
                f"an Embed stream holds at most {self._engine.limits.max_embed_items} items; "
                f"item {self._received} is one too many (split the set, or raise max_embed_items)",
                retry_after_ms=-1)  # pushback -1: the same stream would fail again; never retried
        self._received += 1
        return self._received - 1

    async def _compute(self, index: int, item: EmbedInput) -> _Computed:
        if item.error is not None:
            return _Computed(index, item.id, error=item.error)
        try:
            image = await self._engine.prepare(self._model, item.image)
            outputs = await self._run(image)
        except InvalidArgument as error:
            return _Computed(index, item.id, error=error)
        return _Computed(index, item.id, image, outputs)

    async def _run(self, image: Tensor) -> dict[str, Tensor]:
        """One item through the batcher. A full queue is waited out (a stream is a batch job:
        it takes its turn) for up to QUEUE_FULL_WAIT_S, then ends the stream."""
        rows = TensorRows(image[None], torch.zeros(1, dtype=torch.long))
        give_up = time.monotonic() + QUEUE_FULL_WAIT_S
        while True:
            try:
                return await run_job(self._engine.batcher, self._model.name, self._kernel, rows,
                                     self._deadline)
            except ResourceExhausted as error:
                if time.monotonic() >= give_up:
                    raise
                await asyncio.sleep((error.retry_after_ms or 20) / 1000)

    def _record(self, item: _Computed) -> VectorResult:
        """Keep the vector, offer each unit's peak to its top-k, and let the image go."""
        if item.error is not None:
            return VectorResult(item.index, item.id, error=item.error)
        outputs = item.outputs
        vector = outputs["vector"][0].clone()
        self._vectors.append(vector)
        self._indices.append(item.index)
        self._vector_bytes += vector.nelement() * vector.element_size()
        config = self._model.config
        for unit, (top, rf) in enumerate(zip(self._tops, self._fields)):
            y, x = int(outputs[f"unit{unit}_y"][0]), int(outputs[f"unit{unit}_x"][0])
            top.offer(float(outputs[f"unit{unit}_value"][0]), item.index, lambda: Hit(
                item.index, item.id, float(outputs[f"unit{unit}_value"][0]), y, x, rf.box(y, x),
                receptive_field.crop_patch(item.image, rf.box(y, x), config.mean, config.std)))
        self._hold(self._vector_bytes + sum(top.bytes_held for top in self._tops), item.index)
        return VectorResult(item.index, item.id, vector if self._spec.return_vectors else None,
                            int(outputs["predicted"][0]))

    def _hold(self, total: int, index: int) -> None:
        """Account for keeping `total` bytes now that item `index` is kept; over either bound
        the stream ends (its state is dropped with it, so nothing is rolled back)."""
        limits = self._engine.limits
        if total > limits.max_embed_stream_bytes:
            raise ResourceExhausted(
                f"an Embed stream keeps at most max_embed_stream_bytes = "
                f"{limits.max_embed_stream_bytes} bytes of vectors and top-k patches; item "
                f"{index} would make it {total} bytes (pool the vectors, embed at a smaller "
                "layer, ask for fewer top units, or split the set)",
                retry_after_ms=-1)  # pushback -1: the same stream would fail again; never retried
        extra = total - self._held_bytes
        if not self._budget.reserve(extra):
            raise ResourceExhausted(
                f"the open Embed streams together keep at most max_embed_server_bytes = "
                f"{self._budget.capacity} bytes and hold {self._budget.held}; item {index} needs "
                f"{extra} more (retry when other streams have finished)",
                retry_after_ms=SERVER_BUDGET_RETRY_MS)
        self._held_bytes = total

    def summary(self) -> SetSummary:
        """The set results for every item that succeeded so far (runs off the event loop)."""
        spec = self._spec
        width = self._vectors[0].shape[0] if self._vectors else 0
        vectors = torch.stack(self._vectors) if self._vectors else torch.zeros(0, width)
        coordinates = (self._projection.function(vectors, spec.dims) if len(vectors)
                       else torch.zeros(0, spec.dims))
        neighbour_indices = neighbour_distances = None
        if spec.neighbours:
            rows, neighbour_distances = nearest_neighbours(vectors, spec.neighbours, spec.metric)
            neighbour_indices = torch.tensor(self._indices, dtype=torch.long)[rows]
        return SetSummary(len(self._indices), list(self._indices), coordinates, neighbour_indices,
                          neighbour_distances, [(unit, top.hits()) for unit, top in
                                                zip(spec.units, self._tops)])
