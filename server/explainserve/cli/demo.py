"""`explainserve demo`: serve the built-in demo model, send generated images through the real
client, and write a gallery (PNG files and one index.html)."""

from __future__ import annotations

import argparse
import html
import sys
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from explainserve_client import Client, ExplainServeError
from explainserve_client.images import encode_png
from PIL import Image

from explainserve.app import BackgroundServer
from explainserve.config import ServerConfig
from explainserve.models.demo import shapes
from explainserve.models.demo.repository import demo_model_config

logger = logging.getLogger(__name__)

GALLERY_SEED = 20261122  # not a training seed: the gallery shows images the model never saw


@dataclass(frozen=True)
class GallerySize:
    """How much the gallery shows; `QUICK` is a smoke-sized gallery of every section."""

    classes: int | None = None  # single-object images: one per class, or the first N classes
    two_object_images: int = 4
    maximize_steps: int = 0  # 0: the objective's default
    tsne_points: int = 500


FULL = GallerySize()
QUICK = GallerySize(classes=2, two_object_images=1, maximize_steps=8, tsne_points=40)


@dataclass
class GalleryRow:
    name: str
    labels: tuple[int, ...]
    predicted: str = ""
    cells: list[tuple[str, str, str]] = field(default_factory=list)  # (method, caption, file)


def gallery_samples(size: GallerySize = FULL) -> list[shapes.Sample]:
    """One single-object image per class, then a few two-object images."""
    rng = np.random.default_rng(GALLERY_SEED)
    classes = range(size.classes if size.classes is not None else len(shapes.CLASS_NAMES))
    singles = [shapes.draw_sample(rng, 1, classes=[c]) for c in classes]
    pairs = [shapes.draw_sample(rng, 2) for _ in range(size.two_object_images)]
    return singles + pairs


def add_parser(commands) -> None:
    demo = commands.add_parser("demo", help="serve the demo model and write a gallery")
    demo.add_argument("--out", default="gallery")
    demo.add_argument("--device", default="auto")
    demo.add_argument("--quick", action="store_true",
                      help="a small gallery (2 classes, short Maximize, 40 t-SNE points)")
    demo.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    index = run_demo(Path(args.out), device=args.device, size=QUICK if args.quick else FULL)
    sys.stdout.write(f"gallery written to {index}\n")
    return 0


def run_demo(out: Path, device: str = "auto", size: GallerySize = FULL) -> Path:
    """Write the gallery into `out` and return the path of its index.html."""
    out.mkdir(parents=True, exist_ok=True)
    config = ServerConfig(port=0, metrics_port=None, device=device, models=(demo_model_config(),))
    with BackgroundServer(config) as server, Client(server.address, timeout=300) as client:
        info = client.get_model("demo")
        rows = [_explain_sample(client, info.labels, info.methods, index, sample, out)
                for index, sample in enumerate(gallery_samples(size))]
        extras = _extra_sections(client, out, size)
    index = out / "index.html"
    index.write_text(_page(rows, extras))
    logger.info("wrote %d images x %d methods to %s", len(rows), len(info.methods), index)
    return index


def _explain_sample(client: Client, labels: tuple[str, ...], methods: tuple[str, ...], index: int,
                    sample: shapes.Sample, out: Path) -> GalleryRow:
    name = f"image{index:02d}"
    (out / f"{name}.png").write_bytes(encode_png(Image.fromarray(sample.image)))
    (predicted,) = client.explain(sample.image, model="demo", method="saliency", outputs=())
    row = GalleryRow(name, sample.labels, f"{predicted.label} ({predicted.probability:.0%})")
    for method in methods:
        try:
            explanations = client.explain(sample.image, model="demo", method=method,
                                          targets=list(sample.labels), outputs=("heatmap",),
                                          overlay=True)
        except ExplainServeError as error:  # e.g. a method that needs parameters
            logger.info("gallery skips %s: %s", method, error)
            continue
        for explanation in explanations:
            if not explanation.overlay_png:
                continue  # activations, filters: no heatmap to show
            file = f"{name}_{method}_{explanation.target}.png"
            (out / file).write_bytes(explanation.overlay_png)
            row.cells.append((method, labels[explanation.target], file))
    return row


def _extra_sections(client: Client, out: Path, size: GallerySize) -> list[str]:
    """Sections from the Maximize and Embed RPCs, when this server offers them."""
    sections = []
    for title, render in (("Class model visualisations (Maximize)", _class_visualisations),
                          ("t-SNE of the penultimate layer (Embed)", _tsne_plot)):
        try:
            body = render(client, out, size)
        except ExplainServeError as error:
            logger.info("gallery skips %s: %s", title, error)
            continue
        sections.append(f"<h2>{html.escape(title)}</h2>\n{body}")
    return sections


def _class_visualisations(client: Client, out: Path, size: GallerySize) -> str:
    from explainserve_client.maximize import class_visualisations
    figures = []
    visualisations = class_visualisations(client, model="demo", steps=size.maximize_steps)
    for class_index, png in visualisations.items():
        file = f"maximize_class{class_index}.png"
        (out / file).write_bytes(png)
        figures.append(f'<figure><img src="{file}"><figcaption>{html.escape(shapes.CLASS_NAMES[class_index])}'
                       "</figcaption></figure>")
    return "<div class=row>" + "".join(figures) + "</div>"


def _tsne_plot(client: Client, out: Path, size: GallerySize) -> str:
    from explainserve.cli.embed_plot import tsne_plot
    (out / "tsne.png").write_bytes(tsne_plot(client, model="demo", count=size.tsne_points))
    return '<img class=plot src="tsne.png">'


def _page(rows: list[GalleryRow], extras: list[str]) -> str:
    body = []
    for row in rows:
        truth = " + ".join(shapes.CLASS_NAMES[label] for label in row.labels)
        cells = [f'<figure><img src="{row.name}.png"><figcaption>original<br>true: {html.escape(truth)}'
                 f"<br>predicted: {html.escape(row.predicted)}</figcaption></figure>"]
        cells += [f'<figure><img src="{file}"><figcaption>{html.escape(method)}<br>'
                  f"explains: {html.escape(caption)}</figcaption></figure>"
                  for method, caption, file in row.cells]
        body.append(f"<div class=row>{''.join(cells)}</div>")
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>ExplainServe demo gallery</title>
<style>
body {{ font-family: sans-serif; margin: 1em; }}
.row {{ display: flex; flex-wrap: wrap; gap: 6px; margin-bottom: 14px; border-bottom: 1px solid #ddd; }}
figure {{ margin: 0; text-align: center; font-size: 11px; width: 132px; }}
figure img {{ width: 128px; height: 128px; image-rendering: pixelated; }}
img.plot {{ max-width: 900px; }}
</style></head><body>
<h1>ExplainServe demo gallery</h1>
<p>The built-in demo model on images it never saw. Each row: the original, then every
attribution method's heatmap over the image, for each true class in the image (two-object rows
show the map for each class: class-discriminative methods point at the matching object).</p>
{chr(10).join(body)}
{chr(10).join(extras)}
</body></html>
"""
