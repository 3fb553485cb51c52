"""The client's channel (client/explainserve_client/channel.py): targets for several replicas,
round_robin balancing and the documented retry policy by default, through real servers."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from explainserve.config import FaultInjection
from explainserve_client import Client, ExplainServeError
from explainserve_client.channel import SERVICE_CONFIG, channel_options, target_of
from support import ROOT, random_input, running_server, tiny_config

MODEL = tiny_config("balanced", "build_linear")


def test_a_list_of_addresses_becomes_one_balanced_target():
    assert target_of("127.0.0.1:5000") == "127.0.0.1:5000"
    assert target_of("dns:///explainserve.ns.svc:50051") == "dns:///explainserve.ns.svc:50051"
    assert target_of(["127.0.0.1:1", "127.0.0.2:2"]) == "ipv4:127.0.0.1:1,127.0.0.2:2"
    assert target_of("127.0.0.1:1, 127.0.0.2:2") == "ipv4:127.0.0.1:1,127.0.0.2:2"
    assert target_of(["[::1]:1", "::1:2"]) == "ipv6:[::1]:1,[::1]:2"
    assert target_of(["localhost:1", "127.0.0.1:2"]).startswith("ipv")
    with pytest.raises(ValueError, match="'nowhere' is not host:port"):
        target_of(["nowhere", "127.0.0.1:2"])
    with pytest.raises(ValueError, match="mix IPv4 and IPv6"):
        target_of(["127.0.0.1:1", "[::1]:2"])


def test_the_default_service_config_is_the_documented_one():
    assert SERVICE_CONFIG == json.loads((ROOT / "docs" / "service_config.json").read_text())
    options = dict(channel_options((), SERVICE_CONFIG))
    assert json.loads(options["grpc.service_config"]) == SERVICE_CONFIG
    mine = '{"loadBalancingConfig": [{"pick_first": {}}]}'
    assert dict(channel_options([("grpc.service_config", mine)], SERVICE_CONFIG))[
        "grpc.service_config"] == mine  # the caller's own config wins
    assert "grpc.service_config" not in dict(channel_options((), None))


def counting(background) -> list[int]:
    """Counts the jobs a server's batcher accepts (both servers share one metrics registry)."""
    batcher = background.server._batcher
    count = [0]
    submit = batcher.submit

    def counted(job):
        count[0] += 1
        submit(job)
    batcher.submit = counted
    return count


def test_calls_are_spread_over_every_address():
    with running_server((MODEL,)) as first, running_server((MODEL,)) as second:
        counts = counting(first), counting(second)
        with Client([first.address, second.address], timeout=30) as client:
            for seed in range(20):
                client.explain(random_input((3, 8, 8), seed), model="balanced",
                               method="saliency", targets=[0])
        assert counts[0][0] >= 5 and counts[1][0] >= 5, counts
        assert counts[0][0] + counts[1][0] == 20


def test_a_replica_shut_down_mid_load_costs_no_failed_call():
    """Eight callers keep both replicas busy; one replica drains and stops. Calls it refuses
    while draining (UNAVAILABLE) are retried on the other by the default policy, calls it is
    running finish within its grace, and round_robin stops picking it once it is gone."""
    first_cm, second_cm = running_server((MODEL,)), running_server((MODEL,))
    first, second = first_cm.__enter__(), second_cm.__enter__()
    failures: list[BaseException] = []
    done = [0]
    stop = threading.Event()
    try:
        with Client([first.address, second.address], timeout=30) as client:
            def caller(seed: int) -> None:
                while not stop.is_set():
                    try:
                        client.explain(random_input((3, 8, 8), seed), model="balanced",
                                       method="saliency", targets=[0])
                        done[0] += 1
                    except Exception as error:  # noqa: BLE001 - every failure counts
                        failures.append(error)
            with ThreadPoolExecutor(8) as pool:
                for seed in range(8):
                    pool.submit(caller, seed)
                time.sleep(1.0)
                before = done[0]
                first_cm.__exit__(None, None, None)  # NOT_SERVING, drain, stop
                time.sleep(1.5)
                stop.set()
        assert failures == [], failures[:3]
        assert before > 0 and done[0] > before
    finally:
        stop.set()
        second_cm.__exit__(None, None, None)


def test_update_targets_moves_new_calls_to_the_new_list_and_lets_running_calls_finish():
    with running_server((MODEL,)) as old, running_server((MODEL,)) as new:
        old_count, new_count = counting(old), counting(new)
        with Client(old.address, timeout=30) as client:
            client.explain(random_input((3, 8, 8)), model="balanced", method="saliency", targets=[0])
            client.update_targets([new.address])
            for seed in range(4):
                client.explain(random_input((3, 8, 8), seed), model="balanced",
                               method="saliency", targets=[0])
        assert old_count[0] == 1 and new_count[0] == 4


def test_resource_exhausted_without_a_pushback_is_not_retried():
    """A device out of memory on a single row answers RESOURCE_EXHAUSTED with the pushback -1:
    the default policy retries a full queue (it has a pushback) but not this."""
    with running_server((MODEL,), faults=FaultInjection(oom_above_rows=0)) as server:
        count = counting(server)
        with Client(server.address, timeout=30) as client:
            with pytest.raises(ExplainServeError) as refused:
                client.explain(random_input((3, 8, 8)), model="balanced", method="saliency",
                               targets=[0])
        assert refused.value.code.name == "RESOURCE_EXHAUSTED"
        assert "out of memory for a single row" in refused.value.details
        assert count[0] == 1  # one attempt
