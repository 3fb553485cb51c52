"""Score-CAM and Ablation-CAM next to pytorch-grad-cam's ScoreCAM and AblationCAM, on one
torchvision resnet18 (random weights, 1,000 classes) at 224x224 and its layer4, in one run:

    python benchmarks/cam_family.py [--quick] [--device auto|cpu|cuda] [--repeats N]
                                    [--max-batch-size N] [--out FILE.json]

"ours" runs each method's own orchestration in-process, as a worker would: its rows are
coalesced by kernel key into passes of --max-batch-size rows (the server's default, 32), moved
to the device and run on a workers.pool.Replica, laid out as the server lays out its replicas.
The references run on a copy with the same weights, in eval mode, on the same device, at their
default batch sizes (ScoreCAM 16, AblationCAM 32), with ClassifierOutputTarget targets. Batch N
is N images with one target each (N requests for ours). Times are wall seconds per image, the
best of --repeats rounds; in each round every function runs once, in turn, so load on a shared
machine hits them alike; CUDA is synchronised after each call. Goals: Score-CAM at least 1.2x
and Ablation-CAM at least 3x faster than the reference.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision
from explainserve.config import BatchingConfig, LimitsConfig, ModelConfig
from explainserve.methods.base import parse_params
from explainserve.methods.explain.registry import get_method
from explainserve.models.registry import load_model
from explainserve.workers.pool import Replica
from pytorch_grad_cam import AblationCAM, ScoreCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from safetensors.torch import save_file

from explain_methods import LocalBatcher, LocalContext  # benchmarks/ is on the path
from results import add_out_argument, write_result

NAME = "cam_family"
CLASSES, LAYER = 1000, "layer4"
GOALS = {"score_cam": 1.2, "ablation_cam": 3.0}
REFERENCES = {"score_cam": ("pytorch-grad-cam ScoreCAM", ScoreCAM),
              "ablation_cam": ("pytorch-grad-cam AblationCAM", AblationCAM)}


class DeviceBatcher(LocalBatcher):
    """LocalBatcher whose passes run on the replica's device, as a worker moves its rows."""

    def drain(self) -> None:
        jobs, self.pending = self.pending, []
        for key in dict.fromkeys(kernel.key for kernel, _, _ in jobs):
            group = [job for job in jobs if job[0].key == key]
            outputs: dict[int, list[dict]] = {id(job): [] for job in group}
            segments = [(job, 0, len(job[1])) for job in group]
            while segments:  # fill each pass with up to max_batch_size rows of any jobs
                batch, taken = [], 0
                while segments and taken < self.max_batch_size:
                    job, start, stop = segments.pop(0)
                    end = min(stop, start + self.max_batch_size - taken)
                    batch.append((job, start, end))
                    taken += end - start
                    if end < stop:
                        segments.insert(0, (job, end, stop))
                parts = [job[1].take(start, stop) for job, start, stop in batch]
                device = self.replica.device
                result = group[0][0](self.replica, torch.cat([p[0] for p in parts]).to(device),
                                     torch.cat([p[1] for p in parts]).to(device))
                offset = 0
                for job, start, stop in batch:
                    outputs[id(job)].append({k: v[offset:offset + stop - start].detach().cpu()
                                             for k, v in result.items()})
                    offset += stop - start
            for job in group:
                parts = outputs[id(job)]
                job[2].set_result({k: torch.cat([p[k] for p in parts]) for k in parts[0]})


async def _explain_all(loaded, replica, method, images, targets, max_batch_size) -> list:
    spec = get_method(method)
    params = parse_params(method, spec.params, {})
    batcher = DeviceBatcher(replica, max_batch_size)
    context = LocalContext(loaded.facts, LimitsConfig(), batcher)
    tasks = [asyncio.ensure_future(spec.run(context, image, [target], LAYER, params))
             for image, target in zip(images, targets)]
    while not all(task.done() for task in tasks):
        await asyncio.sleep(0)
        if batcher.pending and len(batcher.pending) == sum(not t.done() for t in tasks):
            batcher.drain()
    return [task.result() for task in tasks]


