"""The batching worker pool under load, each number a ratio to what the same run measures
in-process. One command reruns it all and writes docs/results/load.json:

    python benchmarks/load.py [--quick] [--out FILE.json]
    python benchmarks/load.py --only deadlines,alone [--size 64 --seconds 3]  # the scheduler's two

`--only` runs some scenarios (all, or any of: throughput, fairness, overload, memory,
deadlines, alone); --size and --seconds shrink a run to prove the script works.

A real server runs in its own process (`explainserve serve`); this process is the load
generator (grpc.aio, loopback only, bounded in count and time) and measures the in-process
floors with the same model and weights.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import torch
import torchvision
from explainserve_client import Client
from explainserve_client._proto import explainer_pb2_grpc as pb_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from explainserve.config import load_model_repository
from explainserve.models.registry import LoadedModel, load_model
from explainserve.workers.pool import Replica
from safetensors.torch import save_file

from results import add_out_argument, write_result  # benchmarks/ is on the path

NAME = "load"
DEADLINES_NAME = "load_deadlines"  # --only deadlines,alone
SIZE = 224
BATCHING = {"max_batch_size": 16, "max_queue_delay_ms": 2.0, "max_queue_size": 64}
MIXED_METHODS = ("gradcam", "saliency", "gradcam_plus_plus", "input_x_gradient",
                 "gradcam_counterfactual")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_repository(root: Path, size: int, arch: str = "resnet18", **batching) -> Path:
    """A torchvision model with random weights (seed 0), served under its own name."""
    torch.manual_seed(0)
    model = torchvision.models.get_model(arch, weights=None, num_classes=1000)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(root / f"{arch}.safetensors"))
    extra = "".join(f"{key} = {value}\n" for key, value in batching.items())
    (root / "models.toml").write_text(
        f'[models.{arch}]\narch = "torchvision:{arch}"\nweights = "{arch}.safetensors"\n'
        f"num_classes = 1000\ninput_size = {size}\n{extra}")
    return root / "models.toml"


class ServerProcess:
    """`explainserve serve` in a child process, on free ports."""

    def __init__(self, repository: Path, device: str = "cpu") -> None:
        self.port, self.metrics_port = free_port(), free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "explainserve", "--log-level", "WARNING", "serve",
             "--models", str(repository), "--port", str(self.port),
             "--metrics-port", str(self.metrics_port), "--device", device])
        self.address = f"127.0.0.1:{self.port}"
        self._wait_serving()

    def _wait_serving(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with grpc.insecure_channel(self.address) as channel:
                    reply = health_pb2_grpc.HealthStub(channel).Check(
                        health_pb2.HealthCheckRequest(), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
            except grpc.RpcError:
                time.sleep(0.5)
        raise RuntimeError("server did not become SERVING")

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics") as reply:
            return reply.read().decode()

    def rss_bytes(self) -> int:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) * 1024

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def metric_sum(text: str, name: str) -> float:
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + "{"))


def batch_stats(before: str, after: str) -> float:
    rows = metric_sum(after, "explainserve_batch_size_sum") - metric_sum(before, "explainserve_batch_size_sum")
    count = metric_sum(after, "explainserve_batch_size_count") - metric_sum(before, "explainserve_batch_size_count")
    return rows / max(count, 1)


async def drive(address: str, requests: list, clients: int, seconds: float,
                max_requests: int | None = None) -> dict:
    """`clients` concurrent loops, each sending one request at a time, for `seconds`."""
    latencies: list[float] = []
    codes: dict[str, int] = {}
    stop_at = time.monotonic() + seconds
    sent = 0

    async def loop(stub, offset: int) -> None:
        nonlocal sent
        index = offset
        while time.monotonic() < stop_at and (max_requests is None or sent < max_requests):
            sent += 1
            started = time.perf_counter()
            try:
                async for _ in stub.Explain(requests[index % len(requests)], timeout=120):
                    pass
                code = "OK"
                latencies.append(time.perf_counter() - started)
            except grpc.aio.AioRpcError as error:
                code = error.code().name
                if code == "RESOURCE_EXHAUSTED":  # wait as long as the server asks, as
                    # gRPC's retry policy does with grpc-retry-pushback-ms
                    hint = dict(error.trailing_metadata() or ()).get("grpc-retry-pushback-ms")
                    await asyncio.sleep(int(hint) / 1000 if hint else 0.005)
            codes[code] = codes.get(code, 0) + 1
            index += clients

    channels = [grpc.aio.insecure_channel(address) for _ in range(min(clients, 8))]
    started = time.perf_counter()
    await asyncio.gather(*(loop(pb_grpc.ExplainerServiceStub(channels[i % len(channels)]), i)
                           for i in range(clients)))
    elapsed = time.perf_counter() - started
    for channel in channels:
        await channel.close()
    ok = codes.get("OK", 0)
    return {"throughput": ok / elapsed, "codes": codes, "elapsed": elapsed,
            "p50": percentile(latencies, 50), "p99": percentile(latencies, 99)}


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def gradcam_requests(count: int, size: int, method: str = "gradcam", model: str = "resnet18",
                     **params) -> list:
    rng = np.random.default_rng(1)
    return [Client.explain_request(rng.standard_normal((3, size, size)).astype(np.float32),
                                   model, method, outputs=("heatmap",), **params)
            for _ in range(count)]


def timed(function, repeats: int) -> float:
    function()  # warm-up
    started = time.perf_counter()
    for _ in range(repeats):
        function()
    return (time.perf_counter() - started) / repeats


def floors(loaded: LoadedModel, batch_sizes: list[int], repeats: int) -> dict:
    """In-process, same weights: forward + backward down to layer4 (exactly the Grad-CAM work)
    per image at each batch size, on a replica laid out as the server's is (Replica: its
    memory_format decision) and on the contiguous model, and Captum / pytorch-grad-cam called
    once per image on the model as a user holds it."""
    from captum.attr import LayerGradCam
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    served_layout = Replica(loaded, torch.device("cpu")).module  # the same work as the server
    contiguous = loaded.module
    result: dict = {"layout": str(loaded.memory_format(torch.device("cpu"))),
                    "per_image": {}, "per_image_contiguous": {}}
    for batch in sorted(set(batch_sizes)):
        inputs = torch.randn(batch, 3, SIZE, SIZE)
        result["per_image"][batch] = timed(
            lambda: _forward_backward(served_layout, inputs), repeats) / batch
        result["per_image_contiguous"][batch] = timed(
            lambda: _forward_backward(contiguous, inputs), repeats) / batch
    reference = torchvision.models.resnet18(num_classes=1000).eval()  # as a user would load it
    reference.load_state_dict(loaded.module.state_dict())
    image = torch.randn(1, 3, SIZE, SIZE)
    captum = LayerGradCam(reference, reference.layer4)
    result["captum_per_image"] = timed(lambda: captum.attribute(image, target=0), repeats)
    cam = GradCAM(model=reference, target_layers=[reference.layer4])
    result["pytorch_grad_cam_per_image"] = timed(
        lambda: cam(input_tensor=image, targets=[ClassifierOutputTarget(0)]), repeats)
    return result


def _forward_backward(model: torch.nn.Module, inputs: torch.Tensor) -> None:
    """Forward, then backward from the scores to layer4's output only."""
    captured = {}

    def keep(module, args, output):
        captured["a"] = output.detach().requires_grad_(True)
        return captured["a"]

    handle = model.layer4.register_forward_hook(keep)
    try:
        logits = model(inputs)
    finally:
        handle.remove()
    torch.autograd.grad(logits[:, 0].sum(), captured["a"])


