"""torch.fx patches nn.Module for the whole process while it traces; hooks' trace gate keeps
every model pass (a worker's batch) apart from a trace."""

from __future__ import annotations

import threading

import torch
from torch import fx, nn

from explainserve import hooks


def small_network() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 2)).eval()


def test_passes_beside_traces_never_see_the_tracer():
    served, traced = small_network(), small_network()
    errors: list[BaseException] = []
    stop = threading.Event()

    def serve() -> None:
        with torch.no_grad():
            while not stop.is_set():
                try:
                    with hooks.model_passes():
                        served(torch.zeros(1, 3, 8, 8))
                except BaseException as error:  # noqa: BLE001 - the test collects them
                    errors.append(error)
                    return

    workers = [threading.Thread(target=serve) for _ in range(2)]
    for worker in workers:
        worker.start()
    try:
        for _ in range(30):
            with hooks.fx_tracing():
                fx.symbolic_trace(traced)
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=30)
    assert errors == []


def test_traces_started_inside_passes_on_two_threads_do_not_wait_on_each_other():
    both_inside = threading.Barrier(2, timeout=30)
    done: list[str] = []

    def trace_from_a_pass(name: str) -> None:
        with hooks.model_passes():
            both_inside.wait()  # each thread holds a share of the gate, then wants it alone
            with hooks.fx_tracing():
                fx.symbolic_trace(small_network())
            with hooks.model_passes():  # a nested pass after the trace does not wait
                pass
        done.append(name)

    threads = [threading.Thread(target=trace_from_a_pass, args=(name,)) for name in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(done) == ["a", "b"]
