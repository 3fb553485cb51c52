"""`explainserve explain IMAGE...`: explain images with a running server; writes heatmap and
overlay PNGs and prints each target's class and score. Given a directory or a glob it runs a
dataset job instead (cli/dataset.py): every image, each --method, across every replica of
--server, with a progress bar, a manifest, and resumption."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from explainserve.cli.params import add_param_option, add_server_option


def add_parser(commands) -> None:
    explain = commands.add_parser(
        "explain", help="explain images, or a directory or glob of them (a dataset job)",
        description="Explain image files (writes heatmap and overlay PNGs), or every image of "
                    "a directory or glob pattern: a dataset job that writes one .npz and one "
                    "overlay .png per image and method plus OUT/manifest.jsonl, spreads the calls "
                    "over every address of --server, retries retriable failures, and skips what "
                    "an earlier run finished.")
    explain.add_argument("images", nargs="+", help="image files, directories or glob patterns")
    add_server_option(explain)
    explain.add_argument("--model", default="demo")
    explain.add_argument("--method", action="append",
                         help="attribution method (repeatable in a dataset job; default gradcam)")
    explain.add_argument("--concurrency", type=int, default=8,
                         help="calls in flight at once in a dataset job (default 8)")
    explain.add_argument("--retries", type=int, default=4,
                         help="further attempts of a retriable failure in a dataset job")
    explain.add_argument("--target", type=int, action="append", help="class index (repeatable)")
    explain.add_argument("--top-k", type=int, default=0)
    explain.add_argument("--layer")
    add_param_option(explain, "a method parameter, e.g. --param window=16 (repeatable)")
    explain.add_argument("--out", default="explanations")
    explain.add_argument("--timeout", type=float, default=120.0)
    explain.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from explainserve.cli.dataset import is_dataset, run_dataset
    if is_dataset(args.images):
        return run_dataset(args)
    from explainserve_client import Client
    from explainserve_client.render import heatmap_png

    if args.method and len(args.method) > 1:
        raise SystemExit("explain: several --method values need a directory or glob (a dataset job)")
    method = args.method[0] if args.method else "gradcam"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with Client(args.server, timeout=args.timeout) as client:
        for image in args.images:
            explanations = client.explain(image, model=args.model, method=method,
                                          targets=args.target, layer=args.layer,
                                          top_k=args.top_k, overlay=True,
                                          **dict(args.param or ()))
            for item in explanations:
                stem = f"{Path(image).stem}_{method}_{item.target}"
                if item.heatmap is not None:
                    (out / f"{stem}_heatmap.png").write_bytes(heatmap_png(item.heatmap))
                if item.overlay_png:
                    (out / f"{stem}_overlay.png").write_bytes(item.overlay_png)
                sys.stdout.write(f"{image}\t{method}\tclass {item.target} ({item.label})\t"
                                 f"score {item.score:.4f}\tp {item.probability:.4f}\n")
    return 0