LOOP = asyncio.new_event_loop()


def ours(loaded, replica, method: str, max_batch_size: int) -> Callable:
    return lambda images, targets: LOOP.run_until_complete(
        _explain_all(loaded, replica, method, images, targets, max_batch_size))


def reference(model: torch.nn.Module, cls, device: torch.device) -> Callable:
    def call(images, targets):  # its hooks stay on the model until released: scope them
        with cls(model=model, target_layers=[model.layer4]) as cam:
            return cam(input_tensor=images.to(device),
                       targets=[ClassifierOutputTarget(t) for t in targets])
    return call


def best_seconds(functions: dict[str, Callable], images, targets, repeats: int,
                 device: torch.device) -> dict[str, float]:
    """Best wall time per image of each function, interleaved round by round."""
    def timed(function) -> float:
        started = time.perf_counter()
        function(images, targets)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - started

    for function in functions.values():
        timed(function)  # warm-up: allocator, kernels, the suffix's trace
    times: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            times[name].append(timed(function))
    return {name: min(values) / len(images) for name, values in times.items()}


def measure(args: argparse.Namespace) -> list[dict]:
    device = torch.device(args.device)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        torch.manual_seed(0)
        weights = Path(folder) / "resnet18.safetensors"
        save_file(torchvision.models.resnet18(num_classes=CLASSES).state_dict(), str(weights))
        loaded = load_model(ModelConfig(name="resnet18", arch="torchvision:resnet18",
                                        weights=weights, num_classes=CLASSES,
                                        input_size=(args.size, args.size)))
        replica = Replica(loaded, device)
        model = torchvision.models.resnet18(num_classes=CLASSES)
        model.load_state_dict(loaded.module.state_dict())
        model = model.eval().to(device)
        images = torch.randn(max(args.batches), 3, args.size, args.size,
                             generator=torch.Generator().manual_seed(1))
        targets = [3, 14, 159, 265, 358, 479, 812, 999]
        for batch in args.batches:
            for method in args.methods:
                name, cls = REFERENCES[method]
                times = best_seconds({"ours": ours(loaded, replica, method, args.max_batch_size),
                                      name: reference(model, cls, device)},
                                     images[:batch], targets[:batch], args.repeats, device)
                row = {"method": method, "batch": batch, "input": args.size, "layer": LAYER,
                       "ours": times["ours"], "reference": name, "reference_s": times[name],
                       "speedup": times[name] / times["ours"], "goal": GOALS[method]}
                rows.append(row)
                print(f"{method:13s} batch {batch}: ours {row['ours'] * 1000:8.1f} ms/img, "
                      f"{name} {row['reference_s'] * 1000:8.1f} ms/img, "
                      f"x{row['speedup']:.2f} (goal {row['goal']}x)", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="64x64 input, batch 1, one round")
    parser.add_argument("--device", default="auto", help="auto (cuda when present), cpu or cuda")
    parser.add_argument("--repeats", type=int, default=None, help="rounds (default 3; quick 1)")
    parser.add_argument("--max-batch-size", type=int, default=BatchingConfig().max_batch_size,
                        help="rows per pass for ours (the server's max_batch_size)")
    parser.add_argument("--methods", default="score_cam,ablation_cam")
    add_out_argument(parser, NAME)
    args = parser.parse_args()
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    args.size = 64 if args.quick else 224
    args.batches = (1,) if args.quick else (1, 8)
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.methods = args.methods.split(",")
    rows = measure(args)
    settings = {"quick": args.quick, "model": "torchvision resnet18, random weights, 1,000 classes",
                "layer": LAYER, "size": args.size, "batches": list(args.batches),
                "device": args.device, "repeats": args.repeats,
                "max_batch_size": args.max_batch_size, "methods": args.methods,
                "reference_batch_sizes": {"ScoreCAM": 16, "AblationCAM": 32}}
    write_result(NAME, settings, {"rows": rows}, args.out, gpu=args.device.startswith("cuda"))


if __name__ == "__main__":
    main()
