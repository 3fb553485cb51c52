"""The batcher alone (scheduling/batcher.py), driven by a fake device instead of a worker: no
server, no model. Coalescing up to max_batch_size, the max_queue_delay close counted from the
oldest row, deadlines and cancellation, chunks sized from the measured time per row, the order
in which queues and jobs are served, and admission with a retry hint."""

from __future__ import annotations

import asyncio
import time

import pytest
import torch
from explainserve.config import BatchingConfig
from explainserve.errors import DeadlineExceeded, ResourceExhausted, Unavailable
from explainserve.methods.base import Kernel, TensorRows
from explainserve.scheduling.batcher import Batch, Batcher, Job, run_job
from prometheus_client import REGISTRY

MODEL = "unit"


def scaled(model, inputs, targets, factor=2.0):
    """The fake kernel: every row times `factor`, and its target."""
    return {"value": inputs * factor, "target": targets}


KERNEL = Kernel.of(scaled)
OTHER = Kernel.of(scaled, factor=3.0)  # another kernel key: another queue


def rows(first: int, count: int) -> TensorRows:
    """`count` rows whose values first, first + 1, ... say which rows came back where."""
    values = torch.arange(first, first + count, dtype=torch.float32)[:, None]
    return TensorRows(values, torch.arange(count) % 4)


def make_job(name: str, first: int, count: int, *, kernel: Kernel = KERNEL, model: str = MODEL,
             deadline: float | None = None, waited: float = 0.0) -> Job:
    """A job as run_job makes one, `waited` seconds old."""
    now = time.monotonic()
    job = Job(model=model, kernel=kernel, rows=rows(first, count),
              future=asyncio.get_running_loop().create_future(), deadline=deadline,
              submitted_at=now - waited, ready_since=now - waited)
    job.name = name
    return job


class Device:
    """Stands in for a worker (workers/pool.py): pulls the next batch, runs its kernel once on
    the rows of all its slices, hands each slice its part of the outputs, and reports the
    batch's device time as seconds_per_row x rows."""

    def __init__(self, batcher: Batcher, seconds_per_row: float | None = None) -> None:
        self.batcher = batcher
        self.seconds_per_row = seconds_per_row
        self.batches: list[list[tuple[str, int, int]]] = []
        self.rows_seen: list[float] = []

    async def run_next(self, timeout: float = 5.0) -> Batch:
        batch = await asyncio.wait_for(self.batcher.next_batch(), timeout)
        parts = [piece.job.rows.take(piece.start, piece.stop) for piece in batch.slices]
        inputs = torch.cat([inputs for inputs, _ in parts])
        outputs = batch.kernel(None, inputs, torch.cat([targets for _, targets in parts]))
        offset = 0
        for piece in batch.slices:
            size = piece.stop - piece.start
            piece.job.deliver(piece.start, {k: v[offset:offset + size] for k, v in outputs.items()})
            offset += size
        if self.seconds_per_row is not None:
            self.batcher.record_compute(batch, self.seconds_per_row * batch.size)
        self.rows_seen += inputs[:, 0].tolist()
        self.batches.append([(getattr(p.job, "name", "?"), p.start, p.stop) for p in batch.slices])
        return batch

    async def serve(self) -> None:
        while True:
            await self.run_next(timeout=None)


def batcher_for(**batching) -> Batcher:
    return Batcher({MODEL: BatchingConfig(**batching)})


