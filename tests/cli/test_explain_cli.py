"""`explainserve explain IMAGE --model demo --method gradcam --out DIR` and `explainserve
models` against a running demo server: the PNG files written, their pixels against the same
request made with the client, and the lines printed."""

from __future__ import annotations

import io

import numpy as np
from explainserve.cli.main import main
from explainserve.models.demo.shapes import CLASS_NAMES
from explainserve_client.render import colormap
from PIL import Image


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(path.read_bytes())).convert("RGB"))


def test_explain_writes_the_heatmap_and_overlay_of_the_predicted_class(
        demo_server, demo_client, star_png, tmp_path, capsys):
    image, out = tmp_path / "star.png", tmp_path / "maps"
    image.write_bytes(star_png)
    code = main(["explain", str(image), "--server", demo_server.address, "--model", "demo",
                 "--method", "gradcam", "--out", str(out)])
    assert code == 0
    (expected,) = demo_client.explain(star_png, model="demo", method="gradcam", overlay=True)
    assert expected.label == "star"  # the demo model knows its star
    stem = f"star_gradcam_{expected.target}"
    assert sorted(path.name for path in out.iterdir()) == [f"{stem}_heatmap.png",
                                                           f"{stem}_overlay.png"]
    heatmap = pixels(out / f"{stem}_heatmap.png")
    assert heatmap.shape == (64, 64, 3)
    np.testing.assert_array_equal(heatmap, colormap(expected.heatmap))
    np.testing.assert_array_equal(pixels(out / f"{stem}_overlay.png"),
                                  np.asarray(Image.open(io.BytesIO(expected.overlay_png))))
    assert capsys.readouterr().out == (
        f"{image}\tgradcam\tclass {expected.target} (star)\tscore {expected.score:.4f}\t"
        f"p {expected.probability:.4f}\n")


def test_explain_writes_one_pair_of_files_per_target_and_image(demo_server, demo_client,
                                                                star_png, tmp_path, capsys):
    from explainserve.models.demo.shapes import draw_shape
    from explainserve_client.render import image_png
    circle = tmp_path / "circle.png"
    circle.write_bytes(image_png(draw_shape("circle", seed=1)))
    star = tmp_path / "star.png"
    star.write_bytes(star_png)
    code = main(["explain", str(star), str(circle), "--server", demo_server.address,
                 "--method", "saliency", "--target", "3", "--target", "0", "--out",
                 str(tmp_path / "maps")])
    assert code == 0
    names = sorted(path.name for path in (tmp_path / "maps").iterdir())
    assert names == sorted(f"{stem}_saliency_{t}_{kind}.png" for stem in ("star", "circle")
                           for t in (3, 0) for kind in ("heatmap", "overlay"))
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[:3] for line in lines] == [
        [str(path), "saliency", f"class {t} ({label})"]
        for path in (star, circle) for t, label in ((3, "star"), (0, "circle"))]
    for t in (3, 0):
        (expected,) = demo_client.explain(star_png, model="demo", method="saliency", targets=[t])
        np.testing.assert_array_equal(pixels(tmp_path / "maps" / f"star_saliency_{t}_heatmap.png"),
                                      colormap(expected.heatmap))


def test_models_lists_the_demo_model(demo_server, demo_client, capsys):
    code = main(["models", "--server", demo_server.address])
    assert code == 0
    printed = capsys.readouterr().out
    assert printed == "demo\tpython:explainserve.models.demo:build_demo_model\t8 classes\tcpu\n"
    # The listing's line per model agrees with what GetModel describes, labels included.
    described = demo_client.get_model("demo")
    name, arch, classes, devices = printed.rstrip("\n").split("\t")
    assert (name, arch, devices) == (described.name, described.arch, ",".join(described.devices))
    assert classes == f"{len(described.labels)} classes"
    assert described.labels == CLASS_NAMES


def test_models_layers_prints_each_layer_with_its_layout(demo_server, demo_client, capsys):
    code = main(["models", "--server", demo_server.address, "--layers", "demo"])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    described = demo_client.get_model("demo")
    assert len(lines) == len(described.layers)
    for line, layer in zip(lines, described.layers):
        name, kind, shape, layout = line.split("\t")
        assert name.rstrip("*") == layer.name and kind == layer.type
        assert name.endswith("*") == (layer.name == described.default_layer)
        assert shape == "x".join(map(str, layer.output_shape)) and layout == str(layer.layout)
    default = next(line for line in lines if line.split("\t")[0].endswith("*"))
    assert default.split("\t")[3].startswith("nchw ")
    assert main(["models", "--server", demo_server.address, "--layers", "nope"]) == 1
    assert "NOT_FOUND" in capsys.readouterr().err
