"""Embed's set results (methods/embed/projection.py) against known answers: nearest
neighbours, PCA and t-SNE; no server needed."""

from __future__ import annotations

import numpy as np
import torch
from explainserve.methods.embed import projection


def test_nearest_neighbours_known_answer():
    # Points on a line at 0, 1, 3, 7, 15: each one's nearest others are known by hand.
    points = torch.tensor([[0.0], [1.0], [3.0], [7.0], [15.0]])
    indices, distances = projection.nearest_neighbours(points, 2, "l2")
    assert indices.tolist() == [[1, 2], [0, 2], [1, 0], [2, 1], [3, 2]]
    np.testing.assert_allclose(distances.numpy(), [[1, 3], [1, 2], [2, 3], [4, 6], [8, 12]])
    # Cosine: directions at 0, 10, 30 and 90 degrees (lengths must not matter).
    angles = np.deg2rad([0.0, 10.0, 30.0, 90.0])
    lengths = torch.tensor([1.0, 5.0, 0.2, 3.0])[:, None]
    directions = torch.tensor(np.stack([np.cos(angles), np.sin(angles)], 1), dtype=torch.float32)
    indices, distances = projection.nearest_neighbours(directions * lengths, 1, "cosine")
    assert indices[:, 0].tolist() == [1, 0, 1, 2]
    np.testing.assert_allclose(distances[:, 0].numpy(), 1 - np.cos(np.deg2rad([10, 10, 20, 60])),
                               atol=1e-6)
    few, _ = projection.nearest_neighbours(points[:3], 10, "l2")
    assert few.shape == (3, 2)  # k is capped at N - 1


def test_nearest_neighbours_in_blocks_equal_the_whole_matrix(monkeypatch):
    vectors = torch.randn(50, 8, generator=torch.Generator().manual_seed(3))
    whole = projection.nearest_neighbours(vectors, 4, "l2")
    monkeypatch.setattr(projection, "DISTANCE_BLOCK_ELEMENTS", 7 * 50)
    blocked = projection.nearest_neighbours(vectors, 4, "l2")
    assert torch.equal(whole[0], blocked[0])
    torch.testing.assert_close(whole[1], blocked[1])


def test_pca_equals_the_svd_and_tsne_has_the_asked_shape():
    generator = torch.Generator().manual_seed(4)
    vectors = torch.randn(40, 6, generator=generator) * torch.tensor([9.0, 4.0, 1, 1, 1, 1])
    centred = (vectors - vectors.mean(0)).double().numpy()
    u, s, _ = np.linalg.svd(centred, full_matrices=False)
    projected = projection.pca(vectors, 3).numpy()
    np.testing.assert_allclose(np.abs(projected), np.abs(u[:, :3] * s[:3]), rtol=1e-4, atol=1e-4)
    assert projection.pca(vectors[:2], 3).shape == (2, 3)  # rank 1: the rest are zeros
    assert projection.tsne(vectors[:20], 3).shape == (20, 3)
    assert projection.tsne(vectors[:3], 2).shape == (3, 2)  # too few points: PCA answers
    assert projection.tsne_perplexity(10) == 3.0 and projection.tsne_perplexity(1000) == 30.0