SCENARIOS = ("throughput", "fairness", "overload", "memory", "deadlines", "alone")
# Overload with deadlines: occlusion requests (a 56-pixel window, stride 28: 49 positions and
# the clean image, 50 rows) arrive open-loop at twice the rate the device sustains, each with a
# deadline of DEADLINE_FACTOR times its own time alone.
DEADLINE_OCCLUSION = {"window": 56, "stride": 28}
OVERLOAD_FACTOR = 2.0
DEADLINE_FACTOR = 20.0
# A many-row job alone: SmoothGrad's 50 noisy saliency passes, against the same passes
# in-process in batches of max_batch_size on a replica laid out as the server's.
ALONE_SAMPLES = 50


def settings_for(quick: bool) -> dict:
    return {"seconds_per_scenario": 8.0 if quick else 30.0, "floor_repeats": 3 if quick else 10,
            "model": "torchvision resnet18, random weights (seed 0), 1,000 classes",
            "input": f"3x{SIZE}x{SIZE} float32 tensor", "method": "gradcam", "batching": BATCHING,
            "clients": {"latency": 1, "saturation": 16, "overload": 256},
            "fairness_occlusion": {"window": 32, "stride": 2},
            "memory": {"requests": 3000 if quick else 10_000, "first": 300 if quick else 1_000,
                       "input": "3x64x64", "clients": 16, "methods": list(MIXED_METHODS)},
            "deadlines": {"occlusion": DEADLINE_OCCLUSION, "overload": OVERLOAD_FACTOR,
                          "deadline_x_alone": DEADLINE_FACTOR},
            "alone": {"method": "smoothgrad", "samples": ALONE_SAMPLES, "repeats": 3 if quick else 10},
            "workers": "one CPU worker", "torch_threads": torch.get_num_threads()}


