"""Issue 5's table: time per Maximize step on torchvision resnet18 (random weights) at 224x224,
next to one forward+backward pass and to lucent's `render_vis`, all measured in this run:

    python benchmarks/maximize.py [--quick] [--write docs/benchmarks.md]

Rows:
- forward+backward: one input-gradient pass of the bare model, batch 1 (the floor).
- ascent kernel: one step of our kernel called in-process (transform, objective, priors, Adam).
- Maximize RPC: a real server (BackgroundServer, loopback gRPC, the batcher), wall time of a
  whole call divided by its steps, after a warm-up call.
- lucent render_vis: torch-lucent 0.1.8 (a benchmark-only dependency) with its defaults
  (decorrelated Fourier image, standard transforms, Adam 0.05), wall time / steps.
"""

from __future__ import annotations

import argparse
import platform
import re
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
from explainserve_client import Client
from safetensors.torch import save_file

SIZE = 224
CLASS = 3
SECTION = "## Maximize (issue 5)"
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


class Handle:
    """What a kernel sees of a replica (methods.base.ModelHandle), for in-process timing."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module, self.device = module, torch.device("cpu")
        self._layers = dict(module.named_modules())

    def layer(self, name: str) -> torch.nn.Module:
        return self._layers[name]


def forward_backward(model: torch.nn.Module) -> Sampler:
    image = torch.randn(1, 3, SIZE, SIZE)

    def once() -> float:
        started = time.perf_counter()
        leaf = image.clone().requires_grad_(True)
        torch.autograd.grad(model(leaf)[0, CLASS], leaf)
        return time.perf_counter() - started
    return once


def kernel_step(model: torch.nn.Module, **settings) -> Sampler:
    handle = Handle(model)
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


def measure(quick: bool) -> list[tuple[str, float | str]]:
    """Every sampler once per round, rounds interleaved, median per row: a busy machine's load
    then falls on all rows alike instead of on whichever ran during a burst."""
    steps, rounds = (2, 2) if quick else (8, 7)
    with tempfile.TemporaryDirectory() as root:
        config = ServerConfig(port=0, metrics_port=None, device="cpu",
                              models=repository(Path(root)))
        with BackgroundServer(config) as server, Client(server.address, timeout=3600) as client:
            module = torchvision.models.resnet18(num_classes=1000).eval().requires_grad_(False)
            samplers: list[tuple[str, Sampler | str]] = [
                ("forward+backward, batch 1", forward_backward(module)),
                ("ascent kernel in-process, pixels (defaults), 1 image", kernel_step(module)),
                ("ascent kernel in-process, lucent-like settings, 1 image",
                 kernel_step(module, **LUCENT_LIKE)),
                ("Maximize RPC, pixels (defaults), 1 image", rpc_steps(client, steps, 1, [CLASS])),
                ("Maximize RPC, lucent-like settings, 1 image",
                 rpc_steps(client, steps, 1, [CLASS], **LUCENT_LIKE)),
                ("Maximize RPC, 4 images in one request, per image",
                 rpc_steps(client, steps, 1, [0, 1, 2, CLASS])),
                ("Maximize RPC, 4 concurrent requests (one batch), per image",
                 rpc_steps(client, steps, 4, [CLASS])),
                ("lucent render_vis (its defaults), 1 image", lucent_steps(module, steps)),
            ]
            for _, sampler in samplers:  # warm-up
                if callable(sampler):
                    sampler()
            samples: dict[str, list[float]] = {name: [] for name, _ in samplers}
            for _ in range(rounds):
                for name, sampler in samplers:
                    if callable(sampler):
                        samples[name].append(sampler())
    return [(name, statistics.median(samples[name]) if callable(sampler) else sampler)
            for name, sampler in samplers]


def table(rows: list[tuple[str, float | str]], quick: bool) -> str:
    floor = rows[0][1]
    lines = [f"{SECTION}\n",
             f"Time per optimisation step, torchvision resnet18 (random weights), {SIZE}x{SIZE}, "
             f"CPU ({torch.get_num_threads()} threads, {platform.processor() or platform.machine()}), "
             f"torch {torch.__version__}{', --quick' if quick else ''}. Measured with "
             "`python benchmarks/maximize.py`, medians of interleaved rounds; ratios are to "
             "forward+backward in the same run.\n",
             "| what | ms per step | x forward+backward |", "|---|---:|---:|"]
    for name, value in rows:
        if isinstance(value, str):
            lines.append(f"| {name} | {value} | |")
        else:
            lines.append(f"| {name} | {value * 1000:.1f} | {value / floor:.2f} |")
    return "\n".join(lines) + "\n" + NOTES


NOTES = """
- The kernel rows are one step as the worker runs it: random transformation, objective, priors,
  the redirected-ReLU backward, Adam and clipping. The RPC rows add the batcher (up to
  `max_queue_delay_ms` = 2 ms per step), gRPC on loopback and copying the row state (image and
  Adam moments) to the device and back at every step.
- "4 images in one request": the batcher cuts a job into chunks of at most `max_chunk_ms`
  (50 ms) of device time, so at ~100 ms per row on this CPU a request's images take turns
  one row per pass. Concurrent requests each put a row into the same pass, which is where
  batching pays (last RPC row). On a GPU a row costs far less than 50 ms and a request's
  images share passes too.
- lucent's `render_vis` applies its standard transforms (pad 12, jitter, scale, rotate), so
  its model input is about 236 px; "lucent-like settings" are ours with the Fourier
  parameterisation, jitter 8, scale 0.05 and rotation 10 degrees.
- Measured on the shared 2-core development machine, which other engineers were loading at
  the same time: compare rows within one run, not across runs.
"""


def write_section(path: Path, section: str) -> None:
    """Replace this benchmark's section (up to the next '## '), or append it."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 steps per call, 2 rounds")
    parser.add_argument("--write", type=Path, help="update this markdown file's section")
    args = parser.parse_args(argv)
    section = table(measure(args.quick), args.quick)
    sys.stdout.write(section)
    if args.write:
        write_section(args.write, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
