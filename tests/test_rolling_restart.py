"""Rolling restart: three server processes replaced one at a time under steady load (16
Explain callers and an Embed stream at a time) cost no failed call, and every Embed item is
answered once (benchmarks/rolling_restart.py is the scenario; its full run writes the latency
figures of docs/operations.md). And the drain delay: after SIGTERM the server reports
NOT_SERVING while it still serves, then refuses new calls."""

from __future__ import annotations

import asyncio
import time

import grpc
import numpy as np
import pytest
from explainserve.app import BackgroundServer
from explainserve.config import ServerConfig
from explainserve_client import Client, ExplainServeError
from grpc_health.v1 import health_pb2, health_pb2_grpc
from ops_support import plain_environment
from support import ROOT, TESTS, load_script, tiny_config

REPOSITORY = """\
[models.tiny]
arch = "python:tiny_models:build_conv_gap_linear"
num_classes = 4
input_size = 16
"""


def test_a_rolling_restart_under_load_fails_no_call(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # the script imports results.py
    scenario = load_script(ROOT / "benchmarks" / "rolling_restart.py", "rolling_restart_script")
    (tmp_path / "models.toml").write_text(REPOSITORY)
    settings = {**scenario.settings_for(quick=True), "model": "tiny", "method": "saliency",
                "size": 16, "embed_items_per_stream": 16, "warm_s": 1.0, "settle_s": 1.0,
                "step_pause_s": 0.5}
    figures = scenario.run(settings, repository=tmp_path / "models.toml",
                           env=plain_environment(PYTHONPATH=str(TESTS)))
    assert figures["explain_failures"] == 0, figures["failure_examples"]
    assert figures["embed_stream_failures"] == 0, figures["embed_failure_examples"]
    assert figures["calls_during"] > 0 and figures["embed_streams"] > 0
    assert figures["embed_streams_answered_exactly_once"] == figures["embed_streams"]
    assert [step["exit_code"] for step in figures["steps"]] == [0, 0, 0]
    assert figures["server_errors"] == []


def test_the_drain_delay_reports_not_serving_while_it_still_serves():
    config = ServerConfig(models=(tiny_config("drained"),), host="127.0.0.1", port=0,
                          metrics_port=None, device="cpu", drain_delay_s=1.5)
    background = BackgroundServer(config)
    background.__enter__()
    image = np.zeros((3, 8, 8), np.float32)
    try:
        with Client(background.address, timeout=10, service_config=None) as client, \
                grpc.insecure_channel(background.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            client.explain(image, model="drained", method="saliency")
            signalled = time.monotonic()
            stopping = asyncio.run_coroutine_threadsafe(background.server.stop(grace=1.0),
                                                        background._loop)
            time.sleep(0.3)
            # Within the delay: NOT_SERVING to a health check, and calls are still served.
            status = health.Check(health_pb2.HealthCheckRequest(), timeout=5).status
            assert status == health_pb2.HealthCheckResponse.NOT_SERVING
            (served,) = client.explain(image, model="drained", method="saliency")
            assert np.isfinite(served.attribution).all()
            assert time.monotonic() - signalled < 1.5
            # After it: new calls are refused (UNAVAILABLE), or the listener is gone.
            time.sleep(1.5 - (time.monotonic() - signalled) + 0.2)
            with pytest.raises(ExplainServeError) as refused:
                client.explain(image, model="drained", method="saliency")
            assert refused.value.code == grpc.StatusCode.UNAVAILABLE
            stopping.result(timeout=30)
    finally:
        background._shutdown_loop()