def measure(settings: dict) -> dict:
    seconds, repeats = settings["seconds_per_scenario"], settings["floor_repeats"]
    results: dict = {}
    requests = gradcam_requests(32, SIZE)
    only = set(settings["only"])
    if not only & {"throughput", "fairness", "overload", "memory"}:  # these four run together
        return scheduler_ratios(measure_scheduler(settings))
    with tempfile.TemporaryDirectory() as scratch:
        repository = write_repository(Path(scratch), SIZE, **BATCHING)
        loaded = load_model(load_model_repository(repository)[0])  # the floors' weights
        server = ServerProcess(repository)
        try:
            asyncio.run(drive(server.address, requests, 1, 3.0))  # warm-up
            before = server.metrics()
            one = asyncio.run(drive(server.address, requests, 1, seconds))
            mid = server.metrics()
            sixteen = asyncio.run(drive(server.address, requests, 16, seconds))
            after = server.metrics()
            results["served_1_client"] = {**one, "mean_batch": batch_stats(before, mid)}
            results["served_16_clients"] = {**sixteen, "mean_batch": batch_stats(mid, after)}
            occlusion = gradcam_requests(1, SIZE, method="occlusion", window=32, stride=2)[0]
            results["fairness"] = asyncio.run(fairness(server.address, requests, occlusion, seconds))
            overload_before = server.metrics()
            results["overload_256_clients"] = asyncio.run(drive(server.address, requests, 256, seconds))
            results["overload_256_clients"]["mean_batch"] = batch_stats(overload_before, server.metrics())
        finally:
            server.stop()
        results["memory"] = memory_scenario(Path(scratch), settings["memory"])
    results.update(measure_scheduler(settings))
    formed = max(1, round(results["served_16_clients"]["mean_batch"]))
    # Measure the floor as the server runs its passes: on a thread other than the one that
    # first ran torch (libgomp spins differently with one OpenMP team than with two).
    torch.ones(256, 256) @ torch.ones(256, 256)
    with ThreadPoolExecutor(1) as worker:
        results["floor"] = worker.submit(floors, loaded, [1, formed], repeats).result()
    return summarise(results, formed)


def measure_scheduler(settings: dict) -> dict:
    """The deadline-aware scheduler's two figures, each against its own same-run reference:
    goodput under 2x overload with deadlines (successes per second over the saturated
    throughput of the same requests), and a lone many-row job's served time over in-process."""
    only, size, seconds = set(settings["only"]), settings["size"], settings["seconds_per_scenario"]
    arch, device = settings["arch"], settings["device"]
    results: dict = {}
    if not only & {"deadlines", "alone"}:
        return results
    with tempfile.TemporaryDirectory() as scratch:
        repository = write_repository(Path(scratch), size, arch, **BATCHING)
        server = ServerProcess(repository, device)
        try:
            if "deadlines" in only:
                results["overload_with_deadlines"] = asyncio.run(
                    overload_with_deadlines(server.address, size, seconds, arch))
            if "alone" in only:
                loaded = load_model(load_model_repository(repository)[0])
                results["many_row_alone"] = many_row_alone(
                    server.address, loaded, size, settings["alone"]["repeats"], device)
        finally:
            server.stop()
    return results


