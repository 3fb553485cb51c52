"""Lifecycle of a real server process: SIGTERM while calls are in flight loses none of them;
health flips at once, new calls are refused, exit code 0. Structured logs and request ids."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait

import grpc
import numpy as np
import pytest
from explainserve.logs import RequestIdFilter
from explainserve_client import Client
from explainserve_client._proto import explainer_pb2 as pb
from explainserve_client._proto import explainer_pb2_grpc as pb_grpc
from explainserve_client.client import ExplainServeError
from grpc_health.v1 import health_pb2, health_pb2_grpc
from ops_support import ServerProcess
from support import free_port, running_server

SLEEPY_REPOSITORY = """\
[models.sleepy]
arch = "python:tiny_models:build_sleepy"
num_classes = 4
input_size = 8
max_batch_size = 1
"""
CALLS = 6  # one device pass of 0.3 s each, one after the other (max_batch_size = 1)


class HealthWatch:
    """Streams grpc.health.v1 Watch in a thread and records (time, status) pairs."""

    def __init__(self, address: str) -> None:
        self.events: list[tuple[float, str]] = []
        self._channel = grpc.insecure_channel(address)
        self._stream = health_pb2_grpc.HealthStub(self._channel).Watch(health_pb2.HealthCheckRequest())
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for response in self._stream:
                name = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
                self.events.append((time.monotonic(), name))
        except grpc.RpcError:
            pass

    def first(self, status: str, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for when, name in self.events:
                if name == status:
                    return when
            time.sleep(0.01)
        raise TimeoutError(f"health never became {status}: {self.events}")

    def close(self) -> None:
        self._stream.cancel()
        self._channel.close()


def test_sigterm_drains_in_flight_calls_and_exits_zero(tmp_path):
    repository = tmp_path / "models.toml"
    repository.write_text(SLEEPY_REPOSITORY)
    port, health_port = free_port(), free_port()
    command = [sys.executable, "-m", "explainserve", "--log-format", "json", "--log-level", "DEBUG",
               "serve", "--models", str(repository), "--port", str(port), "--metrics-port", "0",
               "--health-port", str(health_port), "--device", "cpu", "--grace-period", "30"]
    address = f"127.0.0.1:{port}"
    with ServerProcess(command, address, log_path=tmp_path / "server.log") as server:
        server.wait_serving()
        watch = HealthWatch(f"127.0.0.1:{health_port}")
        watch.first("SERVING", timeout=10)
        with Client(address, timeout=60) as client, ThreadPoolExecutor(CALLS) as pool:
            calls = [pool.submit(client.explain, np.full((3, 8, 8), i, np.float32), model="sleepy",
                                 method="saliency", targets=[i % 4], request_id=f"in-flight-{i}")
                     for i in range(CALLS)]
            wait(calls, timeout=60, return_when="FIRST_COMPLETED")  # the device is busy now
            signalled = time.monotonic()
            server.terminate()
            not_serving = watch.first("NOT_SERVING", timeout=10)
            still_running = sum(not call.done() for call in calls)
            with Client(address, timeout=10) as late:
                with pytest.raises(ExplainServeError) as refused:
                    late.explain(np.zeros((3, 8, 8), np.float32), model="sleepy", method="saliency")
            results = [call.result(timeout=60) for call in calls]  # raises if any was lost
        exit_code = server.wait(timeout=60)
        watch.close()
        log = server.log()

    assert exit_code == 0, log
    assert not_serving - signalled < 2.0  # at once, not after the drain
    assert still_running > 0, "SIGTERM came after every call had finished; nothing was in flight"
    assert refused.value.code == grpc.StatusCode.UNAVAILABLE
    assert [item.target for (item,) in results] == [i % 4 for i in range(CALLS)]
    assert all(np.isfinite(item.attribution).all() for (item,) in results)

    records = [json.loads(line) for line in log.splitlines() if line.strip()]  # every line is JSON
    assert {"time", "level", "logger", "message", "request_id"} <= set(records[0])
    tagged = {record["request_id"] for record in records}
    assert {f"in-flight-{i}" for i in range(CALLS)} <= tagged
    messages = "\n".join(record["message"] for record in records)
    assert "sleepy" in messages and "cpu" in messages and "limits" in messages
    assert "draining" in messages and "stopped" in messages


class CapturedRecords(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.addFilter(RequestIdFilter())
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def captured_logs():
    handler = CapturedRecords()
    logger = logging.getLogger("explainserve")
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


def test_request_id_is_echoed_in_trailers_and_tags_the_calls_log_lines(server, captured_logs):
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.ExplainerServiceStub(channel)
        _, call = stub.ListModels.with_call(pb.ListModelsRequest(), timeout=10,
                                            metadata=(("x-request-id", "trace-abc.123"),))
        assert ("x-request-id", "trace-abc.123") in call.trailing_metadata()
        with pytest.raises(grpc.RpcError) as failed:
            stub.GetModel(pb.GetModelRequest(name="no-such-model"), timeout=10,
                          metadata=(("x-request-id", "trace-failed"),))
        assert failed.value.code() == grpc.StatusCode.NOT_FOUND
        assert ("x-request-id", "trace-failed") in failed.value.trailing_metadata()
    deadline = time.monotonic() + 5  # an aborted call logs its end just after the client hears
    while time.monotonic() < deadline:
        ids = {record.request_id for record in captured_logs if record.name.endswith("servicer")}
        if {"trace-abc.123", "trace-failed"} <= ids:
            break
        time.sleep(0.02)
    assert {"trace-abc.123", "trace-failed"} <= ids


@pytest.mark.parametrize("hostile", ["two words", "x" * 200, "quote\"json", "a,b;c", "{}"])
def test_a_malformed_request_id_is_replaced(server, hostile):
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.ExplainerServiceStub(channel)
        _, call = stub.ListModels.with_call(pb.ListModelsRequest(), timeout=10,
                                            metadata=(("x-request-id", hostile),))
        echoed = dict(call.trailing_metadata())["x-request-id"]
    assert echoed != hostile and len(echoed) == 32 and echoed.isalnum()


def test_connections_age_out_without_failing_calls(models_by_name):
    from explainserve.api.transport import server_options
    from explainserve.config import ServerConfig
    options = dict(server_options(ServerConfig(max_connection_age_s=300, grace_period_s=25)))
    assert options["grpc.max_connection_age_ms"] == 300_000
    assert options["grpc.max_connection_age_grace_ms"] == 25_000  # default: the drain grace
    assert "grpc.max_connection_age_ms" not in dict(server_options(ServerConfig()))
    # A real server whose connections close every 0.3 s: the client reconnects underneath and
    # no call fails.
    with running_server((models_by_name["linear"],), max_connection_age_s=0.3,
                        max_connection_age_grace_s=5) as server:
        with Client(server.address, timeout=10) as client:
            deadline = time.monotonic() + 1.5
            calls = 0
            while time.monotonic() < deadline:
                assert [model.name for model in client.list_models()] == ["linear"]
                calls += 1
                time.sleep(0.05)
    assert calls > 10
