"""Grad-CAM on torchvision resnet18 (random weights) at 224x224 through three protocols of one
server process, interleaved in the same run: ExplainerService.Explain (the explainserve
client), the Open Inference Protocol over gRPC (tritonclient) and OIP v2 REST with JSON bodies
(httpx). Each window runs `--clients` concurrent clients, each sending one request at a time;
windows rotate through the protocols `--rounds` times, so drift on the machine hits all three.
The figures are throughputs and their ratios to Explain's in the same rounds (goals: OIP gRPC
>= 0.95, HTTP >= 0.8). Writes docs/results/protocols.json:

    python benchmarks/protocols.py [--quick] [--clients 16] [--seconds 20] [--rounds 3] [--out FILE.json]

Every request sends the same PNG and gets the heatmap back (and the scores, over OIP). The
clients run in a separate environment holding tritonclient (protobuf < 7) and the explainserve
client, built once and cached (tests/oip_venvs.py).
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image
from safetensors.torch import save_file

from results import add_out_argument, write_result  # benchmarks/ is on the path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from oip_venvs import cached_venv  # noqa: E402
from support import free_port  # noqa: E402

NAME = "protocols"
PROTOCOLS = ("explain", "oip_grpc", "http")
CLIENT_ENV = ["tritonclient[grpc,http]==2.73.0", "protobuf<7", "httpx>=0.27"]


def repository(folder: Path, size: int) -> Path:
    torch.manual_seed(0)
    module = torchvision.models.resnet18(weights=None, num_classes=1000)
    save_file({k: v.contiguous() for k, v in module.state_dict().items()},
              str(folder / "resnet18.safetensors"))
    (folder / "models.toml").write_text(
        f'[models.resnet18]\narch = "torchvision:resnet18"\nweights = "resnet18.safetensors"\n'
        f"num_classes = 1000\ninput_size = {size}\n")
    return folder / "models.toml"


def start_server(models: Path) -> tuple[subprocess.Popen, int, int]:
    port, http_port = free_port(), free_port()
    process = subprocess.Popen([sys.executable, "-m", "explainserve", "--log-level", "WARNING",
                                "serve", "--models", str(models), "--port", str(port),
                                "--http-port", str(http_port), "--metrics-port", "0",
                                "--device", "cpu"])
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v2/health/ready", timeout=1):
                return process, port, http_port
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise RuntimeError("the server did not become ready")


def window(python: Path, protocol: str, spec: dict) -> dict:
    result = subprocess.run([str(python), str(Path(__file__).with_name("protocols_driver.py")),
                             json.dumps({**spec, "protocol": protocol})],
                            capture_output=True, text=True, timeout=spec["seconds"] + 600)
    if result.returncode != 0:
        raise RuntimeError(f"{protocol} driver failed: {result.stderr[-3000:]}")
    figures = json.loads(result.stdout)
    figures["throughput"] = figures["count"] / spec["seconds"]
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="64x64, 2 clients, 2 s windows, 1 round")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", type=int, default=224)
    add_out_argument(parser, NAME)
    args = parser.parse_args(argv)
    if args.quick:
        args.clients, args.seconds, args.rounds, args.size = 2, 2.0, 1, 64
    python = cached_venv("bench-clients", CLIENT_ENV)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        image = folder / "image.png"
        pixels = np.random.default_rng(0).integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(image)
        process, port, http_port = start_server(repository(folder, args.size))
        try:
            spec = {"grpc": f"127.0.0.1:{port}", "http": f"http://127.0.0.1:{http_port}",
                    "model": "resnet18", "image": str(image), "clients": args.clients,
                    "seconds": args.seconds}
            runs: dict[str, list[dict]] = {p: [] for p in PROTOCOLS}
            for round_index in range(args.rounds):
                order = PROTOCOLS[round_index % 3:] + PROTOCOLS[:round_index % 3]
                for protocol in order:
                    runs[protocol].append(window(python, protocol, spec))
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
    figures = {}
    for protocol, windows in runs.items():
        latencies = np.concatenate([w["latencies"] for w in windows]) if windows else np.array([])
        figures[protocol] = {
            "throughput_rps": float(np.mean([w["throughput"] for w in windows])),
            "errors": int(sum(w["errors"] for w in windows)),
            "p50_ms": float(np.percentile(latencies, 50) * 1000) if latencies.size else None,
            "p99_ms": float(np.percentile(latencies, 99) * 1000) if latencies.size else None,
        }
    base = figures["explain"]["throughput_rps"]
    for protocol in ("oip_grpc", "http"):
        figures[protocol]["ratio_to_explain"] = figures[protocol]["throughput_rps"] / base if base else None
    settings = {"quick": args.quick, "model": "resnet18", "size": args.size, "method": "gradcam",
                "clients": args.clients, "seconds": args.seconds, "rounds": args.rounds,
                "device": "cpu", "goals": {"oip_grpc": 0.95, "http": 0.8}}
    path = write_result(NAME, settings, figures, args.out)
    sys.stdout.write(json.dumps(figures, indent=1) + f"\nwrote {path}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