async def overload_with_deadlines(address: str, size: int, seconds: float,
                                  model: str = "resnet18") -> dict:
    """Saturated throughput of occlusion requests (16 closed-loop clients, no tight deadline),
    then the same requests arriving open-loop at OVERLOAD_FACTOR times that rate, each with a
    deadline of DEADLINE_FACTOR x its time alone: the share of the saturated throughput that
    comes back as successful responses (goodput)."""
    requests = gradcam_requests(16, size, method="occlusion", model=model, **DEADLINE_OCCLUSION)
    alone = await drive(address, requests, 1, max(2.0, seconds / 4))
    saturated = await drive(address, requests, 16, seconds)
    rate = OVERLOAD_FACTOR * saturated["throughput"]
    deadline = DEADLINE_FACTOR * alone["p50"]
    codes: dict[str, int] = {}
    latencies: list[float] = []

    async def one(stub, request) -> None:
        started = time.perf_counter()
        try:
            async for _ in stub.Explain(request, timeout=deadline):
                pass
            code = "OK"
            latencies.append(time.perf_counter() - started)
        except grpc.aio.AioRpcError as error:
            code = error.code().name
        codes[code] = codes.get(code, 0) + 1

    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.ExplainerServiceStub(channel)
        calls = []
        started = time.perf_counter()
        index = 0
        while time.perf_counter() - started < seconds:  # open loop: arrivals at a fixed rate
            calls.append(asyncio.ensure_future(one(stub, requests[index % len(requests)])))
            index += 1
            await asyncio.sleep(max(0.0, started + index / rate - time.perf_counter()))
        await asyncio.gather(*calls)
        elapsed = time.perf_counter() - started
    goodput = codes.get("OK", 0) / elapsed
    return {"alone_p50": alone["p50"], "saturated_throughput": saturated["throughput"],
            "offered_rate": rate, "deadline_s": deadline, "sent": index, "codes": codes,
            "goodput": goodput, "goodput_vs_saturated": goodput / saturated["throughput"],
            "ok_p99": percentile(latencies, 99), "elapsed": elapsed}


def many_row_alone(address: str, loaded: LoadedModel, size: int, repeats: int,
                   device: str = "cpu") -> dict:
    """SmoothGrad alone on an idle server (one caller, one request at a time) against the same
    method in-process (benchmarks/explain_methods.py `ours`: the orchestration on a replica
    laid out as the server's, every pass max_batch_size rows, no scheduler). `ours` runs on
    a CPU replica only: on another device the served time is reported alone."""
    from explain_methods import ours  # benchmarks/ is on the path

    request = gradcam_requests(1, size, method="smoothgrad", model=loaded.name,
                               samples=ALONE_SAMPLES)[0]
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.ExplainerServiceStub(channel)
        served = timed(lambda: list(stub.Explain(request, timeout=600)), repeats)
    if device != "cpu":
        return {"served_s": served, "in_process_s": None, "in_process_vs_served": None}
    replica = Replica(loaded, torch.device("cpu"))
    local = ours(loaded, replica, "smoothgrad", {"samples": ALONE_SAMPLES},
                 max_batch_size=BATCHING["max_batch_size"])
    image = torch.randn(1, 3, size, size)
    with ThreadPoolExecutor(1) as worker:  # off the main thread, as the server's worker runs
        floor = worker.submit(timed, lambda: local(image, [0]), repeats).result()
    return {"served_s": served, "in_process_s": floor, "in_process_vs_served": floor / served}


async def fairness(address: str, requests: list, occlusion, seconds: float) -> dict:
    """Grad-CAM p50 at one client while an occlusion request (the seeds' 32x32 window, stride
    2: 9,409 positions) runs beside it, against the idle p50 measured just before."""
    idle = await drive(address, requests, 1, seconds / 2)
    async with grpc.aio.insecure_channel(address) as channel:
        call = pb_grpc.ExplainerServiceStub(channel).Explain(occlusion, timeout=3600)
        reader = asyncio.ensure_future(_consume(call))
        await asyncio.sleep(1.0)  # the occlusion job is queued and running
        busy = await drive(address, requests, 1, seconds / 2)
        call.cancel()  # cancelling frees the device: its remaining chunks never run
        await asyncio.gather(reader, return_exceptions=True)
    return {"idle_p50": idle["p50"], "busy_p50": busy["p50"], "ratio": busy["p50"] / idle["p50"],
            "busy_throughput": busy["throughput"]}


