"""ViT-B/16 at 224: served Grad-CAM at 16 clients against the in-process floor at the batch the
server formed (goal >= 0.85), and attention rollout against a bare forward pass (goal <= 1.3x).

    python benchmarks/vit.py [--quick] [--seconds S] [--repeats N] [--out PATH]

The floor is measured as benchmarks/load.py measures it: the same weights on a replica laid
out as the server's, forward then backward from the scores to the default layer (the input of
the last block's first LayerNorm), per image at the batch size the 16 clients formed, after the
served run, on a thread of its own. Rollout and the bare forward run interleaved in process,
same batch, same replica. --quick: 32x32 inputs and 2-second scenarios, to prove the script.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
import torchvision
from safetensors.torch import save_file

from explainserve import hooks
from explainserve.config import load_model_repository
from explainserve.methods.explain.attention import rollout_kernel
from explainserve.models.registry import load_model
from explainserve.workers.pool import Replica
from load import ServerProcess, batch_stats, drive, gradcam_requests  # benchmarks/ is on the path
from results import add_out_argument, write_result

NAME = "vit"
BATCHING = {"max_batch_size": 16, "max_queue_delay_ms": 2.0, "max_queue_size": 64}


def write_repository(root: Path, size: int) -> Path:
    """vit_b_16 with random weights (seed 0) and a random head (torchvision zero-initialises
    it, which would make every class score 0 and every gradient vanish)."""
    torch.manual_seed(0)
    model = torchvision.models.vit_b_16(num_classes=1000, image_size=size)
    torch.nn.init.normal_(model.heads.head.weight, std=0.02)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(root / "vit.safetensors"))
    extra = "".join(f"{key} = {value}\n" for key, value in BATCHING.items())
    (root / "models.toml").write_text(
        f'[models.vit_b_16]\narch = "torchvision:vit_b_16"\nweights = "vit.safetensors"\n'
        f"num_classes = 1000\ninput_size = {size}\n{extra}"
        f"[models.vit_b_16.options]\nimage_size = {size}\n")
    return root / "models.toml"


def timed(function, repeats: int) -> float:
    function()
    started = time.perf_counter()
    for _ in range(repeats):
        function()
    return (time.perf_counter() - started) / repeats


def gradcam_floor(replica: Replica, layer: str, inputs: torch.Tensor) -> None:
    """Forward, then backward from the scores to the layer's output only (the Grad-CAM work)."""
    with hooks.capture_outputs({layer: replica.layer(layer)}, for_gradient=True) as captured:
        logits = replica.module(inputs)
    torch.autograd.grad(logits[:, 0].sum(), captured.outputs[layer])


def in_process(loaded, formed: int, size: int, repeats: int) -> dict:
    replica = Replica(loaded, torch.device("cpu"))
    inputs = torch.randn(formed, 3, size, size)
    floor = timed(lambda: gradcam_floor(replica, loaded.default_layer, inputs), repeats) / formed
    layout = [l.layout for l in loaded.layers if l.layout.kind == "tokens"][-1]
    targets = torch.full((formed,), -1)
    forward_s, rollout_s = [], []
    for _ in range(repeats):  # interleaved, so drift in the machine's load hits both sides
        with torch.no_grad():
            forward_s.append(timed(lambda: replica.module(inputs), 1))
        rollout_s.append(timed(lambda: rollout_kernel(
            replica, inputs, targets, modules=loaded.attention_modules, layout=layout,
            fusion="mean", ratio=0.0, upsample_mode="bilinear"), 1))
    return {"gradcam_floor_per_image_s": floor, "forward_s": min(forward_s),
            "rollout_s": min(rollout_s), "batch": formed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="32x32 inputs, 2 s per scenario")
    parser.add_argument("--seconds", type=float, default=None, help="per served scenario (default 30)")
    parser.add_argument("--repeats", type=int, default=None, help="floor repeats (default 10)")
    add_out_argument(parser, NAME)
    args = parser.parse_args()
    size = 32 if args.quick else 224
    seconds = args.seconds or (2.0 if args.quick else 30.0)
    repeats = args.repeats or (2 if args.quick else 10)
    requests = gradcam_requests(32, size, model="vit_b_16")
    with tempfile.TemporaryDirectory() as scratch:
        repository = write_repository(Path(scratch), size)
        loaded = load_model(load_model_repository(repository)[0])
        with ServerProcess(repository) as server:
            asyncio.run(drive(server.address, requests, 1, min(seconds, 3.0)))  # warm-up
            before = server.metrics()
            served = asyncio.run(drive(server.address, requests, 16, seconds))
            served["mean_batch"] = batch_stats(before, server.metrics())
    formed = max(1, round(served["mean_batch"]))
    torch.ones(256, 256) @ torch.ones(256, 256)
    with ThreadPoolExecutor(1) as worker:  # as load.py: the floor on a thread of its own
        local = worker.submit(in_process, loaded, formed, size, repeats).result()
    floor_throughput = 1.0 / local["gradcam_floor_per_image_s"]
    figures = {"served_16_clients": served, "in_process": local,
               "served_vs_floor": served["throughput"] / floor_throughput,
               "rollout_vs_forward": local["rollout_s"] / local["forward_s"],
               "goals": {"served_vs_floor": 0.85, "rollout_vs_forward": 1.3}}
    settings = {"quick": args.quick, "model": "torchvision vit_b_16, random weights",
                "size": size, "seconds": seconds, "repeats": repeats, "batching": BATCHING,
                "layer": loaded.default_layer}
    path = write_result(NAME, settings, figures, args.out)
    print(f"served/floor {figures['served_vs_floor']:.2f} (goal >= 0.85), rollout/forward "
          f"{figures['rollout_vs_forward']:.2f} (goal <= 1.3); wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
