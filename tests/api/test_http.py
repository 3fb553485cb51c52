"""HTTP/JSON through httpx: KServe v1 :predict and :explain and OIP v2 infer on the demo model
give what ExplainerService gives; bad requests get the matching HTTP status with a message
naming the bad value, and the server keeps serving; tokens guard the API as they guard gRPC."""

from __future__ import annotations

import base64

import httpx
import numpy as np
import pytest
from explainserve.config import SecurityConfig
from explainserve.models.demo.repository import demo_model_config
from explainserve.models.demo.shapes import draw_shape
from explainserve_client import Client
from explainserve_client.render import image_png
from prometheus_client import REGISTRY
from support import running_server

IMAGE = draw_shape("triangle", seed=4)
PNG = image_png(IMAGE)
B64 = base64.b64encode(PNG).decode()
TOKEN = "s3cret-token-for-http-tests"


@pytest.fixture(scope="module")
def served():
    with running_server((demo_model_config(),), http_port=0) as background:
        with httpx.Client(base_url=f"http://127.0.0.1:{background.server.http_port}",
                          timeout=60) as http, Client(background.address, timeout=60) as client:
            yield http, client


def infer_body(**parameters):
    return {"parameters": {"method": "gradcam", **parameters},
            "inputs": [{"name": "image", "datatype": "UINT8", "shape": list(IMAGE.shape),
                        "data": IMAGE.ravel().tolist()}]}


def test_v2_health_and_metadata(served):
    http, _ = served
    assert http.get("/v2/health/live").json() == {"live": True}
    assert http.get("/v2/health/ready").json() == {"ready": True}
    assert http.get("/v2/models/demo/ready").json()["ready"] is True
    assert http.get("/v2/models/demo").json()["inputs"][2] == {
        "name": "input", "datatype": "FP32", "shape": [1, 3, 64, 64]}


