"""Every Explain method on one model of every torchvision classification family and five timm
families: each answers OK or a named FAILED_PRECONDITION / INVALID_ARGUMENT (never INTERNAL or
another code), no map is all NaN, and every layer method's map has its layer's [h, w].

    python benchmarks/model_zoo.py [--quick] [--models a,b] [--methods x,y] [--out PATH]

Random weights. Each model is served alone by an in-process server (one at a time, so memory
stays bounded), asked for every registered method with its default parameters and the
model's default layer, on one random image at the model's input size. --quick runs three
tiny models (a small torchvision ViT, a small Swin, timm DeiT-tiny at 32x32) only.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "server"), str(ROOT / "client"), str(ROOT / "tests"), str(ROOT / "benchmarks")]

from explainserve.app import BackgroundServer  # noqa: E402
from explainserve.config import ModelConfig, ServerConfig  # noqa: E402
from explainserve.methods.explain.registry import get_method, list_methods  # noqa: E402
from explainserve_client import Client, ExplainServeError  # noqa: E402
from results import add_out_argument, write_result  # noqa: E402

NAME = "model_zoo"
ALLOWED = {"OK", "FAILED_PRECONDITION", "INVALID_ARGUMENT"}
TORCHVISION = {  # family -> (architecture, input size)
    "alexnet": ("alexnet", 224), "convnext": ("convnext_tiny", 224),
    "densenet": ("densenet121", 224), "efficientnet": ("efficientnet_b0", 224),
    "efficientnet_v2": ("efficientnet_v2_s", 224), "googlenet": ("googlenet", 224),
    "inception_v3": ("inception_v3", 299), "maxvit": ("maxvit_t", 224),
    "mnasnet": ("mnasnet0_5", 224), "mobilenet_v2": ("mobilenet_v2", 224),
    "mobilenet_v3": ("mobilenet_v3_small", 224), "regnet": ("regnet_y_400mf", 224),
    "resnet": ("resnet18", 224), "resnext": ("resnext50_32x4d", 224),
    "shufflenet_v2": ("shufflenet_v2_x0_5", 224), "squeezenet": ("squeezenet1_1", 224),
    "swin": ("swin_t", 224), "swin_v2": ("swin_v2_t", 256), "vgg": ("vgg11", 224),
    "vit": ("vit_b_16", 224), "wide_resnet": ("wide_resnet50_2", 224),
}
TIMM = {"timm_vit": "vit_tiny_patch16_224", "timm_deit": "deit_tiny_patch16_224",
        "timm_swin": "swin_tiny_patch4_window7_224", "timm_convnext": "convnext_atto",
        "timm_efficientnet": "efficientnet_b0"}


def zoo(quick: bool) -> list[ModelConfig]:
    if quick:
        return [ModelConfig("small_vit", "python:vit_models:build_small_vit", None, 5, (32, 32)),
                ModelConfig("small_swin", "python:vit_models:build_small_swin", None, 5, (64, 64)),
                ModelConfig("timm_deit_32", "timm:deit_tiny_patch16_224", None, 10, (32, 32),
                            options=(("img_size", 32),))]
    configs = [ModelConfig(family, f"torchvision:{arch}", None, 1000, (size, size),
                           # torchvision's inception_v3 / googlenet build auxiliary heads
                           # only in training; eval-mode forwards return logits
                           options=(("aux_logits", False), ("init_weights", True))
                           if family in ("googlenet", "inception_v3") else ())
               for family, (arch, size) in TORCHVISION.items()]
    configs += [ModelConfig(family, f"timm:{name}", None, 1000, (224, 224)) for family, name in TIMM.items()]
    return configs


def check_model(config: ModelConfig, methods: list[str]) -> list[dict]:
    rows = []
    server_config = ServerConfig(host="127.0.0.1", port=0, metrics_port=None, device="auto",
                                 models=(config,))
    with BackgroundServer(server_config) as background, \
            Client(background.address, timeout=600) as client:
        description = client.get_model(config.name)
        layers = {layer.name: layer for layer in description.layers}
        image = np.random.default_rng(0).standard_normal((3, *config.input_size)).astype(np.float32)
        for method in methods:
            spec = get_method(method)
            started = time.perf_counter()
            row = {"model": config.name, "arch": config.arch, "method": method,
                   "layer": description.default_layer if spec.uses_layer else ""}
            try:
                (result, *_) = client.explain(image, model=config.name, method=method, targets=[1])
                row["code"], row["message"] = "OK", ""
                row.update(inspect(result, layers.get(row["layer"]) if spec.spatial_layer else None,
                                   config.input_size))
            except ExplainServeError as error:
                row["code"], row["message"] = error.code.name, error.details[:300]
            row["seconds"] = time.perf_counter() - started
            row["ok"] = row["code"] in ALLOWED and not row.get("all_nan") and row.get("shape_ok", True)
            rows.append(row)
            print(f"{config.name:20} {method:24} {row['code']:20} {row['seconds']:.2f}s",
                  file=sys.stderr)
    return rows


def inspect(result, layer, input_size) -> dict:
    """all_nan: some returned map is NaN everywhere; shape_ok: a layer method's attribution
    is its layer's [h, w] and every heatmap the input's [H, W]."""
    maps = [m for m in (result.attribution, result.heatmap) if m is not None]
    figures = {"all_nan": any(bool(np.isnan(m).all()) for m in maps)}
    shape_ok = result.heatmap is None or tuple(result.heatmap.shape) == tuple(input_size)
    if layer is not None and result.attribution is not None and result.attribution.ndim == 2:
        shape_ok &= tuple(result.attribution.shape) == (layer.layout.height, layer.layout.width)
        figures["grid"] = [layer.layout.height, layer.layout.width]
    figures["shape_ok"] = bool(shape_ok)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="three tiny models")
    parser.add_argument("--models", default="", help="comma-separated names (default: all)")
    parser.add_argument("--methods", default="", help="comma-separated (default: every method)")
    add_out_argument(parser, NAME)
    args = parser.parse_args()
    configs = [c for c in zoo(args.quick) if not args.models or c.name in args.models.split(",")]
    methods = args.methods.split(",") if args.methods else list_methods()
    rows = [row for config in configs for row in check_model(config, methods)]
    failures = [row for row in rows if not row["ok"]]
    figures = {"rows": rows, "models": len(configs), "methods": len(methods),
               "failures": len(failures), "all_ok": not failures}
    settings = {"quick": args.quick, "models": [c.name for c in configs], "methods": methods}
    path = write_result(NAME, settings, figures, args.out)
    print(f"{len(rows)} answers, {len(failures)} failures; wrote {path}", file=sys.stderr)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
