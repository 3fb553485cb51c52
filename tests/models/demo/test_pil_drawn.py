"""The demo model on shapes drawn without our generator: PIL's own primitives (pil_shapes), at
1x with hard edges, on plain and noisy backgrounds. Accuracy and Grad-CAM's strict pointing
game are measured through a real server and the real client, as a user would see them."""
from __future__ import annotations

import ast
import inspect
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from explainserve.models.demo import pil_shapes, shapes

IMAGES, SEED = 200, 31337  # training never sees a PIL-drawn image; this seed is unused elsewhere
MIN_ACCURACY, MIN_POINTING = 0.98, 0.90


@pytest.fixture(scope="module")
def drawn() -> list[pil_shapes.PilSample]:
    return pil_shapes.generate(IMAGES, SEED)


def test_pil_shapes_never_use_the_generator() -> None:
    tree = ast.parse(inspect.getsource(pil_shapes))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported <= {"__future__", "dataclasses", "numpy", "PIL"}, imported


def test_pil_shapes_use_the_models_label_order() -> None:
    assert pil_shapes.CLASS_NAMES == shapes.CLASS_NAMES


def test_drawn_images_are_deterministic_balanced_and_match_their_masks(drawn) -> None:
    again = pil_shapes.generate(IMAGES, SEED)
    assert all(np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
               for a, b in zip(drawn, again))
    assert np.bincount([s.label for s in drawn]).tolist() == [IMAGES // 8] * 8
    assert {s.background for s in drawn} == set(pil_shapes.BACKGROUNDS)
    for sample in drawn:
        assert sample.image.shape == (64, 64, 3) and sample.image.dtype == np.uint8
        mask = sample.mask
        assert mask.sum() >= 20  # the smallest (16-pixel) triangle still covers ~80 pixels
        assert not (mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())
        if sample.background == "plain":  # hard edges: one colour inside, another outside
            inside = np.unique(sample.image[mask], axis=0)
            outside = np.unique(sample.image[~mask], axis=0)
            assert len(inside) == len(outside) == 1
            assert np.linalg.norm(inside[0].astype(float) - outside[0]) >= 85  # after rounding


def test_ring_has_a_hole_and_cross_has_four_arms(drawn) -> None:
    for sample in drawn:
        ys, xs = np.nonzero(sample.mask)
        centre = (round(ys.mean()), round(xs.mean()))
        name = pil_shapes.CLASS_NAMES[sample.label]
        if name == "ring":
            assert not sample.mask[centre]
        elif name in ("circle", "square", "hexagon", "cross", "star"):
            assert sample.mask[centre]


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="8"):
        pil_shapes.draw(np.random.default_rng(0), 8)
    with pytest.raises(ValueError, match="-1"):
        pil_shapes.generate(-1, 0)


def test_accuracy_and_gradcam_pointing_on_pil_drawn_shapes(demo_client, drawn) -> None:
    """Top-1 accuracy, and the strict pointing game (Zhang et al. 2016): Grad-CAM for the
    true class at the default layer peaks on a pixel of the object's mask."""
    def explain(sample: pil_shapes.PilSample) -> tuple[bool, bool]:
        (predicted,) = demo_client.explain(sample.image, model="demo", method="gradcam",
                                           outputs=("heatmap",))
        correct = predicted.target == sample.label
        if correct:
            explained = predicted
        else:
            (explained,) = demo_client.explain(sample.image, model="demo", method="gradcam",
                                               targets=[sample.label], outputs=("heatmap",))
        heatmap = explained.heatmap
        peak = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
        return correct, bool(heatmap.any() and sample.mask[peak])
    with ThreadPoolExecutor(max_workers=8) as pool:  # concurrent requests share batches
        correct, hits = (np.array(column) for column in zip(*pool.map(explain, drawn)))
    accuracy, pointing = correct.mean(), hits.mean()
    assert accuracy >= MIN_ACCURACY, f"accuracy {accuracy:.3f} on {IMAGES} PIL-drawn images"
    assert pointing >= MIN_POINTING, f"pointing {pointing:.3f} on {IMAGES} PIL-drawn images"
