"""The batching worker pool: coalescing, admission control, deadlines, cancellation, faults."""

from __future__ import annotations

import re
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import grpc
import numpy as np
import pytest
from explainserve.config import BatchingConfig, FaultInjection, ModelConfig
from explainserve_client import Client, ExplainServeError
from support import running_server


def tiny(name: str, arch: str = "python:tiny_models:build_conv_gap_linear", **batching) -> ModelConfig:
    return ModelConfig(name=name, arch=arch, weights=None, num_classes=4, input_size=(8, 8),
                       mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
                       batching=BatchingConfig(**batching))


def images(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((3, 8, 8)).astype(np.float32) for _ in range(count)]


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


def explain_all(address: str, inputs: list, model: str, method: str = "gradcam", targets=None):
    """Send every input at once from its own thread; returns results or the errors raised."""
    def one(index_image):
        index, image = index_image
        with Client(address, timeout=60) as client:
            try:
                return client.explain(image, model=model, method=method,
                                      targets=None if targets is None else [targets[index]])
            except ExplainServeError as error:
                return error
    with ThreadPoolExecutor(len(inputs)) as pool:
        return list(pool.map(one, enumerate(inputs)))


def test_concurrent_requests_are_coalesced_and_equal_their_solo_results():
    inputs = images(8, seed=1)
    model = tiny("coalesce", max_batch_size=8, max_queue_delay_ms=500)
    with running_server((model,), metrics_port=0) as server:
        before = scrape(server.server.metrics_port)
        together = explain_all(server.address, inputs, "coalesce", targets=[0, 1, 2, 3, 0, 1, 2, 3])
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
        # Equal up to float32 rounding: a batched convolution may sum in another order.
        np.testing.assert_allclose(shared[0].attribution, solo[0].attribution, rtol=1e-5, atol=1e-9)
        assert shared[0].target == solo[0].target


def test_a_full_queue_answers_resource_exhausted_with_a_retry_hint():
    model = tiny("full", arch="python:tiny_models:build_slow", max_batch_size=1,
                 max_queue_delay_ms=0, max_queue_size=2)
    with running_server((model,)) as server:
        results = explain_all(server.address, images(8), "full")
        rejected = [r for r in results if isinstance(r, ExplainServeError)]
        assert rejected and all(r.code == grpc.StatusCode.RESOURCE_EXHAUSTED for r in rejected)
        assert "queue of model 'full' is full" in rejected[0].details
        assert len(results) - len(rejected) >= 3  # one running and two queued were served
        # The retry hint travels as trailing metadata, as gRPC's retry policy expects.
        with Client(server.address) as client:
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
                calls = list(pool.map(raw_call, images(6, seed=2)))
        hints = [dict(call.trailing_metadata() or ()).get("grpc-retry-pushback-ms") for call in calls
                 if call.code() == grpc.StatusCode.RESOURCE_EXHAUSTED]
        assert hints and all(hint and int(hint) > 0 for hint in hints)


def test_expired_and_cancelled_requests_never_reach_a_device():
    model = tiny("slow", arch="python:tiny_models:build_slow", max_batch_size=1,
                 max_queue_delay_ms=0, max_queue_size=1)
    with running_server((model,), metrics_port=0) as server, Client(server.address) as client:
        before = scrape(server.server.metrics_port)
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(client.explain, images(1)[0], model="slow", method="gradcam")
            time.sleep(0.1)  # the first request is on the worker now
            with pytest.raises(ExplainServeError) as expired:
                client.explain(images(1, seed=3)[0], model="slow", method="gradcam", timeout=0.15)
            assert expired.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
            first.result()
        # The queue (size 1) is free again: the expired call released its slot.
        client.explain(images(1, seed=4)[0], model="slow", method="gradcam")
        after = scrape(server.server.metrics_port)
    rows = metric(after, "explainserve_batch_size_sum", model="slow") - \
        metric(before, "explainserve_batch_size_sum", model="slow")
    assert rows == 2  # the first and the last request; the expired one never ran
    dropped = metric(after, "explainserve_rejected_total") - metric(before, "explainserve_rejected_total")
    assert dropped >= 1


def test_out_of_memory_splits_the_batch_and_gives_the_clean_results(models_by_name):
    inputs = images(8, seed=5)
    clean_model = replace(tiny("m", max_batch_size=8, max_queue_delay_ms=300),
                          weights=models_by_name["tiny_cnn"].weights)
    with running_server((clean_model,)) as server:
        clean = explain_all(server.address, inputs, "m", targets=[1] * 8)
    with running_server((clean_model,), faults=FaultInjection(oom_above_rows=2)) as server:
        split = explain_all(server.address, inputs, "m", targets=[1] * 8)
    for a, b in zip(clean, split):
        np.testing.assert_allclose(a[0].attribution, b[0].attribution, rtol=1e-5, atol=1e-9)


def test_a_failing_sample_fails_only_its_own_request():
    inputs = images(6, seed=6)
    inputs[2][0, 0, 0] = 7.25
    model = tiny("p", max_batch_size=8, max_queue_delay_ms=300)
    with running_server((model,), faults=FaultInjection(poison_value=7.25)) as server:
        results = explain_all(server.address, inputs, "p", targets=[0] * 6)
        with Client(server.address) as client:
            alone = client.explain(inputs[0], model="p", method="gradcam", targets=[0])
    assert isinstance(results[2], ExplainServeError)
    assert results[2].code == grpc.StatusCode.INTERNAL
    assert all(not isinstance(r, ExplainServeError) for i, r in enumerate(results) if i != 2)
    np.testing.assert_allclose(results[0][0].attribution, alone[0].attribution, rtol=1e-5, atol=1e-9)


def test_a_dead_worker_is_replaced_and_its_requests_end_unavailable():
    inputs = images(2, seed=7)
    inputs[0][0, 0, 0] = -3.5
    model = tiny("k")
    with running_server((model,), faults=FaultInjection(kill_value=-3.5)) as server, \
            Client(server.address) as client:
        with pytest.raises(ExplainServeError) as died:
            client.explain(inputs[0], model="k", method="gradcam")
        assert died.value.code == grpc.StatusCode.UNAVAILABLE
        assert client.explain(inputs[1], model="k", method="gradcam")[0].heatmap.shape == (8, 8)
        assert server.server._pool.restarts == 1


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
    model = tiny("closed", max_queue_size=0)
    with running_server((model,)) as server, Client(server.address) as client:
        request = client.explain_request(b"not an image", "closed", "gradcam")
        with pytest.raises(grpc.RpcError) as refused:
            list(client.stub.Explain(request, timeout=30))
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert int(dict(refused.value.trailing_metadata())["grpc-retry-pushback-ms"]) >= 10
