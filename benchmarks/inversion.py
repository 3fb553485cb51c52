"""How close a feature inversion gets on the demo model, through a real server and the client.
One command writes docs/results/inversion.json:

    python benchmarks/inversion.py [--quick] [--out FILE.json]

For one generated image per class (`shapes.draw_shape(name, seed=3)`), Maximize inverts its
code at the last Conv2d (`features.block4.conv`, 128x16x16) from seeded noise (`seed=2`) with the
request defaults, one request at a time. Measured here, in-process on the returned tensor: the
relative code error ||Phi(x) - Phi0|| / ||Phi0||, whether the reconstruction has the
original's class, and each request's wall time. tests/engine/test_maximize.py asserts the star's
error is below 0.1.
"""

from __future__ import annotations

import argparse
import time

import torch
from explainserve import hooks
from explainserve.app import BackgroundServer
from explainserve.config import ServerConfig
from explainserve.models import preprocess
from explainserve.models.demo import shapes
from explainserve.models.demo.repository import demo_model_config
from explainserve.models.registry import load_model
from explainserve_client import Client
from PIL import Image

from results import add_out_argument, write_result  # benchmarks/ is on the path

NAME = "inversion"
LAYER, IMAGE_SEED, NOISE_SEED = "features.block4.conv", 3, 2


def code_and_class(module: torch.nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, int]:
    with torch.no_grad(), hooks.capture_outputs({LAYER: dict(module.named_modules())[LAYER]}) as seen:
        logits = module(images)
    return seen.outputs[LAYER].double(), int(logits.argmax())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two classes, 64 steps, 1 start")
    add_out_argument(parser, NAME)
    args = parser.parse_args()
    config = demo_model_config()
    module = load_model(config).module
    names = shapes.CLASS_NAMES[:2] if args.quick else shapes.CLASS_NAMES
    params = {"steps": 64, "restarts": 1} if args.quick else {}
    rows = []
    server_config = ServerConfig(host="127.0.0.1", port=0, metrics_port=None, device="cpu",
                                 models=(config,))
    with BackgroundServer(server_config) as server, Client(server.address, timeout=3600) as client:
        for name in names:
            picture = shapes.draw_shape(name, seed=IMAGE_SEED)
            original = preprocess.normalize(Image.fromarray(picture), config.mean, config.std)[None]
            started = time.perf_counter()
            (frame,) = client.maximize("demo", objective="inversion", layer=LAYER,
                                       reference=picture, formats=("tensor",), seed=NOISE_SEED,
                                       **params)
            seconds = time.perf_counter() - started
            target, original_class = code_and_class(module, original)
            code, reconstructed_class = code_and_class(module, torch.from_numpy(frame.tensor)[None])
            error = float((code - target).norm() / target.norm().clamp_min(1e-30))
            rows.append({"class": name, "error": error, "steps": frame.step,
                         "same_class": reconstructed_class == original_class, "seconds": seconds})
            print(f"{name:8s} error {error:.3f}  same class {rows[-1]['same_class']}  "
                  f"{frame.step} steps  {seconds:.1f} s", flush=True)
    settings = {"quick": args.quick, "model": "demo", "layer": LAYER, "image_seed": IMAGE_SEED,
                "noise_seed": NOISE_SEED, "request_params": params or "the defaults",
                "classes": list(names), "requests": "one at a time"}
    write_result(NAME, settings, {"rows": rows}, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
