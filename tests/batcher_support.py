"""The batcher's unit-test kit (tests/scheduling/): a fake kernel, jobs whose row values say
which rows came back where, and a fake device that stands in for a worker."""

from __future__ import annotations

import asyncio
import time

import torch
from explainserve.config import BatchingConfig
from explainserve.methods.base import Kernel, TensorRows
from explainserve.scheduling.batcher import Batch, Batcher, Job
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
