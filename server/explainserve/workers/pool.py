"""One worker per device; each owns a replica of every model there and runs one batch at a time.

The event loop never runs torch math: a worker hands each batch to its own single thread and
awaits it, so the gRPC layer stays responsive while the device works.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import nn

from explainserve import hooks, metrics
from explainserve.config import ConfigError, FaultInjection
from explainserve.errors import ResourceExhausted, ServiceError, Unavailable
from explainserve.models.registry import LoadedModel
from explainserve.scheduling.batcher import Batch, Batcher, Slice

logger = logging.getLogger(__name__)


def resolve_devices(spec: str, cpu_workers: int) -> list[torch.device]:
    """auto: every visible GPU, else CPU workers; cuda: every GPU; cuda:N or cpu: that one."""
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cpu":
        return [torch.device("cpu")] * max(1, cpu_workers)
    if spec == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda was asked for but no CUDA device is visible")
        return [torch.device("cuda", index) for index in range(torch.cuda.device_count())]
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise ConfigError(f"--device {spec!r} is not auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and (not torch.cuda.is_available() or
                                  (device.index or 0) >= torch.cuda.device_count()):
        raise ConfigError(f"--device {spec!r} is not a visible CUDA device")
    return [device]


class Replica:
    """A model's copy on one device, as kernels see it (methods.base.ModelHandle)."""

    def __init__(self, model: LoadedModel, device: torch.device) -> None:
        self.device = device
        layout = model.memory_format(device)
        self.module: nn.Module = copy.deepcopy(model.module).to(device, memory_format=layout).eval()
        self._layers = dict(self.module.named_modules())

    def layer(self, name: str) -> nn.Module:
        return self._layers[name]


class WorkerDied(Exception):
    """The worker cannot go on (a fatal device error, or injected by a test); the pool
    replaces it and its in-flight requests end with UNAVAILABLE."""


