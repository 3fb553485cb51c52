"""Deadline-aware, work-conserving scheduling in the batcher alone (scheduling/batcher.py),
driven by the fake device of tests/batcher_support.py: earliest deadline first within a queue and
across queues (within the fairness bound), admission refused and queued jobs dropped when the
measured time per row says they cannot finish in time, and a lone many-row job taking whole
batches instead of budget-sized chunks."""

from __future__ import annotations

import asyncio
import re
import time

import pytest
from explainserve.errors import DeadlineExceeded
from explainserve.scheduling.batcher import Batcher
from batcher_support import KERNEL, MODEL, OTHER, Device, batcher_for, counted, make_job, values_of

ROW_SECONDS = 2 ** -4  # the fake device's time per row: 62.5 ms, exact in binary


async def measured(batcher: Batcher, device: Device) -> None:
    """One pass of each kernel, so the batcher knows its time per row."""
    for kernel in (KERNEL, OTHER):
        batcher.submit(make_job("probe", 900, 1, kernel=kernel, waited=100.0))
        await device.run_next(timeout=1.0)


def test_jobs_of_one_queue_are_served_earliest_deadline_first():
    async def scenario():
        batcher = batcher_for(max_batch_size=1, max_queue_delay_ms=0)
        device = Device(batcher)
        now = time.monotonic()
        # Submitted latest-deadline first; a job without a deadline ranks 60 s after it came.
        batcher.submit(make_job("none", 0, 1))
        batcher.submit(make_job("late", 10, 1, deadline=now + 30))
        batcher.submit(make_job("soon", 20, 1, deadline=now + 10))
        batcher.submit(make_job("middle", 30, 1, deadline=now + 20))
        for _ in range(4):
            await device.run_next(timeout=1.0)
        assert [batch[0][0] for batch in device.batches] == ["soon", "middle", "late", "none"]
    asyncio.run(scenario())


def test_a_started_job_keeps_its_place_instead_of_rotating_with_later_deadlines():
    """Rotating many-row jobs makes all of them late together; EDF finishes the first one first."""
    async def scenario():
        batcher = batcher_for(max_batch_size=4, max_queue_delay_ms=0)
        device = Device(batcher)
        now = time.monotonic()
        first = make_job("first", 0, 8, deadline=now + 10)
        second = make_job("second", 100, 8, deadline=now + 11)
        batcher.submit(second)
        batcher.submit(first)
        await device.run_next(timeout=1.0)
        await device.run_next(timeout=1.0)
        assert first.finished and not second.finished
        assert device.batches == [[("first", 0, 4)], [("first", 4, 8)]]
        assert values_of(first) == [2.0 * row for row in range(8)]
    asyncio.run(scenario())


def test_across_queues_the_earlier_deadline_goes_first_within_the_fairness_bound():
    async def scenario():
        batcher = batcher_for(max_batch_size=8, max_queue_delay_ms=0, max_chunk_ms=50)
        device = Device(batcher)
        now = time.monotonic()
        # Both due, neither waited past the 50 ms bound: the earlier deadline wins, though its
        # queue's head came later.
        batcher.submit(make_job("relaxed", 0, 1, kernel=OTHER, deadline=now + 30, waited=0.02))
        batcher.submit(make_job("urgent", 10, 1, kernel=KERNEL, deadline=now + 5))
        first = await device.run_next(timeout=1.0)
        assert first.kernel == KERNEL
        await device.run_next(timeout=1.0)
        # A queue that has been due for longer than max_chunk_ms goes before earlier deadlines.
        batcher.submit(make_job("starved", 20, 1, kernel=OTHER, deadline=now + 30, waited=1.0))
        batcher.submit(make_job("urgent2", 30, 1, kernel=KERNEL, deadline=now + 5))
        third = await device.run_next(timeout=1.0)
        assert third.kernel == OTHER and device.batches[2] == [("starved", 0, 1)]
    asyncio.run(scenario())


