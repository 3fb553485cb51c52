"""The dynamic batcher: rows that share a kernel key are coalesced into one device pass.

As Triton's dynamic batcher and Ray Serve's @serve.batch do it, a batch closes when it holds
`max_batch_size` rows or when its OLDEST row has waited `max_queue_delay_ms`. Queues are keyed
by (model, kernel key): the batcher never looks at what a kernel computes. A job with many rows
(occlusion positions, SmoothGrad samples) is served a chunk at a time while other work waits,
so it interleaves with small requests instead of holding a device; alone, it takes whole
batches (work conservation).

Deadlines order the work (earliest deadline first, EDF): within a queue the job whose deadline
comes first fills a batch first, and among the queues that are due the one whose head's
deadline comes first goes first, though no due queue waits more than `max_chunk_ms` past its
due time for queues with earlier deadlines (the fairness bound). From the measured time per
row and the work queued ahead, a job that cannot finish before its deadline is refused at
submission, or dropped from its queue as soon as it becomes hopeless, with DEADLINE_EXCEEDED:
under overload the device then spends its time on requests that can still succeed, instead of
making all of them late together.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Hashable
from dataclasses import dataclass, field

import torch

from explainserve.config import BatchingConfig
from explainserve.errors import Cancelled, DeadlineExceeded, ResourceExhausted, ServiceError
from explainserve.methods.base import Kernel, Rows
from explainserve import metrics

logger = logging.getLogger(__name__)

# A job without a deadline ranks as if it were due this long after it was submitted (the
# client's default timeout): it yields to urgent work but is never starved by it.
NO_DEADLINE_RANK_S = 60.0
# Doubling steps of a lone job's chunk (work conservation): 2**16 x one row covers any batch.
MAX_GROWTH = 16


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

    @property
    def rank(self) -> tuple[float, float]:
        """Earliest deadline first; a job without one ranks NO_DEADLINE_RANK_S after it came."""
        due = self.deadline if self.deadline is not None else self.submitted_at + NO_DEADLINE_RANK_S
        return due, self.submitted_at

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

    def __init__(self, batching: dict[str, BatchingConfig], workers: int = 1) -> None:
        self._batching = batching
        self._queues: dict[tuple[str, Hashable], list[Job]] = {}
        self._queued_jobs: dict[str, int] = {name: 0 for name in batching}
        self._row_seconds: dict[tuple[str, Hashable], float] = {}
        self._changed = asyncio.Event()
        # Devices pulling batches (WorkerPool sets it): queued work drains this many times faster.
        self.workers = max(1, workers)
        self._lone: Job | None = None  # the only job queued when the last batch formed
        self._calm = 0  # batches formed in a row for that job alone

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
        """Queue a job; RESOURCE_EXHAUSTED when its model's queue is full, DEADLINE_EXCEEDED
        when the work queued ahead of it and its own cannot be done before its deadline."""
        self.admit(job.model)
        now = time.monotonic()
        if job.deadline is not None:
            ahead = [other for queue in self._queues.values() for other in queue
                     if other.rank <= job.rank]
            late = self._lateness(job, sum(other.remaining for other in ahead),
                                  sum(self._work(other) for other in ahead), now)
            if late is not None:
                metrics.REJECTED.labels(reason="deadline").inc()
                raise DeadlineExceeded(f"request refused: {late}")
        self._queues.setdefault((job.model, job.kernel.key), []).append(job)
        self._queued_jobs[job.model] += 1
        metrics.QUEUE_DEPTH.labels(model=job.model).inc()
        self._changed.set()

    async def next_batch(self) -> Batch:
        """Wait for the next batch that is due: full, or its oldest row has waited long enough
        (a lone job's next chunk is due at once: nothing else could join it).

        Among the due queues, one that has been due for longer than max_chunk_ms goes first
        (the longest waiting first): that bounds what a request waits behind work with earlier
        deadlines. Otherwise the queue whose head has the earliest deadline goes first."""
        while True:
            self._changed.clear()
            now = time.monotonic()
            self._drop_unservable(now)
            lone = self._queued_total() == 1
            earliest_due = float("inf")
            chosen = None
            for queue_key, queue in self._queues.items():
                if not queue:
                    continue
                config = self._batching[queue_key[0]]
                head = min(queue, key=lambda job: job.rank)
                due = min(job.ready_since for job in queue) + config.max_queue_delay_ms / 1000
                full = self._rows_available(queue_key, queue) >= config.max_batch_size
                if full or now >= due or (lone and head.next_row > 0):
                    starved = now - due > config.max_chunk_ms / 1000
                    urgency = (0, due) if starved else (1, head.rank[0])
                    if chosen is None or urgency < chosen[0]:
                        chosen = (urgency, queue_key)
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

    def _chunk_rows(self, queue_key: tuple[str, Hashable], growth: int = 0) -> int:
        """Rows one job may put into one batch: as many as fit the chunk time budget, so a
        job of thousands of rows never holds a device for long while others wait (DESIGN:
        device-sized chunks); doubled `growth` times for a job that has the device alone."""
        config = self._batching[queue_key[0]]
        per_row = self._row_seconds.get(queue_key)
        if per_row is None or per_row <= 0:
            return config.max_batch_size
        budget = max(1, int(config.max_chunk_ms / 1000 / per_row))
        return min(config.max_batch_size, budget << growth)

    def _rows_available(self, queue_key: tuple[str, Hashable], queue: list[Job]) -> int:
        chunk = self._chunk_rows(queue_key)
        return sum(min(job.remaining, chunk) for job in queue)

    def _queued_total(self) -> int:
        return sum(self._queued_jobs.values())

    def _take(self, queue_key: tuple[str, Hashable], now: float) -> Batch:
        queue = self._queues[queue_key]
        limit = self._batching[queue_key[0]].max_batch_size
        # Work conservation: a job that was alone when the previous batch formed and still is
        # gets twice the chunk of the previous one, up to a full batch. One arrival resets it,
        # so a closed-loop caller beside a big job waits for budget-sized chunks only.
        lone = queue[0] if self._queued_total() == 1 else None
        self._calm = self._calm + 1 if lone is not None and lone is self._lone else 0
        self._lone = lone
        chunk = self._chunk_rows(queue_key, min(self._calm, MAX_GROWTH))
        slices = []
        taken = 0
        for job in sorted(queue, key=lambda job: job.rank):
            if taken >= limit:
                break
            count = min(job.remaining, chunk, limit - taken)
            slices.append(Slice(job, job.next_row, job.next_row + count))
            job.next_row += count
            taken += count
            if job.remaining:
                # Its place among the queues starts over: a queue it shares no batch with
                # gets its turn before this job's next chunk. Within its queue, rank decides.
                job.ready_since = now
            else:
                queue.remove(job)
                self._dequeued(job)
        batch = Batch(queue_key, slices[0].job.kernel, tuple(slices))
        for piece in slices:
            if piece.start == 0:
                metrics.QUEUE_DURATION.labels(model=batch.model).observe(now - piece.job.submitted_at)
        metrics.BATCH_SIZE.labels(model=batch.model).observe(batch.size)
        return batch

    def _work(self, job: Job) -> float:
        """Device seconds of a job's rows not yet taken (0 while its kernel is unmeasured)."""
        return job.remaining * self._row_seconds.get((job.model, job.kernel.key), 0.0)

    def _lateness(self, job: Job, ahead_rows: int, ahead_seconds: float,
                  now: float) -> str | None:
        """Why `job` cannot finish before its deadline when `ahead_rows` rows that take
        `ahead_seconds` of device time run first, or None when it can (or when its kernel is
        not measured yet). The queued work drains on `workers` devices at once."""
        per_row = self._row_seconds.get((job.model, job.kernel.key))
        if per_row is None or job.deadline is None:
            return None
        estimate = (ahead_seconds + job.remaining * per_row) / self.workers
        if now + estimate <= job.deadline:
            return None
        left = max(0.0, job.deadline - now)
        return (f"it cannot finish before its deadline: {left * 1000:.0f} ms left, estimated "
                f"{estimate * 1000:.0f} ms ({job.remaining} rows of its own and {ahead_rows} "
                f"rows queued ahead, at the measured {per_row * 1000:.2f} ms per row of its "
                f"kernel, on {self.workers} device(s))")

    def _drop_unservable(self, now: float) -> None:
        """Drop jobs that were cancelled, expired, or can no longer finish in time (in rank
        order, counting the work of the jobs kept ahead) before they reach a device."""
        ahead_rows, ahead_seconds = 0, 0.0
        for job in sorted((job for queue in self._queues.values() for job in queue),
                          key=lambda job: job.rank):
            hopeless = None
            if not job.finished and not job.expired(now):
                hopeless = self._lateness(job, ahead_rows, ahead_seconds, now)
                if hopeless is None:
                    ahead_rows += job.remaining
                    ahead_seconds += self._work(job)
                    continue
            self._queues[(job.model, job.kernel.key)].remove(job)
            self._dequeued(job)
            # gRPC cancels a call at its deadline, often before the queue sees it expire:
            # such a job is finished *and* expired, and counts as a deadline, not a cancel.
            metrics.REJECTED.labels(
                reason="deadline" if job.expired(now) or hopeless else "cancelled").inc()
            if job.finished:
                continue
            if hopeless is not None:
                job.fail(DeadlineExceeded(f"request dropped from the queue: {hopeless}"))
            else:
                job.fail(DeadlineExceeded("request deadline passed while it was queued"))

    def _dequeued(self, job: Job) -> None:
        self._queued_jobs[job.model] -= 1
        metrics.QUEUE_DEPTH.labels(model=job.model).dec()

    def fail_all(self, error: ServiceError) -> None:
        """Fail every queued job (shutdown)."""
        for queue in self._queues.values():
            while queue:
                job = queue.pop(0)
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
