"""TLS, mutual TLS, bearer tokens, message size limits, and names from clients that must never
reach the filesystem or getattr: real servers, real client, certificates made in the test."""

from __future__ import annotations

import dataclasses

import grpc
import numpy as np
import pytest
from explainserve.api.auth import TOKENS_ENV, load_tokens
from explainserve.config import ConfigError, SecurityConfig
from explainserve_client import Client
from explainserve_client._proto import explainer_pb2 as pb
from explainserve_client._proto import explainer_pb2_grpc as pb_grpc
from explainserve_client.client import ExplainServeError
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from ops_support import make_certificates
from support import running_server

TOKEN = "s3cret-token-for-tests-0123456789"


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def linear_model(models_by_name):
    return (models_by_name["linear"],)


@pytest.fixture(scope="module")
def tls_server(certs, linear_model):
    security = SecurityConfig(tls_cert=certs.server_cert, tls_key=certs.server_key)
    with running_server(linear_model, security=security) as server:
        yield server


@pytest.fixture(scope="module")
def mtls_server(certs, linear_model):
    security = SecurityConfig(tls_cert=certs.server_cert, tls_key=certs.server_key,
                              tls_client_ca=certs.ca)
    with running_server(linear_model, security=security) as server:
        yield server


@pytest.fixture(scope="module")
def token_server(linear_model):
    with running_server(linear_model, security=SecurityConfig(tokens=(TOKEN,))) as server:
        yield server


def _models(address: str, **client_options) -> list[str]:
    with Client(address, timeout=10, **client_options) as client:
        return [model.name for model in client.list_models()]


def test_tls_client_with_the_ca_is_served(tls_server, certs):
    assert _models(tls_server.address, root_certificates=certs.ca.read_bytes()) == ["linear"]


def test_tls_server_refuses_plaintext_and_unknown_ca(tls_server, certs):
    with pytest.raises(ExplainServeError) as plaintext:
        _models(tls_server.address)
    assert plaintext.value.code == grpc.StatusCode.UNAVAILABLE
    other_ca = certs.stranger_cert.read_bytes()  # a certificate that did not sign the server's
    with pytest.raises(ExplainServeError) as untrusted:
        _models(tls_server.address, root_certificates=other_ca)
    assert untrusted.value.code == grpc.StatusCode.UNAVAILABLE


def test_mtls_admits_a_client_certificate_signed_by_the_ca(mtls_server, certs):
    names = _models(mtls_server.address, root_certificates=certs.ca.read_bytes(),
                    client_certificate=certs.client_cert.read_bytes(),
                    client_key=certs.client_key.read_bytes())
    assert names == ["linear"]


@pytest.mark.parametrize("identity", ["none", "stranger"])
def test_mtls_rejects_clients_without_a_trusted_certificate(mtls_server, certs, identity):
    options = {"root_certificates": certs.ca.read_bytes()}
    if identity == "stranger":
        options.update(client_certificate=certs.stranger_cert.read_bytes(),
                       client_key=certs.stranger_key.read_bytes())
    with pytest.raises(ExplainServeError) as refused:
        _models(mtls_server.address, **options)
    assert refused.value.code == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("token", [None, "wrong-token-of-the-same-length-xx", TOKEN[:-1], TOKEN + "x"])
def test_missing_or_wrong_token_is_unauthenticated(token_server, token):
    with pytest.raises(ExplainServeError) as refused:
        _models(token_server.address, token=token)
    assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED


def test_right_token_is_served_for_unary_and_streaming_calls(token_server):
    assert _models(token_server.address, token=TOKEN) == ["linear"]
    with Client(token_server.address, timeout=30, token=TOKEN) as client:
        explanation, = client.explain(np.ones((3, 8, 8), np.float32), model="linear",
                                      method="saliency", targets=[1])
    assert explanation.target == 1
    with Client(token_server.address, timeout=30) as client:
        with pytest.raises(ExplainServeError) as refused:
            client.explain(np.ones((3, 8, 8), np.float32), model="linear", method="saliency")
    assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED


def test_health_is_open_and_reflection_closed_by_default(token_server):
    with grpc.insecure_channel(token_server.address) as channel:
        status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert status.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as refused:
            _list_services(channel)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "explainserve.v1.ExplainerService" in _list_services(
            channel, metadata=(("authorization", f"Bearer {TOKEN}"),))