def test_v2_infer_equals_explain(served):
    http, client = served
    expected = client.explain(PNG, model="demo", method="gradcam")[0]
    answer = http.post("/v2/models/demo/infer", json={**infer_body(), "id": "abc"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["id"] == "abc" and body["model_name"] == "demo"
    outputs = {o["name"]: o for o in body["outputs"]}
    heatmap = np.asarray(outputs["heatmap"]["data"], np.float32).reshape(outputs["heatmap"]["shape"])
    assert heatmap[0].tobytes() == expected.heatmap.tobytes()
    assert outputs["labels"]["data"] == [expected.label]
    assert np.float32(outputs["scores"]["data"][0]) == np.float32(expected.score)


def test_v1_predict_and_explain(served):
    http, client = served
    expected = client.explain(PNG, model="demo", method="gradcam", top_k=2)
    predicted = http.post("/v1/models/demo:predict",
                          json={"instances": [{"b64": B64}, {"image": {"b64": B64}}],
                                "parameters": {"top_k": 2}})
    assert predicted.status_code == 200, predicted.text
    rows = predicted.json()["predictions"]
    assert len(rows) == 2 and rows[0] == rows[1]
    assert [p["class"] for p in rows[0]] == [e.target for e in expected]
    assert [p["label"] for p in rows[0]] == [e.label for e in expected]
    explained = http.post("/v1/models/demo:explain",
                          json={"instances": [IMAGE.tolist()], "parameters": {"method": "gradcam"}})
    assert explained.status_code == 200, explained.text
    item = explained.json()["explanations"][0]
    single = client.explain(PNG, model="demo", method="gradcam")[0]
    assert np.asarray(item["heatmap"], np.float32)[0].tobytes() == single.heatmap.tobytes()
    assert base64.b64decode(item["overlay"][0])[:8] == b"\x89PNG\r\n\x1a\n"


def test_v1_methods_lists_every_method_with_its_parameters(served):
    http, _ = served
    methods = {m["name"]: m for m in http.get("/v1/methods").json()["methods"]}
    assert methods["gradcam"]["uses_layer"] is True
    occlusion = {p["name"]: p for p in methods["occlusion"]["params"]}
    assert occlusion["window"]["type"] == "int" and occlusion["window"]["default"] == 32


def _requests_counted(rpc: str, code: str) -> float:
    return REGISTRY.get_sample_value("explainserve_requests_total", {
        "rpc": rpc, "model": "demo", "method": "gradcam", "code": code}) or 0.0


@pytest.mark.parametrize("send, status, named", [
    (lambda h: h.post("/v2/models/demo/infer", content=b"{not json"), 400, "not valid JSON"),
    (lambda h: h.post("/v2/models/demo/infer", content=b"x" * (4 * 1024 * 1024 + 1)), 413, "limit"),
    (lambda h: h.post("/v2/models/demo/infer", json={**infer_body(), "inputs": [
        {**infer_body()["inputs"][0], "datatype": "INT32"}]}), 422, "INT32"),
    (lambda h: h.post("/v2/models/demo/infer", json={**infer_body(), "inputs": [
        {**infer_body()["inputs"][0], "shape": [64, 192, 1]}]}), 422, "[64, 192, 1]"),
    (lambda h: h.post("/v2/models/demo/infer", json={**infer_body(), "inputs": [
        {**infer_body()["inputs"][0], "shape": [64, 64, 4]}]}), 422, "needs 16384"),
    (lambda h: h.post("/v2/models/nope/infer", json=infer_body()), 404, "nope"),
    (lambda h: h.post("/v2/models/demo/infer", json=infer_body(method="magic")), 404, "magic"),
    (lambda h: h.post("/v2/models/demo/infer", json=infer_body(targets=42)), 400, "42"),
    (lambda h: h.post("/v1/models/demo:predict", json={"instances": [{"b64": "@@"}]}), 400, "base64"),
    (lambda h: h.get("/v2/models/nope"), 404, "nope"),
])
def test_bad_requests_get_a_status_naming_the_value(served, send, status, named):
    http, _ = served
    answer = send(http)
    assert answer.status_code == status, answer.text
    assert named in answer.json()["error"]
    before = _requests_counted("http_v2_infer", "OK")
    assert http.post("/v2/models/demo/infer", json=infer_body()).status_code == 200
    assert _requests_counted("http_v2_infer", "OK") == before + 1


def test_tokens_guard_the_api_but_not_health():
    security = SecurityConfig(tokens=(TOKEN,))
    with running_server((demo_model_config(),), http_port=0, security=security) as background:
        base = f"http://127.0.0.1:{background.server.http_port}"
        assert httpx.get(f"{base}/v2/health/ready").status_code == 200
        refused = httpx.post(f"{base}/v2/models/demo/infer", json=infer_body())
        assert refused.status_code == 401 and "bearer token" in refused.json()["error"]
        assert httpx.get(f"{base}/v2/models/demo",
                         headers={"Authorization": "Bearer wrong-token-wrong-token"}).status_code == 401
        admitted = httpx.post(f"{base}/v2/models/demo/infer", json=infer_body(),
                              headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
        assert admitted.status_code == 200, admitted.text


def test_mutual_tls_guards_http_as_it_guards_grpc(tmp_path):
    import ssl

    from ops_support import make_certificates
    certs = make_certificates(tmp_path)
    security = SecurityConfig(tls_cert=certs.server_cert, tls_key=certs.server_key,
                              tls_client_ca=certs.ca)
    with running_server((demo_model_config(),), http_port=0, security=security) as background:
        url = f"https://localhost:{background.server.http_port}/v2/health/ready"
        trusted = ssl.create_default_context(cafile=str(certs.ca))
        trusted.load_cert_chain(str(certs.client_cert), str(certs.client_key))
        assert httpx.get(url, verify=trusted).json() == {"ready": True}
        without_certificate = ssl.create_default_context(cafile=str(certs.ca))
        with pytest.raises(httpx.HTTPError):
            httpx.get(url, verify=without_certificate)
        with pytest.raises(httpx.HTTPError):
            httpx.get(url.replace("https", "http"))
