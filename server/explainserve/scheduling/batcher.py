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

from ..config import BatchingConfig
from ..errors import Cancelled, DeadlineExceeded, ResourceExhausted, ServiceError
from ..methods.base import Kernel, Rows
from .. import metrics

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
    model: str
    kernel: Kernel
    slices: tuple[Slice, ...]

    @property
    def size(self) -> int:
        return sum(s.stop - s.start for s in self.slices)


class Batcher:
    """Queues per (model, kernel key); workers pull batches with next_batch()."""

    def __init__(self, batching: dict[str, BatchingConfig]) -> None:
        self._batching = batching
        self._queues: dict[tuple[str, Hashable], deque[Job]] = {}
        self._queued_jobs: dict[str, int] = {name: 0 for name in batching}
        self._changed = asyncio.Event()
        self.closed = False

    def submit(self, job: Job) -> None:
        """Queue a job, or answer RESOURCE_EXHAUSTED when its model's queue is full."""
        config = self._batching[job.model]
        if self._queued_jobs[job.model] >= config.max_queue_size:
            metrics.REJECTED.labels(reason="queue_full").inc()
            raise ResourceExhausted(
                f"queue of model {job.model!r} is full ({config.max_queue_size} requests); retry later",
                retry_after_ms=max(10, int(config.max_queue_delay_ms * 10)),
            )
        self._queues.setdefault((job.model, job.kernel.key), deque()).append(job)
        self._queued_jobs[job.model] += 1
        metrics.QUEUE_DEPTH.labels(model=job.model).inc()
        self._changed.set()

    async def next_batch(self) -> Batch:
        """Wait for the next batch that is due: full, or its oldest row has waited long enough."""
        while True:
            self._changed.clear()
            now = time.monotonic()
            self._drop_finished(now)
            due_at, queue_key = self._oldest_queue()
            if queue_key is not None:
                config = self._batching[queue_key[0]]
                waiting = sum(job.remaining for job in self._queues[queue_key])
                if waiting >= config.max_batch_size or now >= due_at:
                    return self._take(queue_key, config.max_batch_size, now)
            timeout = None if queue_key is None else max(0.0, due_at - now)
            try:
                await asyncio.wait_for(self._changed.wait(), timeout)
            except asyncio.TimeoutError:
                pass

    def _oldest_queue(self) -> tuple[float, tuple[str, Hashable] | None]:
        best: tuple[float, tuple[str, Hashable] | None] = (float("inf"), None)
        for key, queue in self._queues.items():
            if queue:
                due = queue[0].ready_since + self._batching[key[0]].max_queue_delay_ms / 1000
                best = min(best, (due, key), key=lambda pair: pair[0])
        return best

    def _take(self, queue_key: tuple[str, Hashable], limit: int, now: float) -> Batch:
        queue = self._queues[queue_key]
        slices = []
        taken = 0
        while queue and taken < limit:
            job = queue[0]
            count = min(job.remaining, limit - taken)
            slices.append(Slice(job, job.next_row, job.next_row + count))
            job.next_row += count
            taken += count
            queue.popleft()
            if job.remaining:
                job.ready_since = now  # back of the line: let others in before its next chunk
                queue.append(job)
            else:
                self._dequeued(job)
        batch = Batch(queue_key[0], slices[0].job.kernel, tuple(slices))
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
                if not job.finished:
                    metrics.REJECTED.labels(reason="deadline").inc()
                    job.fail(DeadlineExceeded("request deadline passed while it was queued"))
                else:
                    metrics.REJECTED.labels(reason="cancelled").inc()

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
