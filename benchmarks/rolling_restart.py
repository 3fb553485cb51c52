"""A rolling restart under steady load: three server processes on loopback, replaced one at a
time while 16 callers send Explain calls and one more keeps Embed streams open. Writes
docs/results/rolling_restart.json (failed calls, Embed items answered, latency percentiles
before and during the rollout):

    python benchmarks/rolling_restart.py [--quick] [--out FILE.json]

Each step does what a Kubernetes Deployment with maxSurge 1 / maxUnavailable 0 and a headless
Service does: the replacement (started ahead, on a new port) becomes SERVING and joins the
client's address list; the old server gets SIGTERM; the address list drops it `resolver_lag_s`
later (a resolver that learns of the removal after the signal: the worst order, which the
manifest's preStop sleep avoids). The client is one `explainserve_client.Client` whose address
list is updated with `update_targets` (a fresh round_robin channel per list, as a re-resolved
DNS answer gives; calls already running finish on the previous channel). The servers run with
the manifest's drain settings (deploy/base/deployment.yaml): --grace-period, --drain-delay and
a max connection age, here shortened so that connections also age out during the run. Every
replica is warmed up (one Explain, one Embed) before it takes traffic; see warm_up.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from explainserve.cli.healthcheck import check
from explainserve_client import Client

from results import add_out_argument, write_result  # benchmarks/ is on the path

NAME = "rolling_restart"
ROOT = Path(__file__).resolve().parents[1]


def settings_for(quick: bool) -> dict:
    return {
        "replicas": 3, "explain_callers": 16, "embed_callers": 1,
        "embed_items_per_stream": 32, "model": "demo", "method": "gradcam", "size": 64,
        "input": "3x64x64 float32 tensor", "warm_s": 2.0 if quick else 5.0,
        "settle_s": 2.0 if quick else 5.0, "step_pause_s": 1.0 if quick else 3.0,
        "resolver_lag_s": 0.5,
        # The manifest's drain settings (deploy/base/deployment.yaml), but a max connection
        # age of seconds instead of minutes, so that connections also age out under load.
        "server_args": ["--grace-period", "25", "--drain-delay", "1",
                        "--max-connection-age", "3", "--max-connection-age-grace", "30"],
        "call_timeout_s": 30.0,
    }


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """`python -m explainserve serve` on a free port, logging to a file."""

    def __init__(self, repository: Path | None, server_args: list[str], log_dir: Path,
                 env: dict[str, str] | None) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.log_path = log_dir / f"server-{self.port}.log"
        models = ["--models", str(repository)] if repository else []
        command = [sys.executable, "-m", "explainserve", "--log-level", "INFO", "serve",
                   *models, "--port", str(self.port), "--metrics-port", "0", "--device", "cpu",
                   *server_args]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log,
                                            stderr=subprocess.STDOUT)

    def wait_serving(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server {self.address} exited with "
                                   f"{self.process.returncode}:\n{self.log()}")
            if check(self.address, timeout=1.0) == "SERVING":
                return
            time.sleep(0.2)
        raise TimeoutError(f"server {self.address} not SERVING after {timeout}s:\n{self.log()}")

    def terminate(self) -> None:
        self.process.send_signal(signal.SIGTERM)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)


@dataclass
class Record:
    """What the callers saw: every call's (start, end, error or None), every Embed stream's
    items sent and the ids that came back."""

    calls: list[tuple[float, float, str | None]] = field(default_factory=list)
    streams: list[tuple[list[str], list[str], str | None]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def explain_caller(client: Client, seed: int, settings: dict, stop: threading.Event,
                   record: Record) -> None:
    shape = (3, settings["size"], settings["size"])
    image = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    while not stop.is_set():
        started = time.monotonic()
        error = None
        try:
            client.explain(image, model=settings["model"], method=settings["method"],
                           outputs=("heatmap",), timeout=settings["call_timeout_s"])
        except Exception as failure:  # noqa: BLE001 - every failure is a finding
            error = f"{type(failure).__name__}: {failure}"
        with record.lock:
            record.calls.append((started, time.monotonic(), error))


def embed_caller(client: Client, seed: int, settings: dict, stop: threading.Event,
                 record: Record) -> None:
    rng = np.random.default_rng(1000 + seed)
    stream = 0
    while not stop.is_set():
        count = settings["embed_items_per_stream"]
        ids = [f"{seed}-{stream}-{item}" for item in range(count)]
        shape = (3, settings["size"], settings["size"])
        images = [rng.standard_normal(shape).astype(np.float32) for _ in ids]
        error, answered = None, []
        try:
            embedding = client.embed(images, model=settings["model"], ids=ids,
                                     timeout=settings["call_timeout_s"])
            answered = list(embedding.ids)
            if embedding.failures:
                error = f"{len(embedding.failures)} items failed: {embedding.failures[0]}"
        except Exception as failure:  # noqa: BLE001
            error = f"{type(failure).__name__}: {failure}"
        with record.lock:
            record.streams.append((ids, answered, error))
        stream += 1


def warm_up(address: str, settings: dict) -> None:
    """One Explain and one Embed call on a replica before it takes traffic, as a readiness
    gate would: the first Embed stream of a server traces the model with torch.fx, which
    patches torch.nn.Module.__call__ process-wide while it runs, and a forward pass on a
    worker thread at that moment fails (INTERNAL); warmed, the trace is cached."""
    image = np.zeros((3, settings["size"], settings["size"]), np.float32)
    with Client(address, timeout=120) as client:
        client.explain(image, model=settings["model"], method=settings["method"])
        client.embed([image], model=settings["model"], ids=["warm-up"])


def run(settings: dict, repository: Path | None = None,
        env: dict[str, str] | None = None) -> dict:
    """The whole scenario; returns the figures (the test asserts on them too)."""
    replicas = settings["replicas"]
    with tempfile.TemporaryDirectory() as scratch:
        logs = Path(scratch)
        # The replacements boot while the first replicas serve; each joins in its own step.
        servers = [Server(repository, settings["server_args"], logs, env)
                   for _ in range(2 * replicas)]
        try:
            for server in servers:
                server.wait_serving()
                warm_up(server.address, settings)
            figures = rollout(servers[:replicas], servers[replicas:], settings)
            for server in servers:
                server.kill()
            # Server-side ERROR lines and tracebacks: a clean rollout has none.
            figures["server_errors"] = [line for server in servers
                                        for line in server.log().splitlines()
                                        if " ERROR " in line or "Traceback" in line][:20]
            if figures["server_errors"] or figures["explain_failures"]:
                logs_copy = Path(tempfile.gettempdir()) / "explainserve-rolling-restart-logs"
                logs_copy.mkdir(exist_ok=True)
                for server in servers:
                    (logs_copy / server.log_path.name).write_text(server.log())
                figures["server_logs"] = str(logs_copy)
            return figures
        except BaseException:
            for server in servers:
                sys.stderr.write(f"--- {server.address}\n{server.log()[-3000:]}\n")
            raise
        finally:
            for server in servers:
                server.kill()


def rollout(old: list[Server], new: list[Server], settings: dict) -> dict:
    record = Record()
    stop = threading.Event()
    current = list(old)
    steps = []
    addresses = [server.address for server in current]
    with Client(addresses, timeout=settings["call_timeout_s"]) as client:
        callers = settings["explain_callers"] + settings["embed_callers"]
        with ThreadPoolExecutor(callers) as pool:
            for seed in range(settings["explain_callers"]):
                pool.submit(explain_caller, client, seed, settings, stop, record)
            for seed in range(settings["embed_callers"]):
                pool.submit(embed_caller, client, seed, settings, stop, record)
            time.sleep(settings["warm_s"])
            rollout_started = time.monotonic()
            for retiring, replacement in zip(old, new):
                current.append(replacement)  # Ready: the Service lists it
                client.update_targets([server.address for server in current])
                signalled = time.monotonic()
                retiring.terminate()
                time.sleep(settings["resolver_lag_s"])
                current.remove(retiring)  # the Service drops it; the client learns late
                client.update_targets([server.address for server in current])
                exit_code = retiring.process.wait(timeout=120)
                steps.append({"exit_code": exit_code,
                              "drained_s": time.monotonic() - signalled})
                time.sleep(settings["step_pause_s"])
            rollout_ended = time.monotonic()
            time.sleep(settings["settle_s"])
            stop.set()
    return summarise(record, steps, rollout_started, rollout_ended)


def summarise(record: Record, steps: list[dict], started: float, ended: float) -> dict:
    during = [end - start for start, end, error in record.calls
              if error is None and end >= started and start <= ended]
    before = [end - start for start, end, error in record.calls if error is None and end < started]
    failures = [error for _, _, error in record.calls if error is not None]
    stream_failures = [error for _, _, error in record.streams if error is not None]
    items_sent = sum(len(sent) for sent, _, _ in record.streams)
    answered_once = sum(sorted(sent) == sorted(answered) for sent, answered, _ in record.streams)

    def percentile(values: list[float], q: float) -> float | None:
        return float(np.percentile(values, q)) if values else None

    return {
        "explain_calls": len(record.calls), "explain_failures": len(failures),
        "failure_examples": failures[:5],
        "embed_streams": len(record.streams), "embed_stream_failures": len(stream_failures),
        "embed_failure_examples": stream_failures[:5],
        "embed_items_sent": items_sent,
        "embed_streams_answered_exactly_once": answered_once,
        "rollout_s": ended - started, "steps": steps,
        "p50_before_s": percentile(before, 50), "p99_before_s": percentile(before, 99),
        "p50_during_s": percentile(during, 50), "p99_during_s": percentile(during, 99),
        "calls_during": len(during),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter pauses")
    add_out_argument(parser, NAME)
    args = parser.parse_args()
    settings = settings_for(args.quick)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # six servers share the cores
    figures = run(settings, env=env)
    sys.stdout.write(f"{figures}\n")
    write_result(NAME, settings, figures, args.out)
    failed = figures["explain_failures"] + figures["embed_stream_failures"]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
