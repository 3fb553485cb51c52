"""`explainserve demo --out DIR`, the README's first command, on its smoke-sized gallery
(`--quick`: 2 classes and 1 two-object image, 8 Maximize steps, 40 t-SNE points): the files it
writes, their pixels against the same requests sent to a demo server here, and the page that
shows them."""

from __future__ import annotations

import contextlib
import io
import re

import numpy as np
import pytest
from explainserve.cli.demo import QUICK, gallery_samples
from explainserve.cli.main import main
from explainserve.methods.explain.registry import list_methods
from explainserve.models.demo.shapes import CLASS_NAMES
from PIL import Image

NO_HEATMAP = {"activations", "filters"}  # tensors and grids only: no overlay to show
# The demo model is a CNN: attention methods answer FAILED_PRECONDITION and the gallery skips them.
NEEDS_ATTENTION = {"attention_rollout", "attention_gradient"}


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


@pytest.fixture(scope="module")
def gallery(tmp_path_factory):
    """The folder `explainserve demo --quick` wrote; it printed where its page is."""
    out = tmp_path_factory.mktemp("gallery")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["demo", "--out", str(out), "--quick", "--device", "cpu"])
    assert code == 0
    assert printed.getvalue() == f"gallery written to {out / 'index.html'}\n"
    return out


def test_the_quick_gallery_writes_every_section(gallery):
    samples = gallery_samples(QUICK)
    assert [s.labels for s in samples][:2] == [(0,), (1,)] and len(samples) == 3
    methods = sorted(set(list_methods()) - NO_HEATMAP - NEEDS_ATTENTION)
    expected = {"index.html", "tsne.png"}
    expected |= {f"maximize_class{c}.png" for c in range(len(CLASS_NAMES))}
    for index, sample in enumerate(samples):
        expected.add(f"image{index:02d}.png")
        expected |= {f"image{index:02d}_{m}_{t}.png" for m in methods for t in sample.labels}
    assert {path.name for path in gallery.iterdir()} == expected
    for index, sample in enumerate(samples):  # the originals, pixel for pixel
        np.testing.assert_array_equal(pixels((gallery / f"image{index:02d}.png").read_bytes()),
                                      sample.image)
    for path in gallery.glob("*.png"):
        size = (1050, 900) if path.name == "tsne.png" else (64, 64)
        assert Image.open(path).size == size, path.name


def test_the_overlays_and_class_pictures_are_what_the_server_answers(gallery, demo_client):
    for index, sample in enumerate(gallery_samples(QUICK)):
        for method in ("gradcam", "saliency"):
            answers = demo_client.explain(sample.image, model="demo", method=method,
                                          targets=list(sample.labels), outputs=("heatmap",),
                                          overlay=True)
            for answer in answers:
                written = (gallery / f"image{index:02d}_{method}_{answer.target}.png").read_bytes()
                np.testing.assert_array_equal(pixels(written), pixels(answer.overlay_png))
    frames = demo_client.maximize("demo", list(range(len(CLASS_NAMES))), steps=QUICK.maximize_steps)
    for unit, frame in enumerate(frames):
        written = pixels((gallery / f"maximize_class{unit}.png").read_bytes()).astype(int)
        difference = np.abs(written - pixels(frame.png).astype(int))
        # The steps' rows are cut into chunks sized from measured time, so float32 rounding
        # may differ by a last bit between the runs; another class's picture differs in ~94%
        # of its pixels, by up to ~25 levels.
        assert difference.max() <= 2 and (difference == 0).mean() > 0.99, unit


def test_the_page_shows_every_picture_with_its_captions(gallery):
    page = (gallery / "index.html").read_text()
    shown = re.findall(r'<img[^>]* src="([^"]+)"', page)
    assert sorted(shown) == sorted(path.name for path in gallery.glob("*.png"))
    assert page.count("<div class=row>") == 3 + 1  # one row per image, one of class pictures
    for sample in gallery_samples(QUICK):
        truth = " + ".join(CLASS_NAMES[label] for label in sample.labels)
        assert f"true: {truth}<br>predicted: " in page
    assert "<h2>Class model visualisations (Maximize)</h2>" in page
    assert "<h2>t-SNE of the penultimate layer (Embed)</h2>" in page
