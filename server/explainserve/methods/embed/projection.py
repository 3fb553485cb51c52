"""Results for a whole set of feature vectors: a 2-D or 3-D map of the set (PCA, or t-SNE as in
the seeds' FC7 figure, van der Maaten & Hinton 2008) and each vector's nearest neighbours
("images that are nearby in the CNN representation space"). Tensors in, tensors out; the
libraries (scikit-learn) do the numerics, we choose their settings.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import torch
from torch import Tensor

from explainserve.methods.embed.registry import register_projection

logger = logging.getLogger(__name__)

TSNE_MIN_POINTS = 4  # below this t-SNE has no neighbourhoods to keep; PCA answers instead
MAX_PERPLEXITY = 30.0  # scikit-learn's default, for sets large enough to afford it
DISTANCE_BLOCK_ELEMENTS = 1 << 24  # rows x set size per block of the distance matrix (64 MiB)
# t-SNE's OpenMP threads spin while they wait: beside busy device workers they slow each other
# down many times over, so t-SNE gets half of the cores.
TSNE_THREADS = max(1, (os.cpu_count() or 2) // 2)


@register_projection("pca")
def pca(vectors: Tensor, dims: int) -> Tensor:
    """[N, D] -> [N, dims] float32 principal-component scores. Components beyond the rank of
    the centred set are zero; each component's sign makes its largest loading positive
    (scikit-learn's svd_flip), so equal inputs give equal maps."""
    from sklearn.decomposition import PCA

    count, width = vectors.shape
    result = np.zeros((count, dims), dtype=np.float32)
    rank = min(dims, count - 1, width)
    if rank > 0:
        data = vectors.to(torch.float64).numpy()
        result[:, :rank] = PCA(n_components=rank, random_state=0).fit_transform(data)
    return torch.from_numpy(result)


def tsne_perplexity(count: int) -> float:
    """Perplexity is the effective number of neighbours each point keeps; it must stay well
    below the set size, so small sets get (N - 1) / 3 instead of the default 30."""
    return float(min(MAX_PERPLEXITY, max(1.0, (count - 1) / 3)))


@register_projection("tsne")
def tsne(vectors: Tensor, dims: int, seed: int = 0) -> Tensor:
    """[N, D] -> [N, dims] float32 t-SNE map (scikit-learn, PCA initialisation, fixed seed)."""
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    count = vectors.shape[0]
    if count < TSNE_MIN_POINTS:
        logger.info("t-SNE of %d points is undefined; returning PCA", count)
        return pca(vectors, dims)
    model = TSNE(n_components=dims, perplexity=tsne_perplexity(count), init="pca",
                 random_state=seed, method="barnes_hut" if dims < 4 else "exact")
    with threadpool_limits(limits=TSNE_THREADS):
        points = model.fit_transform(vectors.to(torch.float64).numpy())
    return torch.from_numpy(points.astype(np.float32))


def nearest_neighbours(vectors: Tensor, k: int, metric: str) -> tuple[Tensor, Tensor]:
    """The k nearest other vectors of each vector: (row indices int64 [N, k'], distances
    float32 [N, k']) with k' = min(k, N - 1), nearest first. metric "cosine" is 1 - cosine
    similarity, "l2" the Euclidean distance. The distance matrix is built a block of rows at a
    time, so memory stays O(N) per row block, never O(N^2)."""
    count = vectors.shape[0]
    k = min(k, count - 1)
    if k <= 0:
        return torch.zeros(count, 0, dtype=torch.long), torch.zeros(count, 0)
    data = vectors.to(torch.float64)
    if metric == "cosine":
        data = data / data.norm(dim=1, keepdim=True).clamp_min(1e-12)
    block = max(1, DISTANCE_BLOCK_ELEMENTS // count)
    indices, distances = [], []
    for start in range(0, count, block):
        rows = data[start:start + block]
        if metric == "cosine":
            distance = 1.0 - rows @ data.T
        else:
            distance = torch.cdist(rows, data)
        own = torch.arange(start, start + rows.shape[0])
        distance[torch.arange(rows.shape[0]), own] = float("inf")  # a vector is not its own neighbour
        nearest = distance.topk(k, dim=1, largest=False)
        indices.append(nearest.indices)
        distances.append(nearest.values.clamp_min(0.0).to(torch.float32))
    return torch.cat(indices), torch.cat(distances)
