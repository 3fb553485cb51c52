"""Requests an attacker would send get a clear INVALID_ARGUMENT / NOT_FOUND, cheaply, and cannot
grow the server's metric series; the server goes on answering others."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from explainserve import metrics
from explainserve.errors import MAX_ECHOED_NAME_CHARS
from explainserve_client import ExplainServeError
from explainserve_client._proto import explainer_pb2 as pb
from explainserve_client.images import encode_png
from PIL import Image

GARBAGE = b"\xff\xff\xff\x07not a protobuf message"
SERVICE = "/explainserve.v1.ExplainerService/"


@pytest.fixture
def raw_channel(demo_server):
    with grpc.insecure_channel(demo_server.address) as channel:
        yield channel


@pytest.mark.parametrize("rpc, kind, message", [
    ("Explain", "unary_stream", "ExplainRequest"),
    ("Maximize", "unary_stream", "MaximizeRequest"),
    ("GetModel", "unary_unary", "GetModelRequest"),
    ("ListModels", "unary_unary", "ListModelsRequest"),
])
def test_garbage_request_bytes_are_invalid_argument(raw_channel, demo_client, rpc, kind, message):
    call = getattr(raw_channel, kind)(SERVICE + rpc)  # no serializers: raw bytes go out
    with pytest.raises(grpc.RpcError) as refused:
        answer = call(GARBAGE, timeout=10)
        if kind == "unary_stream":
            list(answer)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details() == f"the request ({len(GARBAGE)} bytes) is not a valid {message}"
    assert demo_client.get_model("demo").name == "demo"  # still serving


def test_garbage_in_an_embed_stream_is_invalid_argument(raw_channel):
    call = raw_channel.stream_stream(SERVICE + "Embed")
    with pytest.raises(grpc.RpcError) as refused:
        list(call(iter([GARBAGE]), timeout=10))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "is not a valid EmbedRequest" in refused.value.details()


def _explain(client, tensor: pb.Tensor):
    request = pb.ExplainRequest(model="demo", method="gradcam", input=pb.Input(tensor=tensor))
    return list(client._stub.Explain(request, timeout=30))


def test_an_unknown_dtype_is_invalid_argument(demo_client):
    with pytest.raises(grpc.RpcError) as refused:
        _explain(demo_client, pb.Tensor(dtype=99, shape=[1, 3, 64, 64]))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details() == "input.tensor must be float32, got dtype 99"


def test_a_shape_whose_int64_size_wraps_to_zero_is_invalid_argument(demo_client):
    with pytest.raises(grpc.RpcError) as refused:
        _explain(demo_client, pb.Tensor(dtype=pb.DATA_TYPE_FLOAT32, shape=[2**32, 2**32]))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"need {2**64 * 4}" in refused.value.details()


def test_a_thin_image_is_refused_before_it_is_scaled_up(demo_client):
    thin = encode_png(Image.new("RGB", (200_000, 1)))
    with pytest.raises(ExplainServeError) as refused:
        demo_client.explain(thin, model="demo", method="gradcam")
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "200000x1 pixels would be resized to 12800000x64" in refused.value.details


def test_a_huge_unknown_name_is_not_found_with_the_name_cut(demo_client):
    name = "m" * 100_000
    with pytest.raises(ExplainServeError) as refused:
        demo_client.get_model(name)
    assert refused.value.code == grpc.StatusCode.NOT_FOUND  # not RESOURCE_EXHAUSTED
    assert f"'{'m' * MAX_ECHOED_NAME_CHARS}'... (100000 characters)" in refused.value.details
    assert len(refused.value.details) < 1000


def _label_values(label: str) -> set[str]:
    return {sample.labels[label] for family in metrics.REQUESTS.collect()
            for sample in family.samples if label in sample.labels}


def test_unknown_model_and_method_names_share_one_label_value(demo_client):
    names = [f"random-{i}\x00\u202e" for i in range(20)]
    for name in names:
        with pytest.raises(ExplainServeError):
            demo_client.explain(np.zeros((64, 64, 3), np.uint8), model=name, method="gradcam")
        with pytest.raises(ExplainServeError):
            demo_client.explain(np.zeros((64, 64, 3), np.uint8), model="demo", method=name)
    models, methods = _label_values("model"), _label_values("method")
    assert not set(names) & (models | methods)
    assert "unknown" in models and "unknown" in methods
    assert "demo" in models and "gradcam" in methods


def _count(code: str) -> float:
    return sum(sample.value for family in metrics.REQUESTS.collect() for sample in family.samples
               if sample.name.endswith("_total") and sample.labels.get("code") == code
               and sample.labels.get("rpc") == "Explain")


def test_a_missed_deadline_is_counted_as_deadline_exceeded(demo_client):
    import time
    before = _count("DEADLINE_EXCEEDED")
    with pytest.raises(ExplainServeError) as late:
        demo_client.explain(np.zeros((64, 64, 3), np.uint8), model="demo", method="occlusion",
                            window=4, stride=1, timeout=0.05)
    assert late.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    give_up = time.monotonic() + 5
    while _count("DEADLINE_EXCEEDED") == before and time.monotonic() < give_up:
        time.sleep(0.02)  # the server counts the call when its handler unwinds
    assert _count("DEADLINE_EXCEEDED") == before + 1


def test_an_occlusion_baseline_that_would_overflow_is_refused(demo_client):
    with pytest.raises(ExplainServeError) as refused:
        demo_client.explain(np.zeros((64, 64, 3), np.uint8), model="demo", method="occlusion",
                            baseline=1e300)
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "'baseline' of method 'occlusion' must be at most 1000.0, got 1e+300" in refused.value.details


def test_a_pickled_module_weights_file_stops_start_up_with_exit_2(tmp_path):
    import subprocess
    import sys

    import torch
    torch.save(torch.nn.Linear(2, 2), tmp_path / "module.pt")  # a whole pickled module
    (tmp_path / "models.toml").write_text(
        '[models.m]\narch = "torchvision:resnet18"\nweights = "module.pt"\nnum_classes = 2\n'
        "input_size = 32\n")
    done = subprocess.run([sys.executable, "-m", "explainserve", "serve", "--models",
                           str(tmp_path / "models.toml"), "--port", "0", "--metrics-port", "0"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert f"weights file {tmp_path / 'module.pt'} is not a safetensors file or a plain state_dict" in done.stderr
    assert "Traceback" not in done.stderr
