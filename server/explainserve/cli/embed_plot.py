"""The demo model's embedding space, measured and drawn: k-nearest-neighbour class accuracy on
freshly generated shapes, and the t-SNE plot of the seeds' FC7 figure (for the gallery and
benchmarks/embed_quality.py). Runs through any Client; numpy, PIL and the shape generator only."""

from __future__ import annotations

import numpy as np
from explainserve_client import Client, Embedding
from explainserve_client.scatter import scatter_png

from explainserve.models.demo import shapes

# Not the training seed (0), the evaluation seeds (12345, 12346) nor the gallery's.
EMBED_SEED = 60606


def embed_shapes(client: Client, count: int = 1000, seed: int = EMBED_SEED, *,
                 model: str = "demo", project: str | None = "tsne", neighbours: int = 10,
                 **options) -> tuple[Embedding, list[np.ndarray]]:
    """Embed `count` fresh shape images at the default (penultimate) layer, with their true
    classes as labels; returns the embedding and small thumbnails of the images."""
    samples = shapes.generate(count, seed)
    embedding = client.embed((sample.image for sample in samples), model=model, project=project,
                             neighbours=neighbours, labels=[s.labels[0] for s in samples], **options)
    return embedding, [samples[i].image for i in embedding.indices]


def tsne_plot(client: Client, model: str = "demo", count: int = 500, seed: int = EMBED_SEED,
              thumbnails: bool = False) -> bytes:
    """PNG of the t-SNE map of `count` fresh shapes at the penultimate layer, coloured by true
    class (or showing the images themselves), titled with the 10-NN accuracy."""
    embedding, pictures = embed_shapes(client, count, seed, model=model, timeout=600)
    accuracy = embedding.knn_accuracy()
    title = (f"t-SNE of the penultimate layer of {model!r}: {len(pictures)} unseen images, "
             f"10-NN class accuracy {accuracy:.1%}")
    return scatter_png(embedding.projection, embedding.labels, shapes.CLASS_NAMES,
                       thumbnails=pictures if thumbnails else None, title=title)