def counted(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def nothing_due(batcher: Batcher, within: float = 0.2) -> bool:
    """True when next_batch has no batch to give within `within` seconds."""
    try:
        await asyncio.wait_for(batcher.next_batch(), within)
    except asyncio.TimeoutError:
        return True
    return False


def values_of(job: Job) -> list[float]:
    return job.future.result()["value"][:, 0].tolist()


def test_jobs_with_one_kernel_key_are_coalesced_up_to_max_batch_size():
    async def scenario():
        batcher = batcher_for(max_batch_size=4, max_queue_delay_ms=60_000)
        device = Device(batcher)
        a, b, c = make_job("a", 0, 3), make_job("b", 10, 2), make_job("c", 20, 1)
        other = make_job("other", 30, 1, kernel=OTHER)
        for job in (a, b, c, other):
            batcher.submit(job)
        batch = await device.run_next(timeout=1.0)  # full at once: no waiting for the delay
        assert batch.kernel == KERNEL and batch.size == 4
        assert device.batches == [[("a", 0, 3), ("b", 0, 1)]]  # b's second row must wait
        assert await nothing_due(batcher)  # 2 rows of KERNEL and 1 of OTHER: nothing full
        batcher.submit(e := make_job("e", 40, 2))
        await device.run_next(timeout=1.0)
        assert device.batches[1] == [("c", 0, 1), ("b", 1, 2), ("e", 0, 2)]
        assert values_of(a) == [0.0, 2.0, 4.0]
        assert values_of(b) == [20.0, 22.0]  # its two parts joined in row order
        assert values_of(c) == [40.0] and values_of(e) == [80.0, 82.0]
        assert b.future.result()["target"].tolist() == [0, 1]
        # The OTHER row never shared a pass with KERNEL's rows; shutdown fails it.
        assert not other.finished and 30.0 not in device.rows_seen
        batcher.fail_all(Unavailable("server is shutting down"))
        with pytest.raises(Unavailable, match="shutting down"):
            other.future.result()
    asyncio.run(scenario())


def test_concurrent_run_job_callers_share_passes_and_get_their_own_rows():
    async def scenario():
        batcher = batcher_for(max_batch_size=4, max_queue_delay_ms=50)
        device = Device(batcher)
        served = asyncio.create_task(device.serve())
        try:
            results = await asyncio.wait_for(asyncio.gather(
                *(run_job(batcher, MODEL, KERNEL, rows(100 * i, 1 + i % 2), None)
                  for i in range(6))), 5)
        finally:
            served.cancel()
        for i, result in enumerate(results):
            expected = [2.0 * (100 * i + row) for row in range(1 + i % 2)]
            assert result["value"][:, 0].tolist() == expected
        assert [sum(stop - start for _, start, stop in batch) for batch in device.batches] \
            == [4, 4, 1]  # 9 rows; every pass but the last one full
    asyncio.run(scenario())


def test_a_batch_closes_when_its_oldest_row_has_waited_max_queue_delay():
    async def scenario():
        batcher = batcher_for(max_batch_size=8, max_queue_delay_ms=300)
        device = Device(batcher)
        started = time.monotonic()
        batcher.submit(make_job("first", 0, 1))
        waiting = asyncio.create_task(device.run_next())
        await asyncio.sleep(0.2)
        batcher.submit(make_job("second", 10, 1))
        await waiting
        elapsed = time.monotonic() - started
        # Not before the first row's 300 ms, and before the second row's (>= 500 ms).
        assert 0.3 <= elapsed < 0.5, elapsed
        assert device.batches == [[("first", 0, 1), ("second", 0, 1)]]
    asyncio.run(scenario())


def test_an_expired_job_is_dropped_before_it_reaches_the_device():
    async def scenario():
        batcher = batcher_for(max_batch_size=8, max_queue_delay_ms=0)
        device = Device(batcher)
        depth = counted("explainserve_queue_depth", model=MODEL)
        dropped = counted("explainserve_rejected_total", reason="deadline")
        expired = make_job("expired", 0, 2, deadline=time.monotonic() - 0.001)
        batcher.submit(expired)
        batcher.submit(live := make_job("live", 10, 1))
        await device.run_next(timeout=1.0)
        assert device.batches == [[("live", 0, 1)]] and device.rows_seen == [10.0]
        with pytest.raises(DeadlineExceeded) as error:
            expired.future.result()
        assert error.value.status == "DEADLINE_EXCEEDED"
        assert error.value.message == "request deadline passed while it was queued"
        assert values_of(live) == [20.0]
        assert counted("explainserve_rejected_total", reason="deadline") == dropped + 1
        assert counted("explainserve_queue_depth", model=MODEL) == depth
    asyncio.run(scenario())


def test_a_job_whose_deadline_passes_while_it_waits_never_runs():
    async def scenario():
        batcher = batcher_for(max_batch_size=8, max_queue_delay_ms=300, max_queue_size=1)
        device = Device(batcher)
        batcher.submit(late := make_job("late", 0, 1, deadline=time.monotonic() + 0.1))
        assert await nothing_due(batcher, within=0.6)  # due at 300 ms, expired at 100 ms
        with pytest.raises(DeadlineExceeded):
            late.future.result()
        batcher.submit(make_job("next", 10, 1, waited=1.0))  # its queue slot is free again
        await device.run_next(timeout=1.0)
        assert device.rows_seen == [10.0]
    asyncio.run(scenario())


def test_a_cancelled_caller_is_dropped_and_counted_as_cancelled():
    async def scenario():
        batcher = batcher_for(max_batch_size=8, max_queue_delay_ms=100)
        device = Device(batcher)
        cancelled = counted("explainserve_rejected_total", reason="cancelled")
        caller = asyncio.create_task(run_job(batcher, MODEL, KERNEL, rows(0, 3), None))
        await asyncio.sleep(0)  # submitted
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        batcher.submit(make_job("kept", 10, 1, waited=1.0))
        await device.run_next(timeout=1.0)
        assert device.batches == [[("kept", 0, 1)]] and device.rows_seen == [10.0]
        assert counted("explainserve_rejected_total", reason="cancelled") == cancelled + 1
    asyncio.run(scenario())


def test_a_many_row_job_is_cut_into_chunks_sized_from_the_measured_time_per_row():
    async def scenario():
        # 2**-6 s per row against a 62.5 ms budget: 4 rows a chunk once a pass is measured.
        batcher = batcher_for(max_batch_size=32, max_queue_delay_ms=0, max_chunk_ms=62.5)
        device = Device(batcher, seconds_per_row=2 ** -6)
        batcher.submit(big := make_job("big", 0, 40))
        for _ in range(3):
            await device.run_next(timeout=1.0)
        assert device.batches == [[("big", 0, 32)], [("big", 32, 36)], [("big", 36, 40)]]
        assert values_of(big) == [2.0 * row for row in range(40)]
        # The measurement belongs to its kernel key: another kernel's job is not cut.
        batcher.submit(make_job("other", 100, 32, kernel=OTHER))
        await device.run_next(timeout=1.0)
        assert device.batches[-1] == [("other", 0, 32)]
        # A slower pass moves the average (0.8 old + 0.2 new): 2**-6 and 2**-4 give 25 ms
        # per row, so 2 rows fit the budget.
        device.seconds_per_row = 2 ** -4
        batcher.submit(make_job("slow", 200, 8))
        await device.run_next(timeout=1.0)
        assert device.batches[-1] == [("slow", 0, 4)]
        await device.run_next(timeout=1.0)
        assert device.batches[-1] == [("slow", 4, 6)]
    asyncio.run(scenario())


def test_a_big_job_goes_to_the_back_of_the_line_after_each_chunk():
    async def scenario():
        batcher = batcher_for(max_batch_size=4, max_queue_delay_ms=0)
        device = Device(batcher)
        batcher.submit(big := make_job("big", 0, 10))
        batcher.submit(first := make_job("first", 100, 1))
        await device.run_next(timeout=1.0)
        batcher.submit(second := make_job("second", 200, 1))
        await device.run_next(timeout=1.0)
        assert first.finished and not big.finished
        await device.run_next(timeout=1.0)
        assert device.batches == [[("big", 0, 4)],
                                  [("first", 0, 1), ("big", 4, 7)],
                                  [("second", 0, 1), ("big", 7, 10)]]
        assert values_of(big) == [2.0 * row for row in range(10)]
        assert values_of(first) == [200.0] and values_of(second) == [400.0]
    asyncio.run(scenario())


def test_the_queue_whose_head_has_waited_longest_is_served_first():
    async def scenario():
        batcher = batcher_for(max_batch_size=8, max_queue_delay_ms=0)
        device = Device(batcher)
        batcher.submit(make_job("newer", 0, 1, kernel=KERNEL, waited=1.0))
        batcher.submit(make_job("older", 10, 1, kernel=OTHER, waited=2.0))
        first = await device.run_next(timeout=1.0)
        second = await device.run_next(timeout=1.0)
        assert (first.kernel, second.kernel) == (OTHER, KERNEL)
        assert device.batches == [[("older", 0, 1)], [("newer", 0, 1)]]
    asyncio.run(scenario())


def test_a_full_queue_is_refused_with_a_retry_hint_and_admits_again_once_served():
    async def scenario():
        batcher = batcher_for(max_batch_size=8, max_queue_delay_ms=5, max_queue_size=2)
        device = Device(batcher, seconds_per_row=2 ** -4)
        refused = counted("explainserve_rejected_total", reason="queue_full")
        batcher.submit(make_job("one", 200, 1))
        batcher.submit(make_job("many", 0, 100))  # a request of 100 rows is one request
        message = f"queue of model {MODEL!r} is full (2 requests); retry later"
        with pytest.raises(ResourceExhausted) as early:
            batcher.admit(MODEL)  # what the servicer asks before it decodes a request
        with pytest.raises(ResourceExhausted) as late:
            batcher.submit(make_job("third", 300, 1))
        for error in (early.value, late.value):
            assert error.status == "RESOURCE_EXHAUSTED" and error.message == message
            assert error.retry_after_ms == 50  # nothing measured yet: 10 x max_queue_delay
        assert counted("explainserve_rejected_total", reason="queue_full") == refused + 2
        batcher.admit("no-such-model")  # unknown models get their NOT_FOUND elsewhere
        await device.run_next(timeout=1.0)  # serves "one" and 7 of "many"'s rows: one leaves
        batcher.admit(MODEL)
        batcher.submit(make_job("third", 300, 1))
        with pytest.raises(ResourceExhausted) as measured:
            batcher.submit(make_job("fourth", 400, 1))
        # About the device time of half the queue: 2**-4 s per row x 2 requests / 2.
        assert measured.value.retry_after_ms == int(1000 * 2 ** -4 * 2 / 2)
    asyncio.run(scenario())
