"""How well the demo model's embedding space separates the classes: k-nearest-neighbour class
accuracy of 1,000 freshly generated shape images (a seed never used in training) at the default
(penultimate) layer, through a real server, and the t-SNE plot. One command:

    python benchmarks/embed_quality.py [--quick] [--count 1000] [--plot FILE.png] [--out FILE.json]

It writes docs/results/embed_quality.json and the plot docs/embed_tsne.png (with --quick, both
go to the temporary folder). Leave-one-out k-NN: each image's label is the majority label of its k nearest other images
(ties to the nearer). The same on raw pixels is printed for contrast.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from explainserve.app import BackgroundServer
from explainserve.config import ServerConfig
from explainserve.cli.embed_plot import EMBED_SEED, embed_shapes
from explainserve.models.demo import shapes
from explainserve.models.demo.repository import demo_model_config
from explainserve_client import Client
from explainserve_client.scatter import scatter_png

from results import ROOT, add_out_argument, default_path, write_result  # benchmarks/ is on the path

NAME = "embed_quality"
KS = (1, 5, 10)


def knn_accuracy(neighbours: np.ndarray, labels: np.ndarray, k: int) -> float:
    votes = labels[neighbours[:, :k]]
    predicted = []
    for row in votes:
        counts = np.bincount(row, minlength=len(shapes.CLASS_NAMES))
        best = np.flatnonzero(counts == counts.max())
        predicted.append(next(label for label in row if label in best))  # ties to the nearer
    return float(np.mean(np.asarray(predicted) == labels))


def cosine_neighbours(vectors: np.ndarray, k: int) -> np.ndarray:
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    return np.argsort(-similarity, axis=1)[:, :k]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="300 images instead of 1,000")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=EMBED_SEED)
    parser.add_argument("--plot", type=Path, default=None,
                        help="default: docs/embed_tsne.png (with --quick: beside the JSON)")
    parser.add_argument("--thumbnails", action="store_true", help="draw the images, not dots")
    add_out_argument(parser, NAME)
    args = parser.parse_args()
    if args.plot is None:
        args.plot = (default_path(NAME, quick=True).with_name("embed_tsne.png") if args.quick
                     else ROOT / "docs" / "embed_tsne.png")
    count = 300 if args.quick else args.count
    config = ServerConfig(port=0, metrics_port=None, device="cpu", models=(demo_model_config(),))
    with BackgroundServer(config) as server, Client(server.address, timeout=3600) as client:
        started = time.perf_counter()
        embedding, pictures = embed_shapes(client, count, args.seed, project="tsne",
                                           neighbours=max(KS))
        elapsed = time.perf_counter() - started
    labels = embedding.labels
    pixels = np.stack([p.reshape(-1) for p in pictures]).astype(np.float32)
    pixel_neighbours = cosine_neighbours(pixels - pixels.mean(0), max(KS))
    numbers = {
        "images": len(labels), "vector_dim": embedding.vectors.shape[1],
        "failures": len(embedding.failures), "seconds_with_tsne": elapsed,
        "knn_accuracy_cosine": {k: knn_accuracy(embedding.neighbours, labels, k) for k in KS},
        "knn_accuracy_raw_pixels": {k: knn_accuracy(pixel_neighbours, labels, k) for k in KS},
        "top1_accuracy_of_the_classifier": float(np.mean(embedding.predicted == labels)),
    }
    args.plot.parent.mkdir(parents=True, exist_ok=True)
    title = (f"t-SNE of the demo model's penultimate layer: {len(labels)} unseen images "
             f"(seed {args.seed}), 10-NN accuracy {numbers['knn_accuracy_cosine'][10]:.1%}")
    args.plot.write_bytes(scatter_png(embedding.projection, labels, shapes.CLASS_NAMES,
                                      thumbnails=pictures if args.thumbnails else None, title=title))
    print(f"plot written to {args.plot}")
    settings = {"quick": args.quick, "model": "demo", "images": count, "seed": args.seed,
                "layer": "the default (penultimate)", "metric": "cosine", "ks": list(KS),
                "projection": "tsne", "plot": args.plot, "thumbnails": args.thumbnails}
    write_result(NAME, settings, numbers, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
