"""`explainserve embed` against a running server (vectors, projection, labels, plot and its
progress bar), and the gallery's t-SNE of the demo model (cli/embed_plot.py)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def test_cli_writes_vectors_projection_and_plot(server, tmp_path, capsys):
    from explainserve.cli.main import main
    generator = np.random.default_rng(8)
    for folder in ("a", "b"):
        (tmp_path / "images" / folder).mkdir(parents=True)
        for index in range(3):
            Image.fromarray(generator.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
                tmp_path / "images" / folder / f"{index}.png")
    out, plot = tmp_path / "e.npz", tmp_path / "tsne.png"
    code = main(["embed", str(tmp_path / "images"), "--out", str(out), "--project", "tsne",
                 "--plot", str(plot), "--server", server.address, "--model", "resnet18",
                 "--neighbours", "2", "--thumbnails"])
    assert code == 0
    saved = np.load(out)
    assert saved["vectors"].shape == (6, 512) and saved["projection"].shape == (6, 2)
    assert saved["labels"].tolist() == [0, 0, 0, 1, 1, 1]
    assert Image.open(plot).size[1] == 900
    captured = capsys.readouterr()
    assert "6 vectors" in captured.out and "6/6" in captured.err


def test_demo_model_embedding_separates_the_shapes(demo_client):
    from explainserve.cli.embed_plot import embed_shapes, tsne_plot
    embedding, pictures = embed_shapes(demo_client, 120, seed=7, project=None, neighbours=5)
    assert embedding.vectors.shape == (120, 128) and len(pictures) == 120
    assert embedding.knn_accuracy() > 0.8  # benchmarks/embed_quality.py measures 1,000
    assert Image.open(io.BytesIO(tsne_plot(demo_client, count=30))).size == (1050, 900)
