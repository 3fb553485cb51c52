"""The batcher alone (scheduling/batcher.py), driven by a fake device instead of a worker: no
server, no model. Coalescing up to max_batch_size, the max_queue_delay close counted from the
oldest row, deadlines and cancellation, chunks sized from the measured time per row, the order
in which queues and jobs are served, and admission with a retry hint."""

from __future__ import annotations

import asyncio
import time

import pytest
from batcher_support import (KERNEL, MODEL, OTHER, Device, batcher_for, counted, make_job,
                             nothing_due, rows, values_of)
from explainserve.config import BatchingConfig
from explainserve.errors import DeadlineExceeded, ResourceExhausted, Unavailable
from explainserve.scheduling.batcher import Batcher, run_job


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
        # Rank order (no deadlines: the order of submission), so b's last row goes first.
        assert device.batches[1] == [("b", 1, 2), ("c", 0, 1), ("e", 0, 2)]
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
        # 2**-6 s per row against a 62.5 ms budget: 4 rows a chunk once a pass is measured,
        # while other work waits (a job of another model whose queue is not due yet).
        batcher = Batcher({MODEL: BatchingConfig(max_batch_size=32, max_queue_delay_ms=0,
                                                 max_chunk_ms=62.5),
                           "idle": BatchingConfig(max_queue_delay_ms=60_000)})
        device = Device(batcher, seconds_per_row=2 ** -6)
        batcher.submit(make_job("waiting", 1000, 1, model="idle"))
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


def test_small_jobs_share_each_batch_with_a_big_jobs_chunk():
    async def scenario():
        # 2**-5 s per row against a 62.5 ms budget: the big job puts 2 rows into each batch
        # of 4, and the small jobs that arrive take the room beside them.
        batcher = batcher_for(max_batch_size=4, max_queue_delay_ms=0, max_chunk_ms=62.5)
        device = Device(batcher, seconds_per_row=2 ** -5)
        batcher.submit(make_job("probe", 900, 1))
        await device.run_next(timeout=1.0)  # measured
        batcher.submit(big := make_job("big", 0, 6))
        batcher.submit(first := make_job("first", 100, 1))
        await device.run_next(timeout=1.0)
        batcher.submit(second := make_job("second", 200, 1))
        await device.run_next(timeout=1.0)
        assert first.finished and second.finished and not big.finished
        await device.run_next(timeout=1.0)
        assert device.batches[1:] == [[("big", 0, 2), ("first", 0, 1)],
                                      [("big", 2, 4), ("second", 0, 1)],
                                      [("big", 4, 6)]]
        assert values_of(big) == [2.0 * row for row in range(6)]
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