async def _consume(call) -> None:
    async for _ in call:
        pass


def memory_scenario(root: Path, settings: dict) -> dict:
    """RSS after 10,000 mixed requests against RSS after the first 1,000 (64x64 inputs, so the
    10,000 finish in minutes on a CPU)."""
    total, first = settings["requests"], settings["first"]
    repository = write_repository(root, 64, max_batch_size=16)
    mixed = [request for method in settings["methods"]
             for request in gradcam_requests(4, 64, method=method)]
    server = ServerProcess(repository)
    try:
        asyncio.run(drive(server.address, mixed, settings["clients"], 3600, max_requests=first))
        rss_first = server.rss_bytes()
        asyncio.run(drive(server.address, mixed, settings["clients"], 3600,
                          max_requests=total - first))
        rss_total = server.rss_bytes()
    finally:
        server.stop()
    return {"requests": total, "rss_after_first": rss_first, "first": first,
            "rss_after_all": rss_total, "growth": rss_total / rss_first - 1}


def scheduler_ratios(results: dict) -> dict:
    ratios = {}
    if "overload_with_deadlines" in results:
        ratios["8_goodput_under_2x_overload_with_deadlines"] = \
            results["overload_with_deadlines"]["goodput_vs_saturated"]
    if "many_row_alone" in results:
        ratios["9_many_row_alone_vs_in_process"] = results["many_row_alone"]["in_process_vs_served"]
    return {**results, "ratios": ratios}


def summarise(results: dict, formed: int) -> dict:
    floor = results["floor"]
    per_image_1, per_image_b = floor["per_image"][1], floor["per_image"][formed]
    served1, served16 = results["served_1_client"], results["served_16_clients"]
    results["formed_batch"] = formed
    scheduler = scheduler_ratios(results).get("ratios", {})
    results["ratios"] = {**scheduler, 
        "1_saturation": served16["throughput"] / (1 / per_image_b),
        "2_batching_gain_realised": (served16["throughput"] / served1["throughput"])
                                     / (per_image_1 / per_image_b),
        "3_vs_captum": served16["throughput"] * floor["captum_per_image"],
        "3_vs_pytorch_grad_cam": served16["throughput"] * floor["pytorch_grad_cam_per_image"],
        "4_p50_excess_ms": (served1["p50"] - per_image_1) * 1000,
        "4_p99_excess_ms": (served1["p99"] - per_image_1) * 1000,
        "5_overload_throughput_vs_saturation":
            results["overload_256_clients"]["throughput"] / served16["throughput"],
        "6_fairness_p50_ratio": results["fairness"]["ratio"],
        "7_rss_growth": results["memory"]["growth"],
    }
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter scenarios")
    parser.add_argument("--only", default="all",
                        help=f"comma-separated scenarios: all, or any of {', '.join(SCENARIOS)}")
    parser.add_argument("--size", type=int, default=SIZE,
                        help="input size of the deadline and many-row-alone scenarios")
    parser.add_argument("--seconds", type=float, default=None, help="seconds per scenario")
    parser.add_argument("--device", default="cpu",
                        help="server device of the deadline and many-row-alone scenarios")
    parser.add_argument("--arch", default="resnet18",
                        help="torchvision model of those scenarios (e.g. vit_b_16)")
    add_out_argument(parser, NAME)
    args = parser.parse_args()
    only = SCENARIOS if args.only == "all" else tuple(args.only.split(","))
    unknown = sorted(set(only) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenarios {unknown}; choose from {', '.join(SCENARIOS)}")
    torch.set_num_threads(os.cpu_count() or 1)
    settings = {**settings_for(args.quick), "only": list(only), "size": args.size,
                "arch": args.arch, "device": args.device}
    if args.seconds is not None:
        settings["seconds_per_scenario"] = args.seconds
    results = measure(settings)
    sys.stdout.write(json.dumps(results, indent=2, default=float) + "\n")
    # The scheduler's two scenarios alone have their own result (and table), so a short run of
    # them never replaces the full run's figures.
    name = DEADLINES_NAME if set(only) <= {"deadlines", "alone"} else NAME
    write_result(name, {**settings, "quick": args.quick}, results, args.out,
                 gpu=args.device != "cpu")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
