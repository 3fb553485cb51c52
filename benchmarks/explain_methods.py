"""Every explanation method on torchvision resnet18 (random weights) at 224x224, batch 1 and 8,
on the CPU, next to its reference library measured in the same run and next to one
forward+backward pass. One command reruns it all and writes docs/results/explain_methods.json:

    python benchmarks/explain_methods.py [--quick] [--no-served] [--methods a,b] [--out FILE.json]

"ours" calls each method the way a worker does: the method's own orchestration turns the image
into rows and kernels, and the rows of the batch's images are coalesced by kernel key and cut
into chunks of max_batch_size, exactly what the batcher does, then run by a Replica from
workers/pool.py, laid out as the server lays out its CPU replicas (memory_format "auto");
the forward+backward floor runs on that same replica. "served" is the same request through a real server process and the client
(batch 8 = 8 concurrent requests). Occlusion uses the seeds' 32x32 window with stride 2 on a
smaller input (97x97 positions at 224 would take minutes per image on a CPU), next to Captum's
Occlusion at each perturbations_per_eval tried. The last column is the lowest module whose
output is part of an autograd graph: a method needs no gradient below it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import torch
import torchvision
from captum.attr import (Deconvolution, GuidedBackprop, GuidedGradCam, InputXGradient,
                         LayerGradCam, NoiseTunnel, Occlusion, Saliency)
from explainserve.config import BatchingConfig, LimitsConfig, ModelConfig
from explainserve import hooks
from explainserve.methods.base import Kernel, parse_params
from explainserve.methods.explain.registry import get_method
from explainserve.models.registry import load_model
from explainserve.workers.pool import Replica
from explainserve_client import Client
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from safetensors.torch import save_file

from load import ServerProcess  # benchmarks/ is on the path when a script runs
from results import add_out_argument, write_result

NAME = "explain_methods"
SIZE, CLASSES, LAYER = 224, 1000, "layer4"
SINGLE_PASS = ("saliency", "input_x_gradient", "deconvnet", "guided_backprop", "cam", "gradcam",
               "gradcam_counterfactual", "gradcam_plus_plus", "guided_gradcam")


# ---------------------------------------------------------------- ours, in-process
class LocalBatcher:
    """What the batcher and a worker do, in one thread: jobs wait until every running
    orchestration has submitted, then rows sharing a kernel key run in max_batch_size chunks."""

    def __init__(self, replica: Replica, max_batch_size: int) -> None:
        self.replica, self.max_batch_size = replica, max_batch_size
        self.pending: list[tuple[Kernel, object, asyncio.Future]] = []

    def run(self, kernel: Kernel, rows) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        self.pending.append((kernel, rows, future))
        return future

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
                result = group[0][0](self.replica, torch.cat([p[0] for p in parts]),
                                     torch.cat([p[1] for p in parts]))
                offset = 0
                for job, start, stop in batch:
                    outputs[id(job)].append({k: v[offset:offset + stop - start].detach()
                                             for k, v in result.items()})
                    offset += stop - start
            for job in group:
                parts = outputs[id(job)]
                job[2].set_result({k: torch.cat([p[k] for p in parts]) for k in parts[0]})


class LocalContext:
    def __init__(self, model, limits: LimitsConfig, batcher: LocalBatcher) -> None:
        self.model, self.limits, self.batcher, self.extra_layers = model, limits, batcher, ()

    def run(self, kernel: Kernel, rows):
        return self.batcher.run(kernel, rows)


async def _explain_all(loaded, replica, method: str, images: torch.Tensor, targets: list[int],
                       params: dict, max_batch_size: int) -> list:
    spec = get_method(method)
    parsed = parse_params(method, spec.params, params)
    layer = loaded.default_layer if spec.uses_layer else ""
    batcher = LocalBatcher(replica, max_batch_size)
    context = LocalContext(loaded.facts, LimitsConfig(), batcher)
    tasks = [asyncio.ensure_future(spec.run(context, image, [target], layer, parsed))
             for image, target in zip(images, targets)]
    while not all(task.done() for task in tasks):
        await asyncio.sleep(0)
        if batcher.pending and len(batcher.pending) == sum(not t.done() for t in tasks):
            batcher.drain()
    return [task.result() for task in tasks]


LOOP = asyncio.new_event_loop()  # one loop for every call, as a server has


def ours(loaded, replica, method, params, max_batch_size=32) -> Callable:
    def call(images, targets):
        return LOOP.run_until_complete(_explain_all(loaded, replica, method, images, targets,
                                                    params, max_batch_size))
    return call


def lowest_graph_module(loaded, replica, method, params, image) -> str:
    """The first module, in forward order, whose output requires grad during the method."""
    order = [name for name, _ in replica.module.named_modules() if name]
    seen: list[str] = []
    handles = [module.register_forward_hook(
        lambda _m, _a, output, name=name: seen.append(name)
        if isinstance(output, torch.Tensor) and output.requires_grad else None)
        for name, module in replica.module.named_modules() if name]
    try:
        ours(loaded, replica, method, params)(image[None], [3])
    finally:
        for handle in handles:
            handle.remove()
    return min(seen, key=order.index) if seen else "none"


# ---------------------------------------------------------------- references
def references(model: torch.nn.Module,
               smoothgrad_samples: int) -> dict[str, list[tuple[str, Callable]]]:
    """Reference implementations per method: (name, fn(images, targets))."""
    def captum(attribution, **kwargs):
        return lambda images, targets: attribution.attribute(images, target=targets, **kwargs)

    def grad_cam_library(cls):
        def call(images, targets):  # its hooks stay on the model until released: scope them
            with cls(model=model, target_layers=[model.layer4]) as cam:
                return cam(input_tensor=images,
                           targets=[ClassifierOutputTarget(t) for t in targets])
        return call

    def hand_cam(images, targets):  # Zhou et al. eq. 2 with a forward hook, no gradient,
        with torch.no_grad(), hooks.capture_outputs({"layer4": model.layer4}) as captured:
            model(images)  # upsampled to the input like every CAM heatmap
            cam = torch.einsum("nk,nkhw->nhw", model.fc.weight[targets], captured.outputs["layer4"])
            return torch.nn.functional.interpolate(cam[:, None], size=images.shape[-2:],
                                                   mode="bilinear", align_corners=False)

    def smoothgrad(images, targets):
        sigma = 0.15 * float(images.max() - images.min())
        return NoiseTunnel(Saliency(model)).attribute(
            images, target=targets, nt_type="smoothgrad", nt_samples=smoothgrad_samples,
            stdevs=sigma, nt_samples_batch_size=max(1, 32 // len(images)))

    negated = lambda images: -model(images)  # noqa: E731 - the counterfactual's -dy/dA
    return {
        "saliency": [("Captum Saliency", captum(Saliency(model), abs=False))],
        "input_x_gradient": [("Captum InputXGradient", captum(InputXGradient(model)))],
        "smoothgrad": [("Captum NoiseTunnel(Saliency)", smoothgrad)],
        "deconvnet": [("Captum Deconvolution", captum(Deconvolution(model)))],
        "guided_backprop": [("Captum GuidedBackprop", captum(GuidedBackprop(model)))],
        "cam": [("hand: hook + fc weights", hand_cam)],
        "gradcam": [("Captum LayerGradCam", captum(LayerGradCam(model, model.layer4))),
                    ("pytorch-grad-cam GradCAM", grad_cam_library(GradCAM))],
        "gradcam_counterfactual": [("Captum LayerGradCam on -y",
                                    captum(LayerGradCam(negated, model.layer4)))],
        "gradcam_plus_plus": [("pytorch-grad-cam GradCAMPlusPlus",
                               grad_cam_library(GradCAMPlusPlus))],
        "guided_gradcam": [("Captum GuidedGradCam", captum(GuidedGradCam(model, model.layer4)))],
    }


def forward_backward(model: torch.nn.Module) -> Callable:
    """One forward and one backward pass to the input: the floor of a single-pass method."""
    def call(images, targets):
        inputs = images.detach().requires_grad_(True)
        scores = model(inputs).gather(1, torch.tensor(targets)[:, None]).sum()
        return torch.autograd.grad(scores, inputs)[0]
    return call


def seconds_per_image(functions: dict[str, Callable], images: torch.Tensor, targets: list[int],
                      repeats: int,
                      clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """Each function's best time per image over `repeats` rounds. The functions take turns
    within a round, so load from other processes on a shared machine hits them alike, and the
    minimum is the least disturbed run."""
    for function in functions.values():
        function(images, targets)  # warm-up: allocator, hooks, lazy initialisation
    times: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            started = clock()
            function(images, targets)
            times[name].append(clock() - started)
    return {name: min(values) / len(images) for name, values in times.items()}


def wall_and_cpu(functions: dict[str, Callable], images, targets, threads: int,
                 repeats: int) -> dict[str, dict]:
    """Wall-clock time with args.threads threads, and CPU time with one thread: one intra-op
    thread computes on the calling thread (autograd's CPU backward too), so time.thread_time
    counts exactly the work done, whatever else the machine is running. CPU time is the
    stable measure of which implementation does more work; wall time is what a user waits."""
    wall = seconds_per_image(functions, images, targets, repeats)
    torch.set_num_threads(1)
    try:
        cpu = seconds_per_image(functions, images, targets, repeats, clock=time.thread_time)
    finally:
        torch.set_num_threads(threads)
    return {name: {"wall": wall[name], "cpu": cpu[name]} for name in functions}


# ---------------------------------------------------------------- served
def served(address: str, model: str, method: str, params: dict) -> Callable:
    """Batch N = N concurrent callers, each with its own long-lived connection, as N client
    services would hold them (a connection per call would time the TCP and HTTP/2 set-up)."""
    clients: list[Client] = []

    def call(images, targets):
        while len(clients) < len(images):
            clients.append(Client(address, timeout=600))

        def one(index):
            return clients[index].explain(images[index].numpy(), model=model, method=method,
                                          targets=[targets[index]], **params)
        with ThreadPoolExecutor(max_workers=len(images)) as pool:
            return list(pool.map(one, range(len(images))))
    return call


# ---------------------------------------------------------------- the run
def write_repository(root: Path, occlusion_size: int) -> tuple[ModelConfig, ModelConfig, Path]:
    torch.manual_seed(0)
    weights = root / "resnet18.safetensors"
    save_file(torchvision.models.resnet18(num_classes=CLASSES).state_dict(), str(weights))
    config = ModelConfig(name="resnet18", arch="torchvision:resnet18", weights=weights,
                         num_classes=CLASSES, input_size=(SIZE, SIZE), batching=BatchingConfig())
    small = replace(config, name="resnet18_small", input_size=(occlusion_size, occlusion_size))
    toml = "".join(f'[models.{c.name}]\narch = "{c.arch}"\nweights = "{weights.name}"\n'
                   f"num_classes = {CLASSES}\ninput_size = {c.input_size[0]}\n\n"
                   for c in (config, small))
    (root / "models.toml").write_text(toml)
    return config, small, root / "models.toml"


def reference_copy(loaded) -> torch.nn.Module:
    """The same weights as a user would hold them: eval mode, parameters requiring grad."""
    module = torchvision.models.resnet18(num_classes=CLASSES)
    module.load_state_dict(loaded.module.state_dict())
    return module.eval()


def measure(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        config, small, repository = write_repository(Path(folder), args.occlusion_size)
        loaded, loaded_small = load_model(config), load_model(small)
        replica = Replica(loaded, torch.device("cpu"))
        replica_small = Replica(loaded_small, torch.device("cpu"))
        model, model_small = reference_copy(loaded), reference_copy(loaded_small)
        generator = torch.Generator().manual_seed(1)
        images = torch.randn(8, 3, SIZE, SIZE, generator=generator)
        targets = [3, 14, 159, 265, 358, 479, 812, 999]
        refs = references(model, args.smoothgrad_samples)
        params_of = {"smoothgrad": {"samples": args.smoothgrad_samples}}
        for batch in (1, 8):
            x, t = images[:batch], targets[:batch]
            for method in [m for m in (*SINGLE_PASS[:2], "smoothgrad", *SINGLE_PASS[2:])
                           if m in args.methods]:
                params = params_of.get(method, {})
                times = wall_and_cpu({"ours": ours(loaded, replica, method, params),
                                      **dict(refs[method]),
                                      "floor": forward_backward(replica.module)},
                                     x, t, args.threads, args.repeats)
                row = {"method": method, "batch": batch, "input": SIZE, "params": params,
                       "ours": times.pop("ours"), "floor_fwd_bwd": times.pop("floor"),
                       "references": times}
                if batch == 1:
                    row["lowest_graph_module"] = lowest_graph_module(loaded, replica, method,
                                                                     params, x[0])
                rows.append(row)
                print(format_row(row), flush=True)
        if "occlusion" in args.methods:
            rows.append(occlusion_row(args, loaded_small, replica_small, model_small))
            print(format_row(rows[-1]), flush=True)
        if args.served:
            serve_rows(args, repository, rows, images, targets)
    return {"threads": args.threads, "repeats": args.repeats, "rows": rows}


def occlusion_row(args, loaded, replica, model) -> dict:
    size, params = args.occlusion_size, {"window": 32, "stride": 2}
    image = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(2))
    # ours at the default max_batch_size (32 rows a pass), and configured for 128 rows a pass,
    # the batch Captum's largest perturbations_per_eval uses
    functions = {"ours": ours(loaded, replica, "occlusion", params),
                 "ours_128": ours(loaded, replica, "occlusion", params, max_batch_size=128),
                 "floor": forward_backward(replica.module)}
    for per_eval in args.per_eval:
        functions[f"Captum Occlusion ppe={per_eval}"] = (
            lambda images, targets, per_eval=per_eval: Occlusion(model).attribute(
                images, sliding_window_shapes=(3, 32, 32), strides=(3, 2, 2), baselines=0.0,
                target=targets, perturbations_per_eval=per_eval))
    times = wall_and_cpu(functions, image, [3], args.threads, args.occlusion_repeats)
    return {"method": "occlusion", "batch": 1, "input": size, "params": params,
            "ours": times.pop("ours"), "ours_max_batch_128": times.pop("ours_128"),
            "floor_fwd_bwd": times.pop("floor"), "references": times,
            "lowest_graph_module": lowest_graph_module(loaded, replica, "occlusion", params,
                                                       image[0])}


def serve_rows(args, repository: Path, rows: list[dict], images, targets) -> None:
    with ServerProcess(repository) as server:
        for row in rows:
            model = "resnet18_small" if row["method"] == "occlusion" else "resnet18"
            batch = row["batch"]
            x = images[:batch] if model == "resnet18" else torch.randn(
                1, 3, row["input"], row["input"], generator=torch.Generator().manual_seed(2))
            repeats = args.occlusion_repeats if row["method"] == "occlusion" else args.repeats
            row["served"] = seconds_per_image(
                {"served": served(server.address, model, row["method"], row["params"])},
                x, targets[:batch], repeats)["served"]
            print(f"served {row['method']:24s} batch {batch}: {row['served'] * 1000:9.1f} ms/image",
                  flush=True)


def format_row(row: dict) -> str:
    refs = ", ".join(f"{name} {value['wall'] * 1000:.1f}/{value['cpu'] * 1000:.1f}"
                     for name, value in row["references"].items())
    return (f"{row['method']:24s} b{row['batch']} ours {row['ours']['wall'] * 1000:.1f}/"
            f"{row['ours']['cpu'] * 1000:.1f} ms/img (wall/cpu) | {refs} | fwd+bwd "
            f"{row['floor_fwd_bwd']['wall'] * 1000:.1f}/{row['floor_fwd_bwd']['cpu'] * 1000:.1f} | "
            f"graph from {row.get('lowest_graph_module', '-')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, smaller occlusion")
    parser.add_argument("--no-served", dest="served", action="store_false",
                        help="skip the real-server column")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    add_out_argument(parser, NAME)
    parser.add_argument("--methods", default=",".join((*SINGLE_PASS, "smoothgrad", "occlusion")),
                        help="comma-separated subset of the methods to measure")
    args = parser.parse_args()
    args.repeats = 1 if args.quick else 3
    args.occlusion_repeats = 1
    args.occlusion_size = 48 if args.quick else 64  # 9 x 9 or 17 x 17 positions of 32 x 32
    args.smoothgrad_samples = 4 if args.quick else 16
    args.per_eval = (16, 81) if args.quick else (8, 32, 128, 289)  # 289: every position at once
    args.methods = args.methods.split(",")
    result = measure(args)
    settings = {"quick": args.quick, "model": "torchvision resnet18, random weights, 1,000 classes",
                "size": SIZE, "batches": [1, 8], "threads": args.threads,
                "repeats": args.repeats, "occlusion_repeats": args.occlusion_repeats,
                "occlusion_size": args.occlusion_size,
                "occlusion_params": {"window": 32, "stride": 2},
                "occlusion_per_eval": list(args.per_eval),
                "smoothgrad": {"samples": args.smoothgrad_samples, "noise_level": 0.15},
                "max_batch_size": BatchingConfig().max_batch_size, "served": args.served,
                "methods": args.methods}
    write_result(NAME, settings, {"rows": result["rows"]}, args.out)


if __name__ == "__main__":
    main()
