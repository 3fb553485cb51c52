"""Time per Maximize step on torchvision resnet18 (random weights) at 224x224, next to one
forward+backward pass and to lucent's `render_vis`, all measured in this run. One command writes
docs/results/maximize.json:

    python benchmarks/maximize.py [--quick] [--out FILE.json]

Rows:
- forward+backward: one input-gradient pass, batch 1 (the floor), on a replica laid out as the
  server's CPU replicas are (workers.pool.Replica, memory_format "auto").
- ascent kernel: one step of our kernel called in-process on that replica (transform,
  objective, priors, Adam), with and without the redirected-ReLU backward.
- Maximize RPC: a real server (BackgroundServer, loopback gRPC, the batcher), wall time of a
  whole call divided by its steps, after a warm-up call.
- lucent render_vis: torch-lucent 0.1.8 (a benchmark-only dependency) with its defaults
  (decorrelated Fourier image, standard transforms, Adam 0.05), wall time / steps, on the
  same weights as a user holds them (contiguous).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path

import torch
import torchvision
from explainserve.app import BackgroundServer
from explainserve.config import ServerConfig, load_model_repository
from explainserve.methods.maximize.plan import AscentPlan, pack
from explainserve.methods.maximize.step import ascent_kernel
from explainserve.methods.maximize.objectives import CLASS_PARAMS
from explainserve.models.registry import load_model
from explainserve.workers.pool import Replica
from explainserve_client import Client
from safetensors.torch import save_file

from results import add_out_argument, write_result  # benchmarks/ is on the path

NAME = "maximize"
SIZE = 224
CLASS = 3
PLAN_FIELDS = {f.name for f in fields(AscentPlan)}
Sampler = Callable[[], float]  # one measurement: seconds per step (per image)
LUCENT_LIKE = {"parameterization": "fourier", "jitter": 8, "scale": 0.05, "rotate": 10.0}


def repository(root: Path):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=1000)
    save_file(model.state_dict(), str(root / "resnet18.safetensors"))
    (root / "models.toml").write_text(
        '[models.resnet18]\narch = "torchvision:resnet18"\nweights = "resnet18.safetensors"\n'
        f"num_classes = 1000\ninput_size = {SIZE}\n")
    return load_model_repository(root / "models.toml")


def forward_backward(model: torch.nn.Module) -> Sampler:
    image = torch.randn(1, 3, SIZE, SIZE)

    def once() -> float:
        started = time.perf_counter()
        leaf = image.clone().requires_grad_(True)
        torch.autograd.grad(model(leaf)[0, CLASS], leaf)
        return time.perf_counter() - started
    return once


def kernel_step(handle: Replica, **settings) -> Sampler:
    defaults = {spec.name: spec.default for spec in CLASS_PARAMS if spec.name in PLAN_FIELDS}
    plan = AscentPlan(objective="class", layer="", image_shape=(3, SIZE, SIZE),
                      mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                      **{**defaults, **settings})
    shape = (1, *plan.param_shape)
    state = pack(torch.zeros(shape), torch.zeros(shape), torch.zeros(shape), torch.zeros(1, 0))
    targets = torch.zeros(1, 7, dtype=torch.long)
    targets[:, 0], targets[:, 5] = CLASS, 1

    def once() -> float:
        started = time.perf_counter()
        ascent_kernel(handle, state, targets, plan=plan)
        return time.perf_counter() - started
    return once


def rpc_steps(client: Client, steps: int, requests: int, units: list[int], **params) -> Sampler:
    """Seconds per step per image: `requests` concurrent calls, each for `units`."""
    images = requests * len(units)

    def call(unit_offset: int) -> None:
        client.maximize("resnet18", [(u + unit_offset) % 1000 for u in units], steps=steps,
                        **params)

    def once() -> float:
        threads = [threading.Thread(target=call, args=(index,)) for index in range(requests)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return (time.perf_counter() - started) / steps / images
    return once


def lucent_steps(model: torch.nn.Module, steps: int) -> Sampler | str:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # kornia 0.4 calls torch.jit.script
            from lucent.optvis import param, render
    except ImportError as error:
        return f"not measured: {error} (pip install torch-lucent)"

    def once() -> float:
        started = time.perf_counter()
        with warnings.catch_warnings():
            # render_vis turns a RuntimeError in the forward pass into a warning: make it fatal,
            # so a broken lucent cannot report a fast but meaningless time.
            warnings.filterwarnings("error", message="Some layers could not be computed")
            render.render_vis(model, f"fc:{CLASS}", param_f=lambda: param.image(SIZE),
                              thresholds=(steps,), progress=False, show_image=False)
        return (time.perf_counter() - started) / steps
    return once


def measure(steps: int, rounds: int) -> tuple[list[dict], str]:
    """Every sampler once per round, rounds interleaved, median per row: a busy machine's load
    then falls on all rows alike instead of on whichever ran during a burst."""
    with tempfile.TemporaryDirectory() as root:
        configs = repository(Path(root))
        loaded = load_model(configs[0])
        replica = Replica(loaded, torch.device("cpu"))  # the server's layout
        config = ServerConfig(port=0, metrics_port=None, device="cpu", models=configs)
        with BackgroundServer(config) as server, Client(server.address, timeout=3600) as client:
            samplers: list[tuple[str, Sampler | str]] = [
                ("forward+backward, batch 1", forward_backward(replica.module)),
                ("ascent kernel in-process, pixels (defaults), 1 image", kernel_step(replica)),
                ("ascent kernel in-process, pixels, redirect_relu off, 1 image",
                 kernel_step(replica, redirect_relu=False)),
                ("ascent kernel in-process, lucent-like settings, 1 image",
                 kernel_step(replica, **LUCENT_LIKE)),
                ("Maximize RPC, pixels (defaults), 1 image", rpc_steps(client, steps, 1, [CLASS])),
                ("Maximize RPC, lucent-like settings, 1 image",
                 rpc_steps(client, steps, 1, [CLASS], **LUCENT_LIKE)),
                ("Maximize RPC, 4 images in one request, per image",
                 rpc_steps(client, steps, 1, [0, 1, 2, CLASS])),
                ("Maximize RPC, 4 concurrent requests (one batch), per image",
                 rpc_steps(client, steps, 4, [CLASS])),
                ("lucent render_vis (its defaults), 1 image", lucent_steps(loaded.module, steps)),
            ]
            for _, sampler in samplers:  # warm-up
                if callable(sampler):
                    sampler()
            samples: dict[str, list[float]] = {name: [] for name, _ in samplers}
            for _ in range(rounds):
                for name, sampler in samplers:
                    if callable(sampler):
                        samples[name].append(sampler())
    rows = [{"what": name, "seconds_per_step": statistics.median(samples[name]),
             "samples": samples[name]} if callable(sampler)
            else {"what": name, "seconds_per_step": None, "note": sampler}
            for name, sampler in samplers]
    return rows, str(loaded.memory_format(torch.device("cpu")))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 steps per call, 2 rounds")
    add_out_argument(parser, NAME)
    args = parser.parse_args(argv)
    steps, rounds = (2, 2) if args.quick else (8, 7)
    rows, layout = measure(steps, rounds)
    for row in rows:
        value = row["seconds_per_step"]
        print(f"{row['what']:62s} {value * 1000 if value is not None else float('nan'):8.1f} ms"
              f"{'  ' + row['note'] if value is None else ''}")
    try:
        from importlib.metadata import version
        lucent = version("torch-lucent")
    except Exception:  # noqa: BLE001 - not installed
        lucent = None
    settings = {"quick": args.quick, "model": "torchvision resnet18, random weights (seed 0)",
                "size": SIZE, "objective": "class", "class": CLASS, "steps_per_call": steps,
                "rounds": rounds, "statistic": "median of interleaved rounds, after a warm-up",
                "lucent_like": LUCENT_LIKE, "torch_lucent": lucent,
                "threads": torch.get_num_threads(),
                "layout": layout}
    write_result(NAME, settings, {"rows": rows}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
