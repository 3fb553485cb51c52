"""The Embed projection registry: its built-ins, its errors, and that the server projects a set
with the function the registry holds for the requested name."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from explainserve.errors import NotFound
from explainserve.methods.embed import projection, registry
from explainserve.methods.embed.registry import (ProjectionSpec, get_projection, list_projections,
                                                 register_projection)
from explainserve.models.demo import shapes


@pytest.fixture
def scratch_registry(monkeypatch):
    """A copy of the registry for one test: whatever it registers is gone afterwards."""
    registry.list_projections()  # the built-ins are in before the copy
    monkeypatch.setattr(registry, "_PROJECTIONS", dict(registry._PROJECTIONS))


def pictures(count: int) -> list[np.ndarray]:
    names = shapes.CLASS_NAMES
    return [shapes.draw_shape(names[i % len(names)], seed=i) for i in range(count)]


def test_the_built_in_projections_are_listed_with_their_functions():
    assert list_projections() == ["pca", "tsne"]
    assert get_projection("pca").function is projection.pca
    assert get_projection("tsne").function is projection.tsne
    assert get_projection("tsne").description.startswith("[N, D] -> [N, dims] float32 t-SNE")


def test_an_unknown_projection_is_not_found_and_the_valid_ones_are_named():
    with pytest.raises(NotFound) as error:
        get_projection("umap")
    assert error.value.status == "NOT_FOUND"
    assert error.value.message == "unknown projection 'umap'; valid: pca, tsne"


def test_a_name_registered_twice_is_refused_and_the_first_stays():
    with pytest.raises(ValueError, match="'pca' is registered twice"):
        register_projection("pca")(projection.tsne)
    assert get_projection("pca").function is projection.pca


def test_the_registered_functions_give_their_maps():
    """Points on a line: PCA's first score is the signed distance along it from the centroid
    (sign: the largest loading positive), the second is zero; t-SNE of fewer than
    TSNE_MIN_POINTS points is that PCA map."""
    along = torch.tensor([-1.5, 0.0, 0.5, 1.0], dtype=torch.float64)
    direction = torch.tensor([3.0, 4.0, 0.0], dtype=torch.float64) / 5
    points = along[:, None] * direction + torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    mapped = get_projection("pca").function(points, 2)
    assert mapped.dtype == torch.float32 and mapped.shape == (4, 2)
    torch.testing.assert_close(mapped[:, 0], (along - along.mean()).float(), atol=1e-6, rtol=0)
    torch.testing.assert_close(mapped[:, 1], torch.zeros(4), atol=1e-6, rtol=0)
    few = points[:projection.TSNE_MIN_POINTS - 1]
    torch.testing.assert_close(get_projection("tsne").function(few, 2), projection.pca(few, 2))


def test_a_new_projection_needs_only_its_registration(scratch_registry):
    @register_projection("first_features")
    def first_features(vectors, dims):
        """The first dims features of each vector."""
        return vectors[:, :dims].float()

    assert list_projections() == ["first_features", "pca", "tsne"]
    spec = get_projection("first_features")
    assert spec == ProjectionSpec("first_features", first_features,
                                  "The first dims features of each vector.")


def test_the_server_projects_with_the_registered_function(demo_client, monkeypatch):
    """PCA through the server is the registry's PCA of the vectors it returns; with another
    function under the name, the server's map is that function's."""
    served = demo_client.embed(pictures(6), model="demo", return_vectors=True)
    vectors = torch.from_numpy(served.vectors)
    assert served.projection.shape == (6, 2)
    np.testing.assert_allclose(served.projection, projection.pca(vectors, 2).numpy(), atol=1e-4)
    replaced = ProjectionSpec("pca", lambda rows, dims: rows[:, :dims].float() * 2)
    monkeypatch.setitem(registry._PROJECTIONS, "pca", replaced)
    again = demo_client.embed(pictures(6), model="demo", return_vectors=True, dims=3)
    np.testing.assert_allclose(again.projection, 2 * again.vectors[:, :3], rtol=1e-6)
