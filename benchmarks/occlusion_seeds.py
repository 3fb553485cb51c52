"""Occlusion with the seeds' settings at full size: torchvision resnet18 (random weights) at
224x224, a 32x32 window with stride 2 (97 x 97 = 9,409 occluded copies, one forward each), our
occlusion next to Captum's Occlusion at several perturbations_per_eval, measured in one run:

    python benchmarks/occlusion_seeds.py [--batch-sizes 16,32] [--per-eval 8,16,32] [--out F.json]

Each configuration runs once (a run is minutes of identical forward passes, so its own
variation is small; the first chunk absorbs the warm-up). Wall-clock time with all cores:
run it on a quiet machine. "ours" is the method as a worker runs it (its orchestration, rows
coalesced into passes of max_batch_size rows, a Replica from workers/pool.py), at each of the
max_batch_size values given; the model's max_batch_size is the operator's knob for it.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch
from captum.attr import Occlusion
from explainserve.models.registry import load_model
from explainserve.workers.pool import Replica

from explain_methods import ours, reference_copy, write_repository

WINDOW, STRIDE, SIZE, TARGET = 32, 2, 224, 3


def timed(function, image) -> float:
    started = time.perf_counter()
    function(image, [TARGET])
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", default="16,32", help="our max_batch_size values")
    parser.add_argument("--per-eval", default="8,16,32", help="Captum perturbations_per_eval values")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    positions = ((SIZE - WINDOW) // STRIDE + 1) ** 2
    image = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    params = {"window": WINDOW, "stride": STRIDE}
    with tempfile.TemporaryDirectory() as folder:
        config, _, _ = write_repository(Path(folder), SIZE)
        loaded = load_model(config)
        replica = Replica(loaded, torch.device("cpu"))
        model = reference_copy(loaded)
        functions = {f"ours max_batch_size={size}": ours(loaded, replica, "occlusion", params,
                                                          max_batch_size=int(size))
                     for size in args.batch_sizes.split(",")}
        for per_eval in (int(p) for p in args.per_eval.split(",")):
            functions[f"Captum Occlusion ppe={per_eval}"] = (
                lambda images, targets, per_eval=per_eval: Occlusion(model).attribute(
                    images, sliding_window_shapes=(3, WINDOW, WINDOW), strides=(3, STRIDE, STRIDE),
                    baselines=0.0, target=targets, perturbations_per_eval=per_eval))
        seconds = {}
        for name, function in functions.items():
            seconds[name] = timed(function, image)
            print(f"{name:32s} {seconds[name]:8.1f} s  {seconds[name] / positions * 1000:6.2f} "
                  f"ms per occluded copy", flush=True)
    best = min(value for name, value in seconds.items() if name.startswith("Captum"))
    for name, value in seconds.items():
        print(f"| {name} | {value:.1f} | {value / positions * 1000:.2f} | {value / best:.2f} |")
    if args.out:
        args.out.write_text(json.dumps({"positions": positions, "threads": args.threads,
                                        "seconds": seconds}, indent=1))


if __name__ == "__main__":
    main()