def test_open_services_are_configurable(linear_model):
    security = SecurityConfig(tokens=(TOKEN,), open_services=("grpc.reflection.v1alpha.ServerReflection",))
    with running_server(linear_model, security=security) as server:
        with grpc.insecure_channel(server.address) as channel:
            assert "grpc.health.v1.Health" in _list_services(channel)
            with pytest.raises(grpc.RpcError) as refused:
                health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def _list_services(channel: grpc.Channel, metadata=()) -> list[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    responses = stub.ServerReflectionInfo(iter([request]), timeout=5, metadata=metadata)
    return [service.name for response in responses
            for service in response.list_services_response.service]


def test_tokens_come_from_a_file_and_the_environment(tmp_path):
    tokens_file = tmp_path / "tokens"
    tokens_file.write_text(f"# rotated weekly\n{TOKEN}\n\nsecond-token-0123456789\n")
    environ = {TOKENS_ENV: f" third-token-0123456789 ,{TOKEN}"}
    assert load_tokens(tokens_file, environ) == (TOKEN, "second-token-0123456789",
                                                 "third-token-0123456789")
    assert load_tokens(None, {}) == ()


def test_a_short_token_is_refused_without_echoing_it(tmp_path):
    tokens_file = tmp_path / "tokens"
    tokens_file.write_text(f"{TOKEN}\ntiny\n")
    with pytest.raises(ConfigError) as refused:
        load_tokens(tokens_file, {})
    assert f"{tokens_file}:2" in str(refused.value) and "tiny" not in str(refused.value)
    assert TOKEN not in repr(SecurityConfig(tokens=(TOKEN,)))


def test_message_limits_are_explicit_on_both_sides(server):
    oversized = pb.ExplainRequest(model="linear", method="saliency",
                                  input=pb.Input(encoded_image=b"\0" * (5 * 1024 * 1024)))
    with Client(server.address, timeout=10) as client:  # the client refuses to send it
        with pytest.raises(grpc.RpcError) as client_side:
            list(client.stub.Explain(oversized, timeout=10))
    assert client_side.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    raised = [("grpc.max_send_message_length", 64 * 1024 * 1024)]
    with grpc.insecure_channel(server.address, options=raised) as channel:  # the server refuses it
        with pytest.raises(grpc.RpcError) as server_side:
            list(pb_grpc.ExplainerServiceStub(channel).Explain(oversized, timeout=10))
    assert server_side.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


HOSTILE_NAMES = ["../", "../../etc/passwd", "/etc/passwd", "..", "__class__", "__dict__",
                 "forward", "state_dict", "_modules", "conv.__class__", "conv.weight",
                 "conv/../fc", "", "0", "relu.forward"]


@pytest.mark.parametrize("name", [n for n in HOSTILE_NAMES if n])
def test_hostile_model_names_are_not_found(client, name):
    with pytest.raises(ExplainServeError) as refused:
        client.get_model(name)
    assert refused.value.code == grpc.StatusCode.NOT_FOUND
    with pytest.raises(ExplainServeError) as refused:
        client.explain(np.ones((3, 8, 8), np.float32), model=name, method="saliency")
    assert refused.value.code == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("name", [n for n in HOSTILE_NAMES if n])
def test_hostile_layer_names_are_not_found(client, name):
    image = np.ones((3, 8, 8), np.float32)
    with pytest.raises(ExplainServeError) as refused:
        client.explain(image, model="tiny_cnn", method="gradcam", layer=name)
    assert refused.value.code == grpc.StatusCode.NOT_FOUND
    with pytest.raises(ExplainServeError) as refused:
        client.explain(image, model="tiny_cnn", method="saliency", extra_layers=[name])
    assert refused.value.code == grpc.StatusCode.NOT_FOUND


def test_a_model_named_by_path_is_not_found(client):
    # A model repository path or a weights file name is not a model name.
    for name in ("models.toml", "linear.safetensors", "linear/../linear"):
        with pytest.raises(ExplainServeError) as refused:
            client.get_model(name)
        assert refused.value.code == grpc.StatusCode.NOT_FOUND


def test_security_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        SecurityConfig().tokens = ("x",)  # type: ignore[misc]


def test_the_health_port_answers_probes_in_plaintext_beside_a_tls_port(certs, linear_model):
    security = SecurityConfig(tls_cert=certs.server_cert, tls_key=certs.server_key,
                              tls_client_ca=certs.ca, tokens=(TOKEN,))
    with running_server(linear_model, security=security, health_port=0) as server:
        with grpc.insecure_channel(f"127.0.0.1:{server.server.health_port}") as channel:
            status = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="explainserve.v1.ExplainerService"), timeout=5)
            assert status.status == health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(grpc.RpcError) as other:  # health alone: nothing else is served
                pb_grpc.ExplainerServiceStub(channel).ListModels(pb.ListModelsRequest(), timeout=5)
            assert other.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_incomplete_tls_settings_stop_start_up_with_a_clear_error(certs, tmp_path):
    from explainserve.api.transport import server_credentials
    assert server_credentials(SecurityConfig()) is None
    for security, message in [
        (SecurityConfig(tls_client_ca=certs.ca), "--tls-client-ca needs --tls-cert and --tls-key"),
        (SecurityConfig(tls_cert=certs.server_cert), "TLS needs both --tls-cert and --tls-key"),
        (SecurityConfig(tls_cert=certs.server_cert, tls_key=tmp_path / "missing.key"), "--tls-key"),
    ]:
        with pytest.raises(ConfigError, match=message):
            server_credentials(security)
