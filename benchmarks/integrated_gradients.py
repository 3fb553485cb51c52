"""Integrated gradients, ours next to Captum's IntegratedGradients in the same run, on the CPU.
One command writes docs/results/integrated_gradients.json:

    python benchmarks/integrated_gradients.py [--quick] [--threads 2] [--out FILE.json]

(a) fixed steps: 50 Gauss-Legendre points from a black baseline, resnet18 (random weights,
    1000 classes) at 224x224, one image per call; Captum at each internal_batch_size tried,
    ours at the server's default max_batch_size (32) and at 64. Wall time with --threads
    threads and CPU time with one thread, the functions taking turns (explain_methods.py's
    wall_and_cpu).
(b) to a completeness gap of at most 0.05 on each of 100 demo images (the demo model, its
    predicted class): ours starts at --start-steps and refines per image (max_completeness_gap
    0.05), Captum runs its default (Gauss-Legendre, 50 steps) once; each image is timed for
    both, one after the other. Reported: the total time of each, how many images each left
    above the gap, and the steps ours used.

"ours" runs the method's own orchestration through the in-process batcher of
explain_methods.py (rows coalesced by kernel key, cut into max_batch_size chunks, run by a
workers/pool.py Replica laid out as the server lays out its CPU replicas).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from captum.attr import IntegratedGradients
from explainserve.models import preprocess
from explainserve.models.demo import shapes
from explainserve.models.demo.repository import demo_model_config
from explainserve.models.registry import load_model
from explainserve.workers.pool import Replica
from PIL import Image

from explain_methods import ours, reference_copy, wall_and_cpu, write_repository
from results import add_out_argument, write_result

NAME = "integrated_gradients"
GAP = 0.05


def black(mean, std, shape) -> torch.Tensor:
    return ((0.0 - torch.tensor(mean)) / torch.tensor(std))[:, None, None].expand(shape).contiguous()


def fixed_steps(args) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        config, _, _ = write_repository(Path(folder), 64)
        if args.quick:
            from dataclasses import replace
            config = replace(config, input_size=(args.size, args.size))
        loaded = load_model(config)
        replica = Replica(loaded, torch.device("cpu"))
        model = reference_copy(loaded)
    image = torch.randn(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(1))
    baseline = black(config.mean, config.std, image.shape[1:])[None]
    params = {"steps": args.steps, "quadrature": "gausslegendre", "baseline": "black",
              "max_completeness_gap": 0.0}
    functions = {"ours": ours(loaded, replica, "integrated_gradients", params),
                 "ours max_batch_size 64": ours(loaded, replica, "integrated_gradients", params, 64)}
    for size in args.internal_batch_sizes:
        functions[f"Captum internal_batch_size={size}"] = (
            lambda images, targets, size=size: IntegratedGradients(model).attribute(
                images, baselines=baseline, target=targets, n_steps=args.steps,
                method="gausslegendre", internal_batch_size=size))
    times = wall_and_cpu(functions, image, [3], args.threads, args.repeats)
    return {"size": args.size, "steps": args.steps, "times": times}


def demo_images(count: int, config) -> list[torch.Tensor]:
    return [preprocess.normalize(Image.fromarray(sample.image), config.mean, config.std)
            for sample in shapes.generate(count, seed=4242)]


def to_gap(args) -> dict:
    config = demo_model_config()
    loaded = load_model(config)
    replica = Replica(loaded, torch.device("cpu"))
    model = loaded.module.eval()
    baseline = black(config.mean, config.std, (3, *config.input_size))
    params = {"steps": args.start_steps, "quadrature": "gausslegendre", "baseline": "black",
              "max_completeness_gap": GAP}
    ig = IntegratedGradients(model)
    run_ours = ours(loaded, replica, "integrated_gradients", params)
    run_ours(demo_images(1, config)[0][None], [-1])  # warm-up
    rows = []
    for image in demo_images(args.images, config):
        with torch.no_grad():
            target = int(model(image[None]).argmax())
        started = time.perf_counter()
        (result,) = run_ours(image[None], [target])[0]
        ours_s = time.perf_counter() - started
        started = time.perf_counter()
        _, delta = ig.attribute(image[None], baselines=baseline[None], target=target,
                                return_convergence_delta=True)  # Gauss-Legendre, 50 steps
        captum_s = time.perf_counter() - started
        with torch.no_grad():
            logits = model(torch.stack([image, baseline]))
        difference = float(logits[0, target] - logits[1, target])
        rows.append({"ours_s": ours_s, "captum_s": captum_s, "steps": result.quality["steps"],
                     "ours_gap": result.quality["completeness_gap"],
                     "captum_gap": abs(float(delta[0])) / max(abs(difference), 1e-30)})
    total_ours, total_captum = sum(r["ours_s"] for r in rows), sum(r["captum_s"] for r in rows)
    return {"images": len(rows), "start_steps": args.start_steps, "gap": GAP,
            "ours_s_per_image": total_ours / len(rows), "captum_s_per_image": total_captum / len(rows),
            "speedup": total_captum / total_ours,
            "ours_above_gap": sum(r["ours_gap"] > GAP for r in rows),
            "captum_above_gap": sum(r["captum_gap"] > GAP for r in rows),
            "steps_used": sorted(r["steps"] for r in rows), "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny run that proves the script works")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--internal-batch-sizes", type=int, nargs="+", default=[10, 25, 50])
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--start-steps", type=int, default=8)
    add_out_argument(parser, NAME)
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.steps, args.size, args.images = 1, 4, 32, 2
        args.internal_batch_sizes = [2, 4]
    torch.set_num_threads(args.threads)
    figures = {"fixed_steps": fixed_steps(args), "to_gap": to_gap(args)}
    settings = {"quick": args.quick, "threads": args.threads, "repeats": args.repeats,
                "steps": args.steps, "size": args.size, "images": args.images,
                "start_steps": args.start_steps, "internal_batch_sizes": args.internal_batch_sizes}
    print(write_result(NAME, settings, figures, args.out))


if __name__ == "__main__":
    main()
