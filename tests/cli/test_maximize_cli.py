"""`explainserve maximize` against a running demo server: the image, the animation, the
progress bar, and a refused request's status."""

from __future__ import annotations

from explainserve.cli import main as cli
from PIL import Image


def test_cli_writes_the_image_and_an_animation(demo_server, tmp_path, capsys):
    out, gif = tmp_path / "star.png", tmp_path / "star.gif"  # --gif alone: --out as .gif
    code = cli.main(["maximize", "--server", demo_server.address, "--class", "3", "--steps", "32",
                     "--frame-every", "4", "--out", str(out), "--param", "jitter=1", "--gif"])
    assert code == 0
    assert Image.open(out).size == (64, 64)
    animation = Image.open(gif)
    assert animation.n_frames == 8
    captured = capsys.readouterr()
    assert "32/32 steps" in captured.err and "[" + "#" * 30 + "]" in captured.err
    assert str(out) in captured.out


def test_cli_reports_a_refused_request(demo_server, tmp_path, capsys):
    code = cli.main(["maximize", "--server", demo_server.address, "--class", "99",
                     "--out", str(tmp_path / "x.png")])
    assert code == 1
    assert "OUT_OF_RANGE" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()
