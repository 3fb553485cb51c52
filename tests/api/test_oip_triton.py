"""The Open Inference Protocol as tritonclient speaks it, over gRPC and HTTP (binary tensor
extension and plain JSON): health, model metadata, and ModelInfer heatmaps that equal
ExplainerService's for the same image bit for bit (both take the same engine path).

tritonclient[grpc] needs protobuf < 7 and the project's grpcio-tools needs protobuf >= 7, so
tritonclient runs in its own cached environment, with the explainserve client installed
beside it (which also shows the two coexist)."""

from __future__ import annotations

import dataclasses

import json

import numpy as np
import pytest
from explainserve.models.demo.repository import demo_model_config
from explainserve.models.demo.shapes import draw_shape
from explainserve_client import Client
from explainserve_client.render import image_png
from oip_venvs import cached_venv, run_python
from support import TESTS, running_server

TRITON = ["tritonclient[grpc,http]==2.73.0", "protobuf<7"]
CALLS = [{"method": "gradcam"}, {"method": "occlusion", "params": {"window": 16, "stride": 8}}]


@pytest.fixture(scope="module")
def oip_server():
    # Bit for bit across protocols: the contiguous layout rounds a row the same at every batch
    # size (docs/operations.md), so how the batcher happened to chunk occlusion cannot matter.
    config = dataclasses.replace(demo_model_config(), memory_format="contiguous")
    with running_server((config,), http_port=0) as background:
        yield background


@pytest.fixture(scope="module")
def triton_answers(oip_server, tmp_path_factory):
    python = cached_venv("triton", TRITON)
    folder = tmp_path_factory.mktemp("triton")
    image = draw_shape("star", seed=3)
    np.save(folder / "image.npy", image)
    spec = {"grpc": oip_server.address, "http": f"127.0.0.1:{oip_server.server.http_port}",
            "image": str(folder / "image.npy"), "out": str(folder / "out.npz"), "calls": CALLS}
    summary = json.loads(run_python(python, TESTS / "oip_triton_calls.py", json.dumps(spec)))
    return image, summary, dict(np.load(folder / "out.npz"))


def test_health_and_metadata_over_both_transports(triton_answers):
    _, summary, _ = triton_answers
    for transport in ("grpc", "http"):
        assert summary[f"{transport}_live"] and summary[f"{transport}_ready"]
        assert summary[f"{transport}_model_ready"]
    http = summary["http_metadata"]
    assert http["name"] == "demo" and http["platform"] == "explainserve"
    assert [t["name"] for t in http["inputs"]] == ["image", "image_bytes", "input"]
    assert {"scores", "heatmap", "attribution", "labels"} <= {t["name"] for t in http["outputs"]}
    # The gRPC metadata (int64 shapes arrive as strings in tritonclient's JSON form) agrees.
    grpc = summary["grpc_metadata"]
    assert [(t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in grpc["inputs"]] == [
        (t["name"], t["datatype"], t["shape"]) for t in http["inputs"]]
    assert "NOT_FOUND" in summary["grpc_unknown_model"]
    assert "no_such_model" in summary["grpc_unknown_model"]


@pytest.mark.parametrize("call", CALLS, ids=[c["method"] for c in CALLS])
def test_model_infer_heatmap_equals_explain_bit_for_bit(triton_answers, oip_server, call):
    image, summary, arrays = triton_answers
    with Client(oip_server.address, timeout=120) as client:
        expected = client.explain(image_png(image), model="demo", method=call["method"],
                                  **call.get("params", {}))[0]
    for transport in ("grpc", "http", "httpjson"):
        key = f"{transport}_{call['method']}"
        heatmap = arrays[f"{key}_heatmap"]
        assert heatmap.dtype == np.float32 and heatmap.shape == (1, *expected.heatmap.shape)
        assert heatmap[0].tobytes() == expected.heatmap.tobytes(), key
        assert int(arrays[f"{key}_targets"][0]) == expected.target
        assert float(arrays[f"{key}_scores"][0]) == np.float32(expected.score)
        assert summary[f"{key}_labels"] == [expected.label]
