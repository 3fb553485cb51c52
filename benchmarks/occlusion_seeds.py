"""Occlusion with the seeds' settings at full size: torchvision resnet18 (random weights) at
224x224, a 32x32 window with stride 2 (97 x 97 = 9,409 occluded copies, one forward each), our
occlusion next to Captum's Occlusion at several perturbations_per_eval, measured in one run:

    python benchmarks/occlusion_seeds.py [--quick] [--batch-sizes 8,32] [--per-eval 8,32]
                                         [--out FILE.json]

It writes docs/results/occlusion_seeds.json. Each configuration runs once (a run is minutes
of identical forward passes, so its own variation is small; the first chunk absorbs the
warm-up). Wall-clock time with all cores: run it on a quiet machine. "ours" is the method as a worker runs it (its orchestration, rows
coalesced into passes of max_batch_size rows, a Replica from workers/pool.py), at each of the
max_batch_size values given (32 is the default; the model's max_batch_size is the operator's
knob for it), laid out as the server lays out its CPU replicas. Captum runs on the model as a
user holds it. --quick (a stride of 16: 13 x 13 copies, one configuration each) only checks
that the script runs.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
from captum.attr import Occlusion
from explainserve.models.registry import load_model
from explainserve.workers.pool import Replica

from explain_methods import ours, reference_copy, write_repository
from results import add_out_argument, write_result

NAME = "occlusion_seeds"
WINDOW, STRIDE, SIZE, TARGET = 32, 2, 224, 3
QUICK_STRIDE = 16


def timed(function, image) -> float:
    started = time.perf_counter()
    function(image, [TARGET])
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"stride {QUICK_STRIDE}, one configuration of each: checks the script")
    parser.add_argument("--batch-sizes", default="8,32", help="our max_batch_size values")
    parser.add_argument("--per-eval", default="8,32", help="Captum perturbations_per_eval values")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    add_out_argument(parser, NAME)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    stride = QUICK_STRIDE if args.quick else STRIDE
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")][:1 if args.quick else None]
    per_evals = [int(p) for p in args.per_eval.split(",")][:1 if args.quick else None]
    positions = ((SIZE - WINDOW) // stride + 1) ** 2
    image = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    params = {"window": WINDOW, "stride": stride}
    with tempfile.TemporaryDirectory() as folder:
        config, _, _ = write_repository(Path(folder), SIZE)
        loaded = load_model(config)
        replica = Replica(loaded, torch.device("cpu"))
        model = reference_copy(loaded)
        functions = {f"ours, max_batch_size {size}": ours(loaded, replica, "occlusion", params,
                                                          max_batch_size=size)
                     for size in batch_sizes}
        for per_eval in per_evals:
            functions[f"Captum Occlusion ppe={per_eval}"] = (
                lambda images, targets, per_eval=per_eval: Occlusion(model).attribute(
                    images, sliding_window_shapes=(3, WINDOW, WINDOW), strides=(3, stride, stride),
                    baselines=0.0, target=targets, perturbations_per_eval=per_eval))
        seconds = {}
        for name, function in functions.items():
            seconds[name] = timed(function, image)
            print(f"{name:32s} {seconds[name]:8.1f} s  {seconds[name] / positions * 1000:6.2f} "
                  f"ms per occluded copy", flush=True)
    settings = {"quick": args.quick, "model": "torchvision resnet18, random weights, 1,000 classes",
                "size": SIZE, "window": WINDOW, "stride": stride, "target": TARGET,
                "batch_sizes": batch_sizes, "default_max_batch_size": 32,
                "per_eval": per_evals, "threads": args.threads,
                "layout": str(loaded.memory_format(torch.device("cpu")))}
    figures = {"positions": positions,
               "configurations": [{"name": name, "seconds": value} for name, value in seconds.items()]}
    write_result(NAME, settings, figures, args.out)


if __name__ == "__main__":
    main()
