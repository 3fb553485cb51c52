"""`explainserve explain IMAGE...`: explain images with a running server; writes heatmap and
overlay PNGs and prints each target's class and score."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from explainserve.cli.params import add_param_option, add_server_option


def add_parser(commands) -> None:
    explain = commands.add_parser("explain", help="explain images; writes heatmap PNGs")
    explain.add_argument("images", nargs="+")
    add_server_option(explain)
    explain.add_argument("--model", default="demo")
    explain.add_argument("--method", default="gradcam")
    explain.add_argument("--target", type=int, action="append", help="class index (repeatable)")
    explain.add_argument("--top-k", type=int, default=0)
    explain.add_argument("--layer")
    add_param_option(explain, "a method parameter, e.g. --param window=16 (repeatable)")
    explain.add_argument("--out", default="explanations")
    explain.add_argument("--timeout", type=float, default=120.0)
    explain.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from explainserve_client import Client
    from explainserve_client.render import heatmap_png

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with Client(args.server, timeout=args.timeout) as client:
        for image in args.images:
            explanations = client.explain(image, model=args.model, method=args.method,
                                          targets=args.target, layer=args.layer,
                                          top_k=args.top_k, overlay=True,
                                          **dict(args.param or ()))
            for item in explanations:
                stem = f"{Path(image).stem}_{args.method}_{item.target}"
                if item.heatmap is not None:
                    (out / f"{stem}_heatmap.png").write_bytes(heatmap_png(item.heatmap))
                if item.overlay_png:
                    (out / f"{stem}_overlay.png").write_bytes(item.overlay_png)
                sys.stdout.write(f"{image}\t{args.method}\tclass {item.target} ({item.label})\t"
                                 f"score {item.score:.4f}\tp {item.probability:.4f}\n")
    return 0
