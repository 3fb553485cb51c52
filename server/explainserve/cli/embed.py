"""`explainserve embed DIR_OR_FILES... --out embeddings.npz [--project tsne] [--plot FILE.png]`.

Images are read one at a time while they stream to the server. Files in class sub-folders
(DIR/circle/1.png, DIR/square/2.png) are labelled by folder: the plot is coloured by folder and
the k-NN class accuracy is printed; otherwise points are coloured by the predicted class.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from explainserve.cli.params import add_server_option
from explainserve.cli.progress import ProgressBar

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}


def image_paths(arguments: list[str]) -> list[Path]:
    """Files as given, and the images under each directory (recursively, sorted)."""
    paths: list[Path] = []
    for argument in map(Path, arguments):
        if argument.is_dir():
            paths += sorted(p for p in argument.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        elif argument.is_file():
            paths.append(argument)
        else:
            raise SystemExit(f"explainserve embed: {argument} is neither a file nor a directory")
    if not paths:
        raise SystemExit("explainserve embed: no images found")
    return paths


def _progress(total: int):
    """The client's per-item callback, redrawing the bar about 200 times in all."""
    bar = ProgressBar(total, "embedding", "images", rate=True)

    def update(done: int) -> None:
        if done == total or not done % max(1, total // 200):
            bar.update(done)
        if done == total:
            bar.close()
    return update


def run(args: argparse.Namespace) -> int:
    from explainserve_client import Client
    from explainserve_client.scatter import scatter_png

    paths = image_paths(args.images)
    folders = sorted({path.parent.name for path in paths})
    labelled = len(folders) > 1
    labels = [folders.index(path.parent.name) for path in paths] if labelled else None
    with Client(args.server, timeout=args.timeout) as client:
        result = client.embed(iter(paths), model=args.model, layer=args.layer,
                              pooling=args.pooling, project=args.project, dims=args.dims,
                              neighbours=args.neighbours, metric=args.metric, labels=labels,
                              progress=_progress(len(paths)))
    arrays = {"vectors": result.vectors, "ids": np.asarray(result.ids), "indices": result.indices,
              "predicted": result.predicted, "projection": result.projection}
    if result.neighbours is not None:
        arrays.update(neighbours=result.neighbours, neighbour_distances=result.neighbour_distances)
    if labelled:
        arrays.update(labels=result.labels, label_names=np.asarray(folders))
    np.savez(args.out, **arrays)
    for failure in result.failures:
        sys.stderr.write(f"failed: {failure.id}: {failure.message}\n")
    summary = f"{len(result.ids)} vectors of dimension {result.vectors.shape[1]} -> {args.out}"
    if labelled and args.neighbours:
        summary += f"; {args.neighbours}-NN class accuracy {result.knn_accuracy():.4f}"
    sys.stdout.write(summary + "\n")
    if args.plot:
        colours = result.labels if labelled else result.predicted
        thumbnails = [np.asarray(_thumbnail(Path(i))) for i in result.ids] if args.thumbnails else None
        Path(args.plot).write_bytes(scatter_png(result.projection, colours,
                                                folders if labelled else None, thumbnails,
                                                title=f"{args.project or 'pca'} of {len(result.ids)} images"))
    return 1 if result.failures else 0


def _thumbnail(path: Path):
    from PIL import Image
    with Image.open(path) as image:
        image.thumbnail((64, 64))
        return image.convert("RGB")


def add_parser(commands) -> None:
    embed = commands.add_parser("embed", help="feature vectors, a projection and neighbours of images")
    embed.add_argument("images", nargs="+", help="image files or directories (class sub-folders label them)")
    embed.add_argument("--out", default="embeddings.npz")
    add_server_option(embed)
    embed.add_argument("--model", default="demo")
    embed.add_argument("--layer", help="module path (default: the penultimate layer)")
    embed.add_argument("--pooling", default="mean", choices=("mean", "max", "none"))
    embed.add_argument("--project", choices=("pca", "tsne"), help="projection (default: pca)")
    embed.add_argument("--dims", type=int, default=2, choices=(2, 3))
    embed.add_argument("--neighbours", type=int, default=10)
    embed.add_argument("--metric", default="cosine", choices=("cosine", "l2"))
    embed.add_argument("--plot", help="write a PNG scatter of the projection")
    embed.add_argument("--thumbnails", action="store_true", help="draw the images in the plot")
    embed.add_argument("--timeout", type=float, default=3600.0)
    embed.set_defaults(run=run)
