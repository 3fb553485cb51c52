"""`explainserve maximize`: stream a Maximize call with a progress bar, write the final image
(and with --gif, the frames as an animation). Only the thin client is used here."""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from PIL import Image

BAR_WIDTH = 30
GIF_FRAME_MS = 80


class ProgressBar:
    """A one-line text bar on a stream (stderr), redrawn in place with a carriage return."""

    def __init__(self, total: int, stream: TextIO | None = None) -> None:
        self.total = max(1, total)
        self.stream = stream or sys.stderr
        self._width = 0

    def update(self, done: int, note: str = "") -> None:
        filled = BAR_WIDTH * min(done, self.total) // self.total
        line = f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {done}/{self.total} steps {note}"
        # pad to the last line's width: a shorter line must not leave its predecessor's tail
        self.stream.write("\r" + line.ljust(self._width))
        self._width = max(self._width, len(line))
        self.stream.flush()

    def close(self) -> None:
        self.stream.write("\n")
        self.stream.flush()


def parse_param(text: str) -> tuple[str, Any]:
    """KEY=VALUE with a JSON value (numbers, true/false) or else a plain string."""
    key, separator, value = text.partition("=")
    if not separator or not key:
        raise argparse.ArgumentTypeError(f"--param {text!r} is not KEY=VALUE")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


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
    bar = ProgressBar(steps)
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
