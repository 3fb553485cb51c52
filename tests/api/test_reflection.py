"""The service through server reflection alone, as grpcurl or Postman use it: no .proto and no
generated code on the client; requests are JSON, bytes are base64, tensors are decoded by hand."""

from __future__ import annotations

import base64

import grpc
import numpy as np
import pytest
from explainserve_client import Client
from explainserve_client._proto import explainer_pb2
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

SERVICE = "explainserve.v1.ExplainerService"


class ReflectionClient:
    """A grpcurl-style dynamic client: every type comes from the server's reflection service."""

    def __init__(self, channel: grpc.Channel) -> None:
        self._channel = channel
        self.database = ProtoReflectionDescriptorDatabase(channel)
        self.pool = descriptor_pool.DescriptorPool(self.database)

    def services(self) -> list[str]:
        return sorted(self.database.get_services())

    def call(self, rpc: str, request: dict, timeout: float = 60.0) -> list[dict]:
        """Call SERVICE/rpc with a JSON request; the responses as JSON dicts (grpcurl -d)."""
        method = self.pool.FindServiceByName(SERVICE).FindMethodByName(rpc)
        request_class = message_factory.GetMessageClass(method.input_type)
        response_class = message_factory.GetMessageClass(method.output_type)
        arity = "unary_stream" if method.server_streaming else "unary_unary"
        stub = getattr(self._channel, arity)(
            f"/{SERVICE}/{rpc}", request_serializer=request_class.SerializeToString,
            response_deserializer=response_class.FromString)
        answer = stub(json_format.ParseDict(request, request_class()), timeout=timeout)
        responses = list(answer) if method.server_streaming else [answer]
        return [json_format.MessageToDict(r, preserving_proto_field_name=True) for r in responses]


def decode_json_tensor(chunks: list[dict]) -> np.ndarray:
    """A Tensor in JSON form: data is base64; int64 shape entries are strings; dtype by name.
    Chunks, if any, are concatenated in the order they arrived."""
    head = chunks[0]
    assert head["dtype"] == "DATA_TYPE_FLOAT32"
    data = b"".join(base64.b64decode(chunk.get("data", "")) for chunk in chunks)
    shape = [int(dim) for dim in head["shape"]]
    return np.frombuffer(data, dtype="<f4").reshape(shape)


@pytest.fixture(scope="module")
def reflection(demo_server):
    with grpc.insecure_channel(demo_server.address) as channel:
        yield ReflectionClient(channel)


def test_reflection_lists_the_explainer_health_and_reflection_services(reflection):
    assert reflection.services() == sorted(
        [SERVICE, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection",
         "inference.GRPCInferenceService"])


def test_reflected_contract_is_the_proto_file(reflection):
    service = reflection.pool.FindServiceByName(SERVICE)
    reflected = descriptor_pb2.FileDescriptorProto()
    service.file.CopyToProto(reflected)
    compiled = descriptor_pb2.FileDescriptorProto()
    explainer_pb2.DESCRIPTOR.CopyToProto(compiled)
    assert reflected == compiled
    explain = service.FindMethodByName("Explain")
    assert explain.server_streaming and not explain.client_streaming
    assert explain.input_type.full_name == "explainserve.v1.ExplainRequest"


def test_list_and_get_model_through_reflection(reflection):
    (listed,) = reflection.call("ListModels", {})
    assert listed == {"models": [{"name": "demo", "arch": "python:explainserve.models.demo:build_demo_model",
                                  "num_classes": "8", "devices": ["cpu"]}]}
    (described,) = reflection.call("GetModel", {"name": "demo"})
    model = described["model"]
    assert (model["input_height"], model["input_width"], model["num_classes"]) == ("64", "64", "8")
    assert model["labels"][3] == "star" and "gradcam" in model["methods"]


def test_gradcam_through_reflection_equals_the_python_client(reflection, demo_server, star_png):
    request = {  # what `grpcurl -d @` would send
        "model": "demo", "method": "gradcam", "targets": [3],
        "input": {"encoded_image": base64.b64encode(star_png).decode("ascii")},
        "outputs": ["OUTPUT_ATTRIBUTION", "OUTPUT_HEATMAP"],
    }
    responses = reflection.call("Explain", request)
    assert responses[0]["target"] == "3" and responses[0]["label"] == "star"
    assert responses[-1]["complete"] is True
    heatmap = decode_json_tensor([r["heatmap"] for r in responses if "heatmap" in r])
    attribution = decode_json_tensor([r["attribution"] for r in responses if "attribution" in r])
    with Client(demo_server.address, timeout=120) as client:
        (expected,) = client.explain(star_png, model="demo", method="gradcam", targets=[3])
    assert heatmap.shape == expected.heatmap.shape == (64, 64)
    assert np.abs(heatmap - expected.heatmap).max() < 1e-6
    assert np.abs(attribution - expected.attribution).max() < 1e-6


def test_an_error_arrives_as_a_status_through_reflection(reflection):
    with pytest.raises(grpc.RpcError) as raised:
        reflection.call("GetModel", {"name": "no-such-model"})
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert "no-such-model" in raised.value.details()
