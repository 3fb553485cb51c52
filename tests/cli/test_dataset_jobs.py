"""`explainserve explain DIR --out OUT --method M --server A,B --concurrency K`: a dataset job
across two server processes. One server is killed (SIGKILL) midway and then the job itself;
the rerun resumes, and every image ends up explained exactly once per method, with its files."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from ops_support import ServerProcess, plain_environment
from PIL import Image
from support import ROOT, TESTS, free_port

# 0.1 s per pass of up to 8 rows: 300 images on two servers take a few seconds, long enough
# to kill one of them, then the job, midway.
REPOSITORY = """\
[models.slowish]
arch = "python:slowish_model:build"
num_classes = 4
input_size = 8
max_batch_size = 8
max_queue_delay_ms = 5
"""
IMAGES = 300
SLOWISH = """\
from tiny_models import SlowModel


def build(num_classes=4):
    return SlowModel(num_classes, seconds=0.1)
"""


def write_images(root: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for index in range(IMAGES):
        path = root / f"part{index % 3}" / f"img{index:03d}.png"  # subfolders, like a dataset
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def manifest_lines(out: Path) -> list[dict]:
    path = out / "manifest.jsonl"
    if not path.exists():
        return []
    entries = []
    for line in path.read_text().splitlines():
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            pass  # a line cut by the killed job
    return entries


def wait_for(condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the job did not get that far")
        time.sleep(0.05)


def test_a_dataset_job_survives_a_killed_server_and_resumes_after_being_killed(tmp_path):
    images = write_images(tmp_path / "images")
    (tmp_path / "models.toml").write_text(REPOSITORY)
    (tmp_path / "slowish_model.py").write_text(SLOWISH)
    env = plain_environment(PYTHONPATH=f"{TESTS}:{tmp_path}")
    ports = [free_port(), free_port()]
    servers = [ServerProcess([sys.executable, "-m", "explainserve", "--log-level", "WARNING",
                              "serve", "--models", str(tmp_path / "models.toml"), "--port",
                              str(port), "--metrics-port", "0", "--device", "cpu"],
                             f"127.0.0.1:{port}", env=env,
                             log_path=tmp_path / f"server{port}.log")
               for port in ports]
    out = tmp_path / "out"
    command = [sys.executable, "-m", "explainserve", "--log-level", "WARNING", "explain",
               str(tmp_path / "images"), "--out", str(out), "--model", "slowish",
               "--method", "saliency", "--server", ",".join(s.address for s in servers),
               "--concurrency", "8", "--timeout", "30"]
    try:
        for server in servers:
            server.wait_serving()
        job = subprocess.Popen(command, cwd=ROOT, env=plain_environment(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for(lambda: len(manifest_lines(out)) >= 60, timeout=120)
        servers[0].process.kill()  # no drain: its calls in flight fail and are retried
        wait_for(lambda: len(manifest_lines(out)) >= 150, timeout=120)
        job.kill()
        job.wait(timeout=30)
        first_run = manifest_lines(out)
        assert 150 <= len(first_run) < IMAGES
        assert all(entry["status"] == "OK" for entry in first_run), first_run[:3]

        rerun = subprocess.run(command, cwd=ROOT, env=plain_environment(), capture_output=True,
                               text=True, timeout=300)
        assert rerun.returncode == 0, rerun.stderr
    finally:
        for server in servers:
            if server.process.poll() is None:
                server.process.kill()
            server.process.wait(timeout=30)

    entries = manifest_lines(out)
    ok = [entry for entry in entries if entry["status"] == "OK"]
    assert len(entries) == len(ok) == IMAGES  # each image once: none redone, none lost
    assert sorted(entry["image"] for entry in ok) == sorted(str(path) for path in images)
    skipped = len(first_run)
    assert rerun.stdout.strip() == f"{IMAGES} images x 1 methods: OK {IMAGES - skipped}, SKIPPED {skipped}"
    assert "explain [" in rerun.stderr and f"{IMAGES}/{IMAGES}" in rerun.stderr  # the progress bar
    for entry in ok:
        assert entry["method"] == "saliency" and 0 <= entry["target"] < 4
        assert np.isfinite(entry["score"])
        npz, png = (out / name for name in entry["files"])
        relative = Path(entry["image"]).relative_to(tmp_path / "images")
        assert npz == out / relative.parent / f"{relative.name}.saliency.npz"
        with np.load(npz) as arrays:
            assert arrays["targets"].tolist() == [entry["target"]]
            assert arrays["heatmap"].shape == (1, 8, 8)
        assert png.read_bytes().startswith(b"\x89PNG")
    # A third run has nothing left to do.
    again = subprocess.run(command, cwd=ROOT, env=plain_environment(), capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0 and again.stdout.strip().endswith(f"SKIPPED {IMAGES}")