class Worker:
    def __init__(self, index: int, device: torch.device, models: list[LoadedModel],
                 batcher: Batcher, faults: FaultInjection | None = None) -> None:
        self.index = index
        self.name = f"{device}#{index}"
        self.device = device
        self.replicas = {model.name: Replica(model, device) for model in models}
        self._batcher = batcher
        self._faults = faults
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"worker-{index}")
        self._task: asyncio.Task | None = None

    def start(self, on_death: Callable[[Worker], None]) -> None:
        self._task = asyncio.get_running_loop().create_task(self._serve(on_death), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._executor.shutdown(wait=True)

    async def _serve(self, on_death: Callable[[Worker], None]) -> None:
        while True:
            batch = await self._batcher.next_batch()
            try:
                await self._run(batch, batch.slices)
            except WorkerDied as death:
                logger.error("worker %s died: %s", self.name, death)
                # A negative pushback tells gRPC's retry policy not to retry: the request may
                # itself be what killed the worker, and retried it would kill one per attempt.
                for job in {piece.job for piece in batch.slices}:
                    job.fail(Unavailable(f"worker {self.name} failed while running this request; "
                                         "retry", retry_after_ms=-1))
                self._executor.shutdown(wait=False)
                on_death(self)
                return
            # Let the callers of this batch run once before the next batch is formed, so an
            # iterative job (a Maximize step) queues its next rows beside the others' and
            # concurrent optimisations stay in one batch instead of taking turns.
            await asyncio.sleep(0)

    async def _run(self, batch: Batch, slices: tuple[Slice, ...]) -> None:
        """Run slices as one pass. An out-of-memory error splits them in halves; any other
        error is retried job by job so that it fails only the request that caused it."""
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            outputs = await loop.run_in_executor(self._executor, self._compute, batch, slices)
        except WorkerDied:
            raise
        except torch.OutOfMemoryError:
            if sum(s.stop - s.start for s in slices) == 1:
                # No pushback (-1): gRPC's policy retries RESOURCE_EXHAUSTED only with one.
                slices[0].job.fail(ResourceExhausted(
                    f"device {self.device} is out of memory for a single row; retry later",
                    retry_after_ms=-1))
                return
            logger.warning("out of memory on %s with %d rows; splitting", self.device,
                           sum(s.stop - s.start for s in slices))
            for half in _halves(slices):
                await self._run(batch, half)
            return
        except Exception as error:  # noqa: BLE001 - isolate the request that caused it
            jobs = list(dict.fromkeys(piece.job for piece in slices))
            if len(jobs) > 1:
                for job in jobs:
                    await self._run(batch, tuple(s for s in slices if s.job is job))
                return
            if not isinstance(error, ServiceError):
                logger.error("kernel %s failed: %r", batch.kernel.key, error, exc_info=error)
            jobs[0].fail(error)
            return
        elapsed = time.perf_counter() - started
        self._batcher.record_compute(batch, elapsed)
        metrics.COMPUTE_DURATION.labels(model=batch.model, device=str(self.device)).observe(elapsed)
        offset = 0
        for piece in slices:
            size = piece.stop - piece.start
            piece.job.deliver(piece.start, {k: v[offset:offset + size] for k, v in outputs.items()})
            offset += size

    def _compute(self, batch: Batch, slices: tuple[Slice, ...]) -> dict[str, torch.Tensor]:
        """On the worker thread: gather the rows, run the kernel, bring the outputs to the CPU."""
        parts = [piece.job.rows.take(piece.start, piece.stop) for piece in slices]
        inputs = torch.cat([p[0] for p in parts])
        targets = torch.cat([p[1] for p in parts])
        if self._faults is not None:
            _inject(self._faults, inputs)
        inputs = inputs.to(self.device, non_blocking=True)
        targets = targets.to(self.device, non_blocking=True)
        try:
            with hooks.model_passes():  # never beside a torch.fx trace (hooks._TraceGate)
                outputs = batch.kernel(self.replicas[batch.model], inputs, targets)
        except torch.AcceleratorError as error:
            raise WorkerDied(f"device error on {self.device}: {error}") from error
        result = {name: value.detach().to("cpu") for name, value in outputs.items()}
        if self.device.type == "cuda":
            metrics.DEVICE_MEMORY.labels(device=str(self.device)).set(
                torch.cuda.memory_allocated(self.device))
        return result


def _inject(faults: FaultInjection, inputs: torch.Tensor) -> None:
    """Test-only failures, decided from the batch's rows (see config.FaultInjection)."""
    firsts = inputs.flatten(1)[:, 0].tolist()
    if faults.kill_value is not None and faults.kill_value in firsts:
        raise WorkerDied("fault injection: kill_value seen")
    if faults.poison_value is not None and faults.poison_value in firsts:
        raise ValueError("fault injection: poison_value seen")
    if faults.oom_above_rows is not None and len(firsts) > faults.oom_above_rows:
        raise torch.OutOfMemoryError(f"fault injection: {len(firsts)} rows > {faults.oom_above_rows}")


def _halves(slices: tuple[Slice, ...]) -> list[tuple[Slice, ...]]:
    """Split a batch's rows into two halves, cutting a slice in two when needed."""
    rows = [(s.job, r) for s in slices for r in range(s.start, s.stop)]
    middle = len(rows) // 2
    return [_regroup(rows[:middle]), _regroup(rows[middle:])]


def _regroup(rows: list) -> tuple[Slice, ...]:
    slices: list[Slice] = []
    for job, row in rows:
        if slices and slices[-1].job is job and slices[-1].stop == row:
            slices[-1] = Slice(job, slices[-1].start, row + 1)
        else:
            slices.append(Slice(job, row, row + 1))
    return tuple(slices)


class WorkerPool:
    """All workers, started and stopped together; a worker that dies is replaced."""

    def __init__(self, devices: list[torch.device], models: list[LoadedModel], batcher: Batcher,
                 faults: FaultInjection | None = None) -> None:
        if all(device.type == "cpu" for device in devices):
            # CPU workers share the cores instead of each spawning a thread per core.
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // len(devices)))
        self._models = models
        self._batcher = batcher
        batcher.workers = len(devices)  # its deadline estimates: queued work drains in parallel
        self._faults = faults
        self.workers = [Worker(i, device, models, batcher, faults) for i, device in enumerate(devices)]
        self.restarts = 0

    @property
    def devices(self) -> list[str]:
        return sorted({str(worker.device) for worker in self.workers})

    def start(self) -> None:
        for worker in self.workers:
            worker.start(self._replace)

    def _replace(self, dead: Worker) -> None:
        replacement = Worker(dead.index, dead.device, self._models, self._batcher, self._faults)
        self.workers[self.workers.index(dead)] = replacement
        self.restarts += 1
        metrics.WORKER_RESTARTS.labels(device=str(dead.device)).inc()
        logger.warning("replaced worker %s", dead.name)
        replacement.start(self._replace)

    async def stop(self) -> None:
        await asyncio.gather(*(worker.stop() for worker in self.workers))
