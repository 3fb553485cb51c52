"""XRAI end to end (segmentation, integrated gradients from a black and a white baseline,
region selection), ours next to PAIR's saliency.core.XRAI in the same run, on the CPU. One
command writes docs/results/xrai.json:

    python benchmarks/xrai.py [--quick] [--threads 2] [--images 5] [--out FILE.json]

resnet18 (random weights, 1000 classes) at 224x224 on demo images resized to 224; both get
the same steps per path and the same black and white baselines (the model's normalisation).
PAIR computes its gradients with the same torch model in batches of each --pair-batch-sizes
(its IG is a left Riemann sum over linspace(0, 1, steps), ours Gauss-Legendre: the same number
of gradient evaluations). The functions take turns per image; the best of --repeats per image
counts. "ours" is the method's orchestration through explain_methods.py's in-process batcher;
its segmentation runs on a worker thread while the path rows run.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from explainserve.models import preprocess
from explainserve.models.demo import shapes
from explainserve.models.registry import load_model
from explainserve.workers.pool import Replica
from PIL import Image
from saliency.core import base as pair_base
from saliency.core import xrai as pair_xrai

from explain_methods import LOOP, LocalBatcher, LocalContext, reference_copy, write_repository
from explainserve.config import LimitsConfig
from explainserve.methods.base import parse_params
from explainserve.methods.explain.registry import get_method
from results import add_out_argument, write_result

NAME = "xrai"


def ours(loaded, replica, params: dict, max_batch_size: int = 32):
    """explain_methods.ours, draining whatever jobs are pending: XRAI's two paths wait on the
    batcher together, while its segmentation runs on a worker thread."""
    spec = get_method("xrai")
    parsed = parse_params("xrai", spec.params, params)

    async def explain(image, target):
        batcher = LocalBatcher(replica, max_batch_size)
        task = asyncio.ensure_future(spec.run(LocalContext(loaded.facts, LimitsConfig(), batcher),
                                              image, [target], "", parsed))
        while not task.done():
            await asyncio.sleep(0.001)
            if batcher.pending:
                batcher.drain()
        return task.result()

    return lambda images, targets: [LOOP.run_until_complete(explain(images[0], targets[0]))]


def images_of(count: int, size: int, config) -> list[torch.Tensor]:
    return [preprocess.normalize(Image.fromarray(sample.image).resize((size, size), Image.BILINEAR),
                                 config.mean, config.std)
            for sample in shapes.generate(count, seed=777)]


def pair_function(model, image: torch.Tensor, target: int, config, steps: int, batch: int):
    hwc = image.permute(1, 2, 0).numpy()
    baselines = [((value - np.array(config.mean)) / np.array(config.std)).astype(np.float32)
                 * np.ones_like(hwc) for value in (0.0, 1.0)]

    def call_model(x_batch, call_model_args=None, expected_keys=None):
        inputs = torch.from_numpy(np.ascontiguousarray(x_batch)).permute(0, 3, 1, 2).float()
        inputs.requires_grad_(True)
        (gradient,) = torch.autograd.grad(model(inputs)[:, target].sum(), inputs)
        return {pair_base.INPUT_OUTPUT_GRADIENTS: gradient.permute(0, 2, 3, 1).numpy()}

    def run():
        return pair_xrai.XRAI().GetMask(hwc, call_model, baselines=baselines, batch_size=batch,
                                        extra_parameters=pair_xrai.XRAIParameters(steps=steps))
    return run


def measure(args) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        config, _, _ = write_repository(Path(folder), 64)
        config = replace(config, input_size=(args.size, args.size))
        loaded = load_model(config)
        replica = Replica(loaded, torch.device("cpu"))
        model = reference_copy(loaded)
    run_ours = ours(loaded, replica, {"steps": args.steps})
    images = images_of(args.images + 1, args.size, config)
    rows = []
    for index, image in enumerate(images):
        functions = {"ours": lambda image=image: run_ours(image[None], [3])}
        for batch in args.pair_batch_sizes:
            functions[f"PAIR XRAI batch_size={batch}"] = pair_function(model, image, 3, config,
                                                                       args.steps, batch)
        times = {name: [] for name in functions}
        for _ in range(args.repeats):
            for name, function in functions.items():
                started = time.perf_counter()
                function()
                times[name].append(time.perf_counter() - started)
        if index > 0:  # the first image warms both up
            rows.append({name: min(values) for name, values in times.items()})
    totals = {name: sum(row[name] for row in rows) / len(rows) for name in rows[0]}
    best_pair = min(value for name, value in totals.items() if name.startswith("PAIR"))
    return {"size": args.size, "steps": args.steps, "images": len(rows),
            "s_per_image": totals, "speedup_vs_best_pair": best_pair / totals["ours"], "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny run that proves the script works")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--images", type=int, default=5)
    parser.add_argument("--pair-batch-sizes", type=int, nargs="+", default=[10, 25, 50])
    add_out_argument(parser, NAME)
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.steps, args.size, args.images, args.pair_batch_sizes = 1, 4, 64, 1, [4]
    torch.set_num_threads(args.threads)
    settings = {"quick": args.quick, "threads": args.threads, "repeats": args.repeats,
                "steps": args.steps, "size": args.size, "images": args.images,
                "pair_batch_sizes": args.pair_batch_sizes}
    print(write_result(NAME, settings, measure(args), args.out))


if __name__ == "__main__":
    main()
