"""The built-in demo model's held-out accuracy and the time of one forward pass, for the
committed weights. One command writes docs/results/demo_model.json:

    python benchmarks/demo_model.py [--quick] [--out FILE.json]

Accuracy is the training script's own evaluation (explainserve.models.demo.training.evaluate):
top-1 accuracy on freshly generated single-object images (seed 12345) and how often both
classes of a two-object image (seed 12346) are the model's top-2 predictions; training uses
seed 0. The forward pass is one 64x64 image on a replica laid out as the server's CPU replicas
are, under no_grad, the fastest of --runs; drawing is the mean time per image over --runs
generated images.

Robustness, through a real server and the client: top-1 accuracy and Grad-CAM's strict pointing
game (the true class's map, at the default layer, peaks inside the object's mask) on fresh
single-object images of three kinds: the classic generator (seed 12345), the varied generator
the model is also trained on (sizes 12-48 px, other backgrounds, hard edges, blur, JPEG; seed
12347), and shapes drawn with PIL's own primitives by explainserve.models.demo.pil_shapes,
which shares no code with the generator and is never trained on (seed 12348).
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from explainserve.app import BackgroundServer
from explainserve.config import ServerConfig
from explainserve.models.demo import network, pil_shapes, shapes, training
from explainserve.models.demo.repository import demo_model_config
from explainserve.models.registry import load_model
from explainserve.workers.pool import Replica
from explainserve_client import Client

from results import add_out_argument, write_result  # benchmarks/ is on the path

NAME = "demo_model"
SINGLE_SEED, SINGLES, PAIRS = 12345, 2000, 500
ROBUSTNESS_IMAGES = 1000  # per kind of image


def fastest_forward(module: torch.nn.Module, runs: int) -> float:
    image = shapes.generate(1, seed=1)
    inputs = training.to_tensor(image)
    times = []
    with torch.no_grad():
        for _ in range(runs + 5):  # the first few warm the allocator and kernels
            started = time.perf_counter()
            module(inputs)
            times.append(time.perf_counter() - started)
    return min(times[5:])


def draw_seconds(count: int) -> float:
    """Seconds per generated image (numpy + PIL; a quarter of them two-object)."""
    started = time.perf_counter()
    shapes.generate(count, seed=7, two_object_fraction=0.25)
    return (time.perf_counter() - started) / count


def served_scores(client: Client, images: list[np.ndarray], labels: list[int],
                  masks: list[np.ndarray]) -> dict[str, float]:
    """Top-1 accuracy, and the strict pointing game of Grad-CAM for the true class: a hit is a
    heatmap maximum on the object's mask (an all-zero map is a miss)."""
    def one(index: int) -> tuple[bool, bool]:
        (predicted,) = client.explain(images[index], model="demo", method="gradcam",
                                      outputs=("heatmap",))
        correct = predicted.target == labels[index]
        explained = predicted if correct else client.explain(
            images[index], model="demo", method="gradcam", targets=[labels[index]],
            outputs=("heatmap",))[0]
        heatmap = explained.heatmap
        peak = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
        return correct, bool(heatmap.any() and masks[index][peak])
    with ThreadPoolExecutor(max_workers=8) as pool:  # concurrent requests share batches
        correct, hits = zip(*pool.map(one, range(len(images))))
    return {"accuracy": float(np.mean(correct)), "pointing": float(np.mean(hits)),
            "images": len(images)}


def robustness(count: int) -> dict[str, dict[str, float]]:
    classic = shapes.generate(count, SINGLE_SEED)
    varied = shapes.generate(count, training.VARIED_EVAL_SEED, varied=True)
    drawn = pil_shapes.generate(count, training.PIL_EVAL_SEED)
    config = ServerConfig(host="127.0.0.1", port=0, metrics_port=None, device="cpu",
                          models=(demo_model_config(),))
    with BackgroundServer(config) as server, Client(server.address, timeout=600) as client:
        return {
            "classic": served_scores(client, [s.image for s in classic],
                                     [s.labels[0] for s in classic], [s.masks[0] for s in classic]),
            "varied": served_scores(client, [s.image for s in varied],
                                    [s.labels[0] for s in varied], [s.masks[0] for s in varied]),
            "pil": served_scores(client, [s.image for s in drawn], [s.label for s in drawn],
                                 [s.mask for s in drawn]),
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="200 + 50 images, 100 per robustness set, 20 runs")
    parser.add_argument("--runs", type=int, default=200, help="forward passes timed")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    add_out_argument(parser, NAME)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    singles, pairs = (200, 50) if args.quick else (SINGLES, PAIRS)
    runs = 20 if args.quick else args.runs
    robust_count = 100 if args.quick else ROBUSTNESS_IMAGES
    loaded = load_model(demo_model_config())
    scores = training.evaluate(loaded.module, count=singles, seed=SINGLE_SEED, pair_count=pairs)
    replica = Replica(loaded, torch.device("cpu"))
    figures = {
        "accuracy": scores["accuracy"],
        "errors": round((1 - scores["accuracy"]) * singles),
        "pair_top2_rate": scores["pair_top2_rate"],
        "forward_ms": fastest_forward(replica.module, runs) * 1000,
        "draw_ms_per_image": draw_seconds(runs) * 1000,
        "parameters": sum(p.numel() for p in loaded.module.parameters()),
        "weights_bytes": network.DEMO_WEIGHTS_PATH.stat().st_size,
        "robustness": robustness(robust_count),
    }
    print(figures)
    settings = {"quick": args.quick, "singles": singles, "single_seed": SINGLE_SEED,
                "pairs": pairs, "pair_seed": SINGLE_SEED + 1, "forward_runs": runs,
                "forward_batch": 1, "threads": args.threads,
                "layout": str(loaded.memory_format(torch.device("cpu"))),
                "weights": network.DEMO_WEIGHTS_PATH, "robustness_images": robust_count,
                "varied_seed": training.VARIED_EVAL_SEED, "pil_seed": training.PIL_EVAL_SEED}
    write_result(NAME, settings, figures, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
