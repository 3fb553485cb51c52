"""The dynamic batcher: rows that share a kernel key are coalesced into one device pass.

As Triton's dynamic batcher and Ray Serve's @serve.batch do it, a batch closes when it holds
`max_batch_size` rows or when its OLDEST row has waited `max_queue_delay_ms`. Queues are keyed
by (model, kernel key): the batcher never looks at what a kernel computes. A job with many rows
(occlusion positions, SmoothGrad samples) is served a chunk at a time and goes to the back of
the line after each chunk, so it interleaves with small requests instead of holding a device.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field

import torch

from explainserve.config import BatchingConfig
from explainserve.errors import Cancelled, DeadlineExceeded, ResourceExhausted, ServiceError
from explainserve.methods.base import Kernel, Rows
from explainserve import metrics

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class Job:
    """One submission: some rows for one kernel, answered by one future."""

    model: str
    kernel: Kernel
    rows: Rows
    future: asyncio.Future
    deadline: float | None = None  # time.monotonic() after which the job is dropped
    submitted_at: float = field(default_factory=time.monotonic)
    ready_since: float = field(default_factory=time.monotonic)
    next_row: int = 0
    _parts: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)
    _rows_done: int = 0

    @property
    def remaining(self) -> int:
        return len(self.rows) - self.next_row

    @property
    def finished(self) -> bool:
        return self.future.done()

    def expired(self, now: float) -> bool:
        return self.deadline is not None and now >= self.deadline

    def deliver(self, start: int, outputs: dict[str, torch.Tensor]) -> None:
        """Store the outputs of rows [start, start+n); resolve the future once all have come."""
        if self.finished:
            return
        self._parts[start] = outputs
        self._rows_done += len(next(iter(outputs.values())))
        if self._rows_done == len(self.rows):
            ordered = [self._parts[key] for key in sorted(self._parts)]
            self.future.set_result({name: torch.cat([part[name] for part in ordered])
                                    for name in ordered[0]})

    def fail(self, error: BaseException) -> None:
        if not self.finished:
            self.future.set_exception(error)


@dataclass(frozen=True)
class Slice:
    job: Job
    start: int
    stop: int


@dataclass(frozen=True)
class Batch:
    queue_key: tuple[str, Hashable]  # (model, kernel key)
    kernel: Kernel
    slices: tuple[Slice, ...]

    @property
    def model(self) -> str:
        return self.queue_key[0]

    @property
    def size(self) -> int:
        return sum(s.stop - s.start for s in self.slices)


class Batcher:
    """Queues per (model, kernel key); workers pull batches with next_batch()."""

    def __init__(self, batching: dict[str, BatchingConfig]) -> None:
        self._batching = batching
        self._queues: dict[tuple[str, Hashable], deque[Job]] = {}
        self._queued_jobs: dict[str, int] = {name: 0 for name in batching}
        self._row_seconds: dict[tuple[str, Hashable], float] = {}
        self._changed = asyncio.Event()

    def admit(self, model: str) -> None:
        """RESOURCE_EXHAUSTED, with a retry hint, when `model`'s queue is full. Called before a
        request is decoded as well as at submit, so an overloaded server refuses cheaply."""
        config = self._batching.get(model)
        if config is None or self._queued_jobs[model] < config.max_queue_size:
            return  # unknown models get their NOT_FOUND from the registry
        metrics.REJECTED.labels(reason="queue_full").inc()
        raise ResourceExhausted(
            f"queue of model {model!r} is full ({config.max_queue_size} requests); retry later",
            retry_after_ms=self._drain_estimate_ms(model, config))

    def _drain_estimate_ms(self, model: str, config: BatchingConfig) -> int:
        """About the time the device needs for half the queue: a client that waits this long
        finds room, and 256 clients do not turn the refusals themselves into the load."""
        per_row = [seconds for (name, _), seconds in self._row_seconds.items() if name == model]
        if not per_row:
            return max(10, int(config.max_queue_delay_ms * 10))
        return max(10, int(1000 * max(per_row) * config.max_queue_size / 2))

    def submit(self, job: Job) -> None:
        """Queue a job, or answer RESOURCE_EXHAUSTED when its model's queue is full."""
        self.admit(job.model)
        self._queues.setdefault((job.model, job.kernel.key), deque()).append(job)
        self._queued_jobs[job.model] += 1
        metrics.QUEUE_DEPTH.labels(model=job.model).inc()
        self._changed.set()

    async def next_batch(self) -> Batch:
        """Wait for the next batch that is due: full, or its oldest row has waited long enough.

        Among the queues that are due, the one whose head has waited longest goes first."""
        while True:
            self._changed.clear()
            now = time.monotonic()
            self._drop_finished(now)
            earliest_due = float("inf")
            chosen = None
            for queue_key, queue in self._queues.items():
                if not queue:
                    continue
                config = self._batching[queue_key[0]]
                due = queue[0].ready_since + config.max_queue_delay_ms / 1000
                full = self._rows_available(queue_key, queue) >= config.max_batch_size
                if (full or now >= due) and (chosen is None or due < chosen[0]):
                    chosen = (due, queue_key)
                earliest_due = min(earliest_due, due)
            if chosen is not None:
                return self._take(chosen[1], now)
            timeout = None if earliest_due == float("inf") else max(0.0, earliest_due - now)
            try:
                await asyncio.wait_for(self._changed.wait(), timeout)
            except asyncio.TimeoutError:
                pass

    def record_compute(self, batch: Batch, seconds: float) -> None:
        """Workers report each batch's device time; it sizes the chunks of many-row jobs."""
        per_row = seconds / max(1, batch.size)
        previous = self._row_seconds.get(batch.queue_key)
        self._row_seconds[batch.queue_key] = per_row if previous is None else 0.8 * previous + 0.2 * per_row

    def _chunk_rows(self, queue_key: tuple[str, Hashable]) -> int:
        """Rows one job may put into one batch: as many as fit the chunk time budget, so a
        job of thousands of rows never holds a device for long (DESIGN: device-sized chunks)."""
        config = self._batching[queue_key[0]]
        per_row = self._row_seconds.get(queue_key)
        if per_row is None or per_row <= 0:
            return config.max_batch_size
        return max(1, min(config.max_batch_size, int(config.max_chunk_ms / 1000 / per_row)))

    def _rows_available(self, queue_key: tuple[str, Hashable], queue: deque[Job]) -> int:
        chunk = self._chunk_rows(queue_key)
        return sum(min(job.remaining, chunk) for job in queue)

    def _take(self, queue_key: tuple[str, Hashable], now: float) -> Batch:
        queue = self._queues[queue_key]
        limit = self._batching[queue_key[0]].max_batch_size
        chunk = self._chunk_rows(queue_key)
        slices = []
        taken = 0
        for job in list(queue):
            if taken >= limit:
                break
            count = min(job.remaining, chunk, limit - taken)
            slices.append(Slice(job, job.next_row, job.next_row + count))
            job.next_row += count
            taken += count
            queue.remove(job)
            if job.remaining:
                job.ready_since = now  # back of the line: let others in before its next chunk
                queue.append(job)
            else:
                self._dequeued(job)
        batch = Batch(queue_key, slices[0].job.kernel, tuple(slices))
        for piece in slices:
            if piece.start == 0:
                metrics.QUEUE_DURATION.labels(model=batch.model).observe(now - piece.job.submitted_at)
        metrics.BATCH_SIZE.labels(model=batch.model).observe(batch.size)
        return batch

    def _drop_finished(self, now: float) -> None:
        """Drop jobs that expired or were cancelled before they reach a device."""
        for queue in self._queues.values():
            for job in [job for job in queue if job.finished or job.expired(now)]:
                queue.remove(job)
                self._dequeued(job)
                # gRPC cancels a call at its deadline, often before the queue sees it expire:
                # such a job is finished *and* expired, and counts as a deadline, not a cancel.
                metrics.REJECTED.labels(
                    reason="deadline" if job.expired(now) else "cancelled").inc()
                if not job.finished:
                    job.fail(DeadlineExceeded("request deadline passed while it was queued"))

    def _dequeued(self, job: Job) -> None:
        self._queued_jobs[job.model] -= 1
        metrics.QUEUE_DEPTH.labels(model=job.model).dec()

    def fail_all(self, error: ServiceError) -> None:
        """Fail every queued job (shutdown)."""
        for queue in self._queues.values():
            while queue:
                job = queue.popleft()
                self._dequeued(job)
                job.fail(error)


async def run_job(batcher: Batcher, model: str, kernel: Kernel, rows: Rows,
                  deadline: float | None) -> dict[str, torch.Tensor]:
    """Submit rows and wait for their stacked outputs; cancelling the wait drops the job."""
    future = asyncio.get_running_loop().create_future()
    job = Job(model=model, kernel=kernel, rows=rows, future=future, deadline=deadline)
    batcher.submit(job)
    try:
        return await future
    except asyncio.CancelledError:
        job.fail(Cancelled("call cancelled"))
        raise


__all__ = ["Batch", "Batcher", "Job", "Slice", "run_job"]
