"""A non-Python client: Node.js (@grpc/grpc-js + @grpc/proto-loader) against a real server,
compared with the Python client; and the proto's Buf checks (lint, breaking)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from explainserve.config import LimitsConfig
from explainserve.models.demo.repository import demo_model_config
from explainserve_client import Client
from support import ROOT, TESTS, running_server

NODE_DIR = TESTS / "node"
NODE = shutil.which("node")
NPM = shutil.which("npm")

pytestmark = pytest.mark.skipif(
    NODE is None, reason="`node` is not on PATH: the Node.js client and buf checks need Node >= 18")


def _installed_tree_matches_lock() -> bool:
    """True when `npm ci` would install this tree again: package.json is what the lock was made
    from, and node_modules/.package-lock.json (what npm installed) holds every locked package
    but the optional ones of other platforms, at its locked version."""
    hidden = NODE_DIR / "node_modules" / ".package-lock.json"
    if not hidden.is_file():
        return False
    manifest = json.loads((NODE_DIR / "package.json").read_text())
    locked = json.loads((NODE_DIR / "package-lock.json").read_text())["packages"]
    installed = json.loads(hidden.read_text())["packages"]
    for kind in ("dependencies", "devDependencies"):
        if manifest.get(kind, {}) != locked[""].get(kind, {}):
            return False
    for path, entry in locked.items():
        if not path:
            continue
        present = installed.get(path)
        if present is None and not entry.get("optional"):
            return False
        if present is not None and present.get("version") != entry.get("version"):
            return False
    return True


@pytest.fixture(scope="session")
def node_modules() -> Path:
    """The pinned npm packages of tests/node, installed once with `npm ci` (git-ignored)."""
    if not _installed_tree_matches_lock():
        if NPM is None:
            pytest.fail("node is installed but npm is not: cannot install tests/node's packages")
        installed = subprocess.run([NPM, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR,
                                   capture_output=True, text=True, timeout=600)
        if installed.returncode != 0:
            pytest.fail(f"npm ci in {NODE_DIR} failed:\n{installed.stdout}\n{installed.stderr}")
    return NODE_DIR / "node_modules"


@pytest.fixture(scope="module")
def star_file(tmp_path_factory, star_png) -> Path:
    """The star of conftest's star_png as a PNG file, for the Node client to read."""
    path = tmp_path_factory.mktemp("node") / "star.png"
    path.write_bytes(star_png)
    return path


def run_node_client(address: str, image: Path, target: int, model: str = "demo") -> dict:
    command = [NODE, str(NODE_DIR / "explain_client.mjs"), address, "--image", str(image),
               "--model", model, "--method", "gradcam", "--target", str(target)]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert finished.returncode == 0, f"node client failed:\n{finished.stderr}"
    return json.loads(finished.stdout)


def python_gradcam(address: str, image: Path, target: int, model: str = "demo"):
    with Client(address, timeout=120) as client:
        (explanation,) = client.explain(image.read_bytes(), model=model, method="gradcam",
                                        targets=[target])
    return explanation


@pytest.fixture(scope="module")
def node_answer(node_modules, demo_server, star_file) -> dict:
    return run_node_client(demo_server.address, star_file, target=3)


def test_node_lists_and_describes_the_models_like_the_python_client(node_answer, demo_server):
    with Client(demo_server.address, timeout=60) as client:
        summaries = client.list_models()
        described = client.get_model("demo")
    assert node_answer["models"] == [
        {"name": s.name, "arch": s.arch, "num_classes": s.num_classes, "devices": list(s.devices)}
        for s in summaries]
    model = node_answer["model"]
    assert model["name"] == "demo" and model["num_classes"] == described.num_classes == 8
    assert model["input_size"] == list(described.input_size) == [3, 64, 64]
    assert model["labels"] == list(described.labels) and "star" in model["labels"]
    assert model["default_layer"] == described.default_layer
    assert "gradcam" in model["methods"]
    assert model["layers"] == [
        {"name": l.name, "type": l.type, "output_shape": list(l.output_shape)} for l in described.layers]


def test_node_gradcam_heatmap_equals_the_python_clients(node_answer, demo_server, star_file):
    expected = python_gradcam(demo_server.address, star_file, target=3)
    (explanation,) = node_answer["explanations"]
    assert explanation["target"] == expected.target == 3
    assert explanation["label"] == expected.label == "star"
    assert explanation["score"] == pytest.approx(expected.score, rel=1e-6)
    heatmap = explanation["heatmap"]
    assert heatmap["dtype"] == "DATA_TYPE_FLOAT32" and heatmap["shape"] == [64, 64]
    node_heatmap = np.asarray(heatmap["data"], dtype=np.float32).reshape(heatmap["shape"])
    assert node_heatmap.max() == pytest.approx(1.0)  # scaled to [0, 1]: not all zeros
    assert np.abs(node_heatmap - expected.heatmap).max() < 1e-6
    attribution = explanation["attribution"]  # Grad-CAM at the default layer's [h, w] grid
    with Client(demo_server.address) as client:
        described = client.get_model("demo")
    default = next(layer for layer in described.layers if layer.name == described.default_layer)
    grid = list(default.output_shape[1:])
    assert attribution["shape"] == list(expected.attribution.shape) == grid == [16, 16]
    node_attribution = np.asarray(attribution["data"], dtype=np.float32).reshape(grid)
    assert np.abs(node_attribution - expected.attribution).max() < 1e-6


@pytest.fixture(scope="module")
def chunking_server():
    """The demo model behind a server that splits every tensor above 1 KiB into chunks."""
    with running_server((demo_model_config(),), limits=LimitsConfig(chunk_bytes=1024)) as server:
        yield server


def test_node_joins_a_heatmap_split_across_messages(node_modules, chunking_server, star_file):
    answer = run_node_client(chunking_server.address, star_file, target=3)
    expected = python_gradcam(chunking_server.address, star_file, target=3)
    # 64*64*4 bytes of heatmap in 1 KiB chunks, after the head message with the attribution.
    assert answer["messages"] >= 16
    heatmap = answer["explanations"][0]["heatmap"]
    node_heatmap = np.asarray(heatmap["data"], dtype=np.float32).reshape(heatmap["shape"])
    assert np.abs(node_heatmap - expected.heatmap).max() < 1e-6


def _run_buf(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(NODE_DIR / "node_modules" / ".bin" / "buf"), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_proto_passes_buf_lint_with_the_default_rules(node_modules):
    linted = _run_buf("lint")
    assert linted.returncode == 0, f"buf lint found problems:\n{linted.stdout}{linted.stderr}"


def test_proto_has_no_breaking_change_since_the_last_release(node_modules):
    listed = subprocess.run(["git", "tag", "--list", "v*", "--sort=-version:refname"], cwd=ROOT,
                            capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip(f"not a git checkout, so no release tags to compare with: {listed.stderr.strip()}")
    tags = listed.stdout.split()
    if not tags:
        pytest.skip("no v* release tag yet: buf breaking has no released proto to compare with")
    git_dir = subprocess.run(["git", "rev-parse", "--path-format=absolute", "--git-common-dir"],
                             cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    checked = _run_buf("breaking", "proto", "--against",
                       f"{git_dir}#format=git,tag={tags[0]},subdir=proto")
    assert checked.returncode == 0, (
        f"breaking changes since {tags[0]}:\n{checked.stdout}{checked.stderr}")
