"""The `box` option (Simonyan et al. 2013, sec. 3.1): foreground above the 95% quantile of the
heatmap, box around its largest connected component."""

from __future__ import annotations

import numpy as np
import pytest
from explainserve.methods.explain.boxes import box_from_heatmap
from explainserve.models.demo import shapes
from support import random_input, reference_module


def test_box_surrounds_the_largest_blob_above_the_quantile():
    heatmap = np.random.default_rng(0).uniform(0, 0.5, (64, 64))
    heatmap[5:20, 40:55] = 1.0  # 225 pixels: the top 5% (205 pixels) lies inside the blobs
    heatmap[50:53, 5:8] = 0.9  # a smaller blob, also above the quantile
    assert box_from_heatmap(heatmap) == (40, 5, 54, 19)


def test_box_of_a_sparse_map_is_its_blob_not_the_whole_image():
    """Over 95% zeros (a ReLU'd Grad-CAM): the quantile is 0, and only what is above it counts."""
    heatmap = np.zeros((64, 64))
    heatmap[10:20, 30:42] = np.linspace(0.2, 1.0, 12)
    heatmap[40, 40] = 0.5  # a single stray pixel
    assert box_from_heatmap(heatmap) == (30, 10, 41, 19)


def test_box_of_a_constant_map_is_the_whole_image():
    assert box_from_heatmap(np.zeros((8, 10))) == (0, 0, 9, 7)


def test_box_through_the_client_is_the_box_of_the_known_heatmap(client, models_by_name):
    """On the linear model the saliency heatmap is max_k |W[c]| scaled, known in advance."""
    weights = reference_module(models_by_name["linear"]).linear.weight.detach().numpy()
    (explanation,) = client.explain(random_input((3, 8, 8)), model="linear", method="saliency",
                                    targets=[2], box=True)
    expected_heatmap = np.abs(weights[2].reshape(3, 8, 8)).max(axis=0)
    assert explanation.box == box_from_heatmap(expected_heatmap / expected_heatmap.max())


@pytest.mark.parametrize("method", ["gradcam", "occlusion"])
def test_box_on_the_demo_model_lands_on_the_object(demo_client, method):
    """Single-object shapes from a seed the demo model never trained on (training uses 0)."""
    hits = 0
    samples = shapes.generate(6, seed=777)
    for sample in samples:
        # The demo model is trained to recognise shapes partly hidden by another object, so
        # an occluder must be on the scale of the objects (12-48 px) to remove one: with a
        # 16-px window 4 of these 6 boxes land on the object, with 24 px all 6.
        params = {"window": 24, "stride": 4} if method == "occlusion" else {}
        (explanation,) = demo_client.explain(sample.image, model="demo", method=method,
                                             targets=list(sample.labels), box=True, **params)
        assert explanation.box == box_from_heatmap(explanation.heatmap)
        x_min, y_min, x_max, y_max = explanation.box
        rows, cols = np.nonzero(sample.masks[0])
        centre_y, centre_x = (y_min + y_max) / 2, (x_min + x_max) / 2
        hits += rows.min() <= centre_y <= rows.max() and cols.min() <= centre_x <= cols.max()
    assert hits >= len(samples) - 1
