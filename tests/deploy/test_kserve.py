"""deploy/kserve, checked offline: `kubectl kustomize` renders it; the predictor's container and
volumes validate strictly against the Kubernetes Pod schema (the InferenceService CRD itself
has no schema here, so its envelope is checked for KServe's v1beta1 shape); its flags parse
with the server's CLI and agree with its ports and probes; and a real server answers the
probe paths and speaks OIP v2 on the ports the manifest names."""

from __future__ import annotations

import json

import httpx
import kubernetes_validate
import pytest
from explainserve.cli.main import parser as cli_parser
from explainserve.models.demo.repository import demo_model_config
from deploy_tools import kustomize
from support import ROOT, running_server

KSERVE = ROOT / "deploy" / "kserve"
KUBERNETES_VERSION = "1.33"
# serving.kserve.io/v1beta1 PredictorSpec: the ComponentExtensionSpec fields and the embedded
# PodSpec's (only those used here are listed; an unknown key is a typo).
PREDICTOR_KEYS = {"minReplicas", "maxReplicas", "containers", "volumes",
                  "terminationGracePeriodSeconds", "serviceAccountName", "nodeSelector",
                  "tolerations", "scaleMetric", "scaleTarget"}


@pytest.fixture(scope="module")
def rendered() -> list[dict]:
    return kustomize(KSERVE)


def inference_service(rendered) -> dict:
    (service,) = [r for r in rendered if r["kind"] == "InferenceService"]
    return service


def entrypoint() -> list[str]:
    line = next(l for l in (ROOT / "Dockerfile").read_text().splitlines()
                if l.startswith("ENTRYPOINT"))
    return json.loads(line.removeprefix("ENTRYPOINT"))


def test_the_envelope_has_kserves_shape(rendered):
    assert {r["kind"] for r in rendered} == {"InferenceService", "ConfigMap"}
    service = inference_service(rendered)
    assert service["apiVersion"] == "serving.kserve.io/v1beta1"
    assert set(service["spec"]) == {"predictor"}
    assert set(service["spec"]["predictor"]) <= PREDICTOR_KEYS
    assert service["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"
    (container,) = service["spec"]["predictor"]["containers"]
    assert container["name"] == "kserve-container"  # the name KServe's custom predictor expects
    config_map = next(r for r in rendered if r["kind"] == "ConfigMap")
    kubernetes_validate.validate(config_map, KUBERNETES_VERSION, strict=True)
    volumes = service["spec"]["predictor"]["volumes"]
    assert config_map["metadata"]["name"] in [v.get("configMap", {}).get("name") for v in volumes]
    assert (KSERVE / "models.toml").read_text() == (ROOT / "deploy" / "base" / "models.toml").read_text()


def test_the_predictor_validates_as_a_pod(rendered):
    predictor = inference_service(rendered)["spec"]["predictor"]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "predictor"},
           "spec": {key: predictor[key] for key in
                    ("containers", "volumes", "terminationGracePeriodSeconds")}}
    kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)
    pod["spec"]["containers"][0]["readinessProbe"]["httpGet"]["pth"] = "/"
    with pytest.raises(kubernetes_validate.utils.ValidationError):
        kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)


def test_flags_ports_and_probes_agree(rendered):
    predictor = inference_service(rendered)["spec"]["predictor"]
    container = predictor["containers"][0]
    assert "command" not in container
    command = entrypoint()
    args = cli_parser().parse_args(command[1:] + container["args"])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    # KServe routes HTTP to the port named http1 and gRPC to the one named h2c.
    assert ports == {"http1": args.http_port, "h2c": args.port}
    for kind in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[kind]["httpGet"]["port"] == args.http_port
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["model-repository"] == str(args.models)
    assert predictor["terminationGracePeriodSeconds"] >= args.grace_period + 5
    assert container["securityContext"]["readOnlyRootFilesystem"]


def test_a_real_server_answers_the_probes_and_v2(rendered):
    container = inference_service(rendered)["spec"]["predictor"]["containers"][0]
    with running_server((demo_model_config(),), http_port=0) as background:
        base = f"http://127.0.0.1:{background.server.http_port}"
        for kind in ("readinessProbe", "livenessProbe", "startupProbe"):
            assert httpx.get(base + container[kind]["httpGet"]["path"]).status_code == 200
        assert httpx.get(f"{base}/v2/models/demo").json()["platform"] == "explainserve"
