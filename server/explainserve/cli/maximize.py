"""`explainserve maximize`: stream a Maximize call with a progress bar, write the final image
(and with --gif, the frames as an animation). Only the thin client is used here."""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path
from typing import Any

from PIL import Image

from explainserve.cli.params import add_param_option, add_server_option
from explainserve.cli.progress import ProgressBar

GIF_FRAME_MS = 80


def add_parser(commands) -> None:
    maximize = commands.add_parser("maximize", help="synthesise an input by gradient ascent; "
                                   "writes the final PNG (and a GIF of the frames)")
    add_server_option(maximize)
    maximize.add_argument("--model", default="demo")
    maximize.add_argument("--objective", default="class",
                          choices=["class", "channel", "neuron", "inversion"])
    maximize.add_argument("--class", dest="class_index", type=int, action="append", metavar="N",
                          help="class index (repeatable; one image each)")
    maximize.add_argument("--channel", type=int, action="append", help="channel (repeatable)")
    maximize.add_argument("--layer", help="module path (channel, neuron, inversion)")
    maximize.add_argument("--reference", help="image to invert, or to start from")
    maximize.add_argument("--init", choices=["zeros", "noise", "image"],
                          help="start image (default: zeros for class, noise otherwise)")
    maximize.add_argument("--steps", type=int, default=256)
    maximize.add_argument("--frame-every", type=int, default=0,
                          help="steps between frames (default: steps/64)")
    maximize.add_argument("--seed", type=int, default=0)
    add_param_option(maximize, "optimiser/prior setting, e.g. l2=0.05 (repeatable)")
    maximize.add_argument("--out", default="maximize.png")
    maximize.add_argument("--gif", nargs="?", const=True, metavar="FILE",
                          help="also write the frames as an animated GIF (default: --out as .gif)")
    maximize.add_argument("--timeout", type=float, default=600.0)
    maximize.set_defaults(run=run)


def output_path(path: Path, index: int, count: int, unit: int) -> Path:
    """The path itself for one image, else one file per image: NAME_<unit>.EXT."""
    return path if count == 1 else path.with_name(f"{path.stem}_{unit}{path.suffix}")


def save_gif(path: Path, frames: list[bytes]) -> None:
    pictures = [Image.open(io.BytesIO(png)).convert("RGB") for png in frames]
    pictures[0].save(path, save_all=True, append_images=pictures[1:], duration=GIF_FRAME_MS,
                     loop=0)


def run(args: argparse.Namespace) -> int:
    from explainserve_client import Client, ExplainServeError
    steps = args.steps
    frame_every = args.frame_every or max(1, steps // 64)
    units = args.class_index if args.objective == "class" else args.channel
    params = dict(args.param or [])
    finals: dict[int, Any] = {}
    animation: dict[int, list[bytes]] = {}
    bar = ProgressBar(steps, unit="steps")
    with Client(args.server, timeout=args.timeout) as client:
        try:
            for frame in client.maximize_frames(
                    args.model, units or [], args.objective, layer=args.layer,
                    reference=args.reference, initialization=args.init, steps=steps,
                    frame_every=frame_every,
                    seed=args.seed, **params):
                animation.setdefault(frame.image_index, []).append(frame.png)
                if frame.final:
                    finals[frame.image_index] = frame
                bar.update(frame.step, f"objective {frame.objective_value:.4g} "
                                       f"class {frame.predicted_class} p {frame.probability:.3f}")
        except ExplainServeError as error:
            bar.close()
            sys.stderr.write(f"maximize failed: {error}\n")
            return 1
    bar.close()
    for index, frame in sorted(finals.items()):
        out = output_path(Path(args.out), index, len(finals), frame.unit)
        out.write_bytes(frame.png)
        if args.gif:
            gif = Path(args.out).with_suffix(".gif") if args.gif is True else Path(args.gif)
            save_gif(output_path(gif, index, len(finals), frame.unit), animation[index])
        sys.stdout.write(f"{out}\tunit {frame.unit}\tstep {frame.step}\tobjective "
                         f"{frame.objective_value:.4f}\tpredicted {frame.predicted_class}\t"
                         f"p {frame.probability:.4f}\n")
    return 0
