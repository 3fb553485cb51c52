"""inference.GRPCInferenceService through the generated stub: every input form gives the
explanation Explain gives, and bad requests end with the statuses ExplainerService uses."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from explainserve.models.demo.repository import demo_model_config
from explainserve.models.demo.shapes import draw_shape
from explainserve_client import Client
from explainserve_client._proto import grpc_predict_v2_pb2 as oip
from explainserve_client._proto import grpc_predict_v2_pb2_grpc as oip_grpc
from explainserve_client.render import image_png
from support import running_server

IMAGE = draw_shape("heart", seed=5)


@pytest.fixture(scope="module")
def served():
    with running_server((demo_model_config(),)) as background:
        with grpc.insecure_channel(background.address) as channel:
            yield background, oip_grpc.GRPCInferenceServiceStub(channel)


def request(tensor: oip.ModelInferRequest.InferInputTensor, raw: bytes | None = None, *,
            method: str = "gradcam", model: str = "demo", outputs=("heatmap", "targets"),
            **parameters) -> oip.ModelInferRequest:
    values = {"method": method, **parameters}
    message = oip.ModelInferRequest(
        model_name=model, id="r-1", inputs=[tensor],
        outputs=[oip.ModelInferRequest.InferRequestedOutputTensor(name=n) for n in outputs],
        raw_input_contents=[raw] if raw is not None else [])
    for key, value in values.items():
        field = {str: "string_param", int: "int64_param", float: "double_param",
                 bool: "bool_param"}[type(value)]
        setattr(message.parameters[key], field, value)
    return message


def uint8_input(image=IMAGE):
    return oip.ModelInferRequest.InferInputTensor(name="image", datatype="UINT8",
                                                  shape=list(image.shape)), image.tobytes()


def outputs_of(response: oip.ModelInferResponse) -> dict[str, np.ndarray]:
    dtypes = {"FP32": "<f4", "INT64": "<i8", "INT32": "<i4"}
    return {o.name: np.frombuffer(raw, dtypes[o.datatype]).reshape(o.shape)
            for o, raw in zip(response.outputs, response.raw_output_contents) if o.datatype in dtypes}


def test_metadata_names_the_inputs_and_outputs(served):
    _, stub = served
    assert stub.ServerLive(oip.ServerLiveRequest()).live
    assert stub.ServerReady(oip.ServerReadyRequest()).ready
    assert stub.ModelReady(oip.ModelReadyRequest(name="demo")).ready
    assert stub.ServerMetadata(oip.ServerMetadataRequest()).name == "explainserve"
    meta = stub.ModelMetadata(oip.ModelMetadataRequest(name="demo"))
    assert [(i.name, i.datatype, list(i.shape)) for i in meta.inputs] == [
        ("image", "UINT8", [-1, -1, 3]), ("image_bytes", "BYTES", [1]),
        ("input", "FP32", [1, 3, 64, 64])]
    assert {"targets", "scores", "probabilities", "labels", "heatmap", "attribution",
            "overlay", "box"} == {o.name for o in meta.outputs}


def test_every_input_form_gives_explains_heatmap(served):
    background, stub = served
    png = image_png(IMAGE)
    with Client(background.address, timeout=60) as client:
        expected = client.explain(png, model="demo", method="gradcam_plus_plus", targets=[2])[0]
    forms = [uint8_input(),
             (oip.ModelInferRequest.InferInputTensor(
                 name="image_bytes", datatype="BYTES", shape=[1],
                 contents=oip.InferTensorContents(bytes_contents=[png])), None)]
    for tensor, raw in forms:
        response = stub.ModelInfer(request(tensor, raw, method="gradcam_plus_plus", targets="2"))
        assert response.id == "r-1" and response.model_name == "demo"
        got = outputs_of(response)
        assert got["heatmap"][0].tobytes() == expected.heatmap.tobytes()
        assert got["targets"].tolist() == [2]


def test_fp32_contents_and_top_k(served):
    _, stub = served
    tensor = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    message = request(oip.ModelInferRequest.InferInputTensor(
        name="input", datatype="FP32", shape=[1, 3, 64, 64],
        contents=oip.InferTensorContents(fp32_contents=tensor.ravel().tolist())),
        method="gradcam", outputs=("targets", "scores", "heatmap"), top_k=3)
    got = outputs_of(stub.ModelInfer(message))
    assert got["targets"].shape == (3,) and got["heatmap"].shape == (3, 64, 64)
    assert np.all(np.diff(got["scores"]) <= 0)  # top-k: best first


@pytest.mark.parametrize("mutate, code, named", [
    (lambda m: setattr(m.inputs[0], "datatype", "INT32"), grpc.StatusCode.INVALID_ARGUMENT, "INT32"),
    (lambda m: m.inputs[0].shape.__setitem__(2, 4), grpc.StatusCode.INVALID_ARGUMENT, "[64, 64, 4]"),
    (lambda m: setattr(m, "model_name", "nope"), grpc.StatusCode.NOT_FOUND, "nope"),
    (lambda m: setattr(m.parameters["method"], "string_param", "magic"), grpc.StatusCode.NOT_FOUND, "magic"),
    (lambda m: setattr(m.parameters["targets"], "string_param", "99"), grpc.StatusCode.OUT_OF_RANGE, "99"),
    (lambda m: setattr(m.parameters["upsample"], "string_param", "cubic"), grpc.StatusCode.INVALID_ARGUMENT, "cubic"),
    (lambda m: m.outputs.add(name="logits"), grpc.StatusCode.INVALID_ARGUMENT, "logits"),
    (lambda m: m.parameters.__delitem__("method"), grpc.StatusCode.INVALID_ARGUMENT, "method"),
])
def test_bad_requests_end_with_a_status_naming_the_value(served, mutate, code, named):
    _, stub = served
    message = request(*uint8_input())
    mutate(message)
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(message)
    assert caught.value.code() == code
    assert named in caught.value.details()
    assert stub.ModelInfer(request(*uint8_input())).outputs  # still serving


def test_garbage_bytes_are_invalid_argument(served):
    background, _ = served
    with grpc.insecure_channel(background.address) as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        with pytest.raises(grpc.RpcError) as caught:
            call(b"\xff\xff\xff")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "ModelInferRequest" in caught.value.details()
