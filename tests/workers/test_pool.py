"""The worker pool (workers/pool.py) through a real server: a device out-of-memory error splits
the batch and retries, a failing row fails only its own request, and a dead worker is replaced
while its requests end UNAVAILABLE."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from explainserve.config import BatchingConfig, FaultInjection
from explainserve_client import Client, ExplainServeError
from support import explain_concurrently, random_inputs, running_server, tiny_config


def test_out_of_memory_splits_the_batch_and_gives_the_clean_results(models_by_name):
    inputs = random_inputs(8, (3, 8, 8), seed=5)
    clean_model = tiny_config("m", weights=models_by_name["tiny_cnn"].weights,
                              batching=BatchingConfig(max_batch_size=8, max_queue_delay_ms=300))
    with running_server((clean_model,)) as server:
        clean = explain_concurrently(server.address, inputs, "m", targets=[1] * 8)
    with running_server((clean_model,), faults=FaultInjection(oom_above_rows=2)) as server:
        split = explain_concurrently(server.address, inputs, "m", targets=[1] * 8)
    for a, b in zip(clean, split):
        np.testing.assert_allclose(a[0].attribution, b[0].attribution, rtol=1e-5, atol=1e-9)


def test_a_failing_sample_fails_only_its_own_request():
    inputs = random_inputs(6, (3, 8, 8), seed=6)
    inputs[2][0, 0, 0] = 7.25
    model = tiny_config("p", batching=BatchingConfig(max_batch_size=8, max_queue_delay_ms=300))
    with running_server((model,), faults=FaultInjection(poison_value=7.25)) as server:
        results = explain_concurrently(server.address, inputs, "p", targets=[0] * 6)
        with Client(server.address) as client:
            alone = client.explain(inputs[0], model="p", method="gradcam", targets=[0])
    assert isinstance(results[2], ExplainServeError)
    assert results[2].code == grpc.StatusCode.INTERNAL
    assert all(not isinstance(r, ExplainServeError) for i, r in enumerate(results) if i != 2)
    np.testing.assert_allclose(results[0][0].attribution, alone[0].attribution, rtol=1e-5, atol=1e-9)


def test_a_dead_worker_is_replaced_and_its_requests_end_unavailable():
    inputs = random_inputs(2, (3, 8, 8), seed=7)
    inputs[0][0, 0, 0] = -3.5
    model = tiny_config("k")
    with running_server((model,), faults=FaultInjection(kill_value=-3.5)) as server, \
            Client(server.address) as client:
        with pytest.raises(ExplainServeError) as died:
            client.explain(inputs[0], model="k", method="gradcam")
        assert died.value.code == grpc.StatusCode.UNAVAILABLE
        assert client.explain(inputs[1], model="k", method="gradcam")[0].heatmap.shape == (8, 8)
        assert server.server._pool.restarts == 1
