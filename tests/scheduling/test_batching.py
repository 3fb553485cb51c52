"""Dynamic batching through a real server: coalescing, admission control, deadlines and
cancellation, and the settings of the model repository (the batcher alone: test_batcher.py)."""

from __future__ import annotations

import re
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import grpc
import numpy as np
import pytest
from explainserve.config import BatchingConfig
from explainserve_client import Client, ExplainServeError
from support import (explain_concurrently, random_input, random_inputs, running_server,
                     tiny_config)


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return response.read().decode()


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{name}(?:{{(.*)}})? (\S+)$", line)
        if match and all(f'{k}="{v}"' in (match.group(1) or "") for k, v in labels.items()):
            total += float(match.group(2))
    return total


def test_concurrent_requests_are_coalesced_and_equal_their_solo_results():
    inputs = random_inputs(8, (3, 8, 8), seed=1)
    model = tiny_config("coalesce",
                        batching=BatchingConfig(max_batch_size=8, max_queue_delay_ms=500))
    with running_server((model,), metrics_port=0) as server:
        before = scrape(server.server.metrics_port)
        together = explain_concurrently(server.address, inputs, "coalesce",
                                        targets=[0, 1, 2, 3, 0, 1, 2, 3])
        after = scrape(server.server.metrics_port)
        with Client(server.address) as client:
            alone = [client.explain(image, model="coalesce", method="gradcam", targets=[t])
                     for image, t in zip(inputs, [0, 1, 2, 3, 0, 1, 2, 3])]
    batches = metric(after, "explainserve_batch_size_count", model="coalesce") - \
        metric(before, "explainserve_batch_size_count", model="coalesce")
    rows = metric(after, "explainserve_batch_size_sum", model="coalesce") - \
        metric(before, "explainserve_batch_size_sum", model="coalesce")
    assert rows == 8 and batches <= 2  # 8 requests shared at most two passes
    for shared, solo in zip(together, alone):
        # Equal up to float32 rounding: a batched convolution may sum in another order, and
        # Grad-CAM's weighted sum cancels, so rounding is relative to the map's peak.
        peak = float(np.abs(solo[0].attribution).max())
        np.testing.assert_allclose(shared[0].attribution, solo[0].attribution, rtol=1e-5,
                                   atol=1e-5 * peak)
        assert shared[0].target == solo[0].target


def test_a_full_queue_answers_resource_exhausted_with_a_retry_hint():
    model = tiny_config("full", "build_slow", batching=BatchingConfig(
        max_batch_size=1, max_queue_delay_ms=0, max_queue_size=2))
    with running_server((model,)) as server:
        results = explain_concurrently(server.address, random_inputs(8, (3, 8, 8)), "full")
        rejected = [r for r in results if isinstance(r, ExplainServeError)]
        assert rejected and all(r.code == grpc.StatusCode.RESOURCE_EXHAUSTED for r in rejected)
        assert "queue of model 'full' is full" in rejected[0].details
        assert len(results) - len(rejected) >= 3  # one running and two queued were served
        # The retry hint travels as trailing metadata, as gRPC's retry policy expects (seen
        # here without the client's default policy, which would act on it).
        with Client(server.address, service_config=None) as client:
            calls = []
            def raw_call(image):
                request = client.explain_request(image, "full", "gradcam")
                call = client.stub.Explain(request, timeout=30)
                try:
                    list(call)
                except grpc.RpcError:
                    pass
                return call
            with ThreadPoolExecutor(6) as pool:
                calls = list(pool.map(raw_call, random_inputs(6, (3, 8, 8), seed=2)))
        hints = [dict(call.trailing_metadata() or ()).get("grpc-retry-pushback-ms") for call in calls
                 if call.code() == grpc.StatusCode.RESOURCE_EXHAUSTED]
        assert hints and all(hint and int(hint) > 0 for hint in hints)


def test_expired_and_cancelled_requests_never_reach_a_device():
    model = tiny_config("slow", "build_slow", batching=BatchingConfig(
        max_batch_size=1, max_queue_delay_ms=0, max_queue_size=1))
    with running_server((model,), metrics_port=0) as server, Client(server.address) as client:
        before = scrape(server.server.metrics_port)
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(client.explain, random_input((3, 8, 8)), model="slow",
                                method="gradcam")
            time.sleep(0.1)  # the first request is on the worker now
            with pytest.raises(ExplainServeError) as expired:
                client.explain(random_input((3, 8, 8), seed=3), model="slow", method="gradcam",
                               timeout=0.15)
            assert expired.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
            first.result()
        # The queue (size 1) is free again: the expired call released its slot.
        client.explain(random_input((3, 8, 8), seed=4), model="slow", method="gradcam")
        after = scrape(server.server.metrics_port)
    rows = metric(after, "explainserve_batch_size_sum", model="slow") - \
        metric(before, "explainserve_batch_size_sum", model="slow")
    assert rows == 2  # the first and the last request; the expired one never ran
    dropped = metric(after, "explainserve_rejected_total") - metric(before, "explainserve_rejected_total")
    assert dropped >= 1


def test_batching_settings_come_from_the_model_repository(tmp_path):
    from explainserve.config import load_model_repository
    (tmp_path / "models.toml").write_text(
        '[models.a]\narch = "python:tiny_models:build_linear"\nnum_classes = 4\ninput_size = 8\n'
        "max_batch_size = 3\nmax_queue_delay_ms = 7.5\nmax_queue_size = 9\n")
    (config,) = load_model_repository(tmp_path / "models.toml")
    assert config.batching == replace(BatchingConfig(), max_batch_size=3, max_queue_delay_ms=7.5,
                                      max_queue_size=9)


def test_a_full_queue_refuses_before_decoding_the_request():
    """An overloaded server answers RESOURCE_EXHAUSTED without decoding (here: corrupt image
    bytes, which would be INVALID_ARGUMENT), so 256 clients cannot turn refusals into load."""
    model = tiny_config("closed", batching=BatchingConfig(max_queue_size=0))
    with running_server((model,)) as server, Client(server.address) as client:
        request = client.explain_request(b"not an image", "closed", "gradcam")
        with pytest.raises(grpc.RpcError) as refused:
            list(client.stub.Explain(request, timeout=30))
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert int(dict(refused.value.trailing_metadata())["grpc-retry-pushback-ms"]) >= 10