def test_a_job_that_cannot_finish_before_its_deadline_is_refused_at_submission():
    async def scenario():
        batcher = batcher_for(max_batch_size=8, max_queue_delay_ms=60_000)
        device = Device(batcher, seconds_per_row=ROW_SECONDS)
        await measured(batcher, device)
        refused = counted("explainserve_rejected_total", reason="deadline")
        depth = counted("explainserve_queue_depth", model=MODEL)
        now = time.monotonic()
        batcher.submit(make_job("queued", 0, 8, deadline=now + 1.0))  # 0.5 s of work
        batcher.submit(make_job("later", 10, 8, deadline=now + 60))  # ranks after the next
        # 20 rows (1.25 s) behind the 8 queued ahead (0.5 s): 1.75 s > 1.5 s left.
        with pytest.raises(DeadlineExceeded) as error:
            batcher.submit(make_job("doomed", 20, 20, deadline=now + 1.5))
        message = error.value.message
        assert error.value.status == "DEADLINE_EXCEEDED"
        assert re.fullmatch(
            r"request refused: it cannot finish before its deadline: 1[45]\d\d ms left, "
            r"estimated 1750 ms \(20 rows of its own and 8 rows queued ahead, at the measured "
            r"62\.50 ms per row of its kernel, on 1 device\(s\)\)", message), message
        assert counted("explainserve_rejected_total", reason="deadline") == refused + 1
        assert counted("explainserve_queue_depth", model=MODEL) == depth + 2  # not queued
        # The same job fits where two devices drain the queue (0.875 s), and a job without a
        # deadline is never refused for time.
        batcher.workers = 2
        batcher.submit(fits := make_job("fits", 20, 20, deadline=now + 1.5))
        batcher.submit(make_job("patient", 40, 100))
        assert not fits.finished
    asyncio.run(scenario())


def test_a_queued_job_that_becomes_hopeless_is_dropped_before_it_runs():
    async def scenario():
        batcher = batcher_for(max_batch_size=8, max_queue_delay_ms=0, max_chunk_ms=1000)
        device = Device(batcher, seconds_per_row=ROW_SECONDS)
        await measured(batcher, device)
        dropped = counted("explainserve_rejected_total", reason="deadline")
        depth = counted("explainserve_queue_depth", model=MODEL)
        now = time.monotonic()
        # Alone it fits (5 rows, 0.3125 s of 0.5 s); a more urgent job of 4 rows (0.25 s)
        # then goes ahead of it, and 0.5625 s no longer fits.
        batcher.submit(victim := make_job("victim", 0, 5, deadline=now + 0.5))
        batcher.submit(urgent := make_job("urgent", 10, 4, deadline=now + 0.3))
        await device.run_next(timeout=1.0)
        assert device.batches[-1] == [("urgent", 0, 4)]
        assert urgent.finished and victim.finished
        with pytest.raises(DeadlineExceeded) as error:
            victim.future.result()
        assert error.value.message.startswith(
            "request dropped from the queue: it cannot finish before its deadline: ")
        assert "(5 rows of its own and 4 rows queued ahead" in error.value.message
        assert counted("explainserve_rejected_total", reason="deadline") == dropped + 1
        assert counted("explainserve_queue_depth", model=MODEL) == depth
        assert 0.0 not in device.rows_seen  # none of the victim's rows ran
    asyncio.run(scenario())


def test_a_lone_many_row_job_takes_whole_batches_and_others_get_chunks_again():
    async def scenario():
        # 62.5 ms per row against a 125 ms budget: 2 rows a chunk while others wait.
        batcher = batcher_for(max_batch_size=16, max_queue_delay_ms=200, max_chunk_ms=125)
        device = Device(batcher, seconds_per_row=ROW_SECONDS)
        await measured(batcher, device)
        started = time.monotonic()
        batcher.submit(alone := make_job("alone", 0, 46))
        for _ in range(5):
            await device.run_next(timeout=1.0)
        elapsed = time.monotonic() - started
        # The chunk doubles while the job stays alone (2, 4, 8, 16, then the 16 left), and
        # only its first batch waits for max_queue_delay: nothing else could join the rest.
        assert [b[0][2] - b[0][1] for b in device.batches[2:]] == [2, 4, 8, 16, 16]
        assert alone.finished and values_of(alone) == [2.0 * row for row in range(46)]
        assert 0.2 <= elapsed < 0.35, elapsed
        # Another job arrives: both get budget-sized chunks at once, and growth starts over.
        batcher.submit(big := make_job("big", 100, 40, waited=1.0))
        await device.run_next(timeout=1.0)
        batcher.submit(small := make_job("small", 500, 1, waited=1.0))
        await device.run_next(timeout=1.0)
        await device.run_next(timeout=1.0)
        await device.run_next(timeout=1.0)
        assert small.finished
        assert device.batches[7:] == [[("big", 0, 2)], [("big", 2, 4), ("small", 0, 1)],
                                      [("big", 4, 6)], [("big", 6, 10)]]
    asyncio.run(scenario())
