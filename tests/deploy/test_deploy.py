"""deploy/, checked offline: the kustomize overlays render (`kubectl kustomize`), every
manifest validates against the Kubernetes
schemas (kubernetes-validate, strict), custom resources have the operators' shape, and names,
ports, labels, probes, flags and metric names agree across files, the server and its CLI."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
import tomllib

import grpc
import kubernetes_validate
import pytest
import yaml
from explainserve import metrics
from explainserve.app import SERVICE_NAME
from explainserve.cli.main import parser as cli_parser
from explainserve.config import load_model_repository
from explainserve_client._proto import explainer_pb2 as pb
from explainserve_client._proto import explainer_pb2_grpc as pb_grpc
from kubernetes_validate.utils import SchemaNotFoundError, ValidationError
from deploy_tools import kustomize, promtool
from support import ROOT, running_server

DEPLOY = ROOT / "deploy"
SERVICE_CONFIG = ROOT / "docs" / "service_config.json"  # the one client config, shared with docs/api.md
KUBERNETES_VERSION = "1.33"  # the version the manifests are validated for (docs/operations.md)
OVERLAYS = ("cpu", "gpu")
CUSTOM_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("monitoring.coreos.com/v1", "PrometheusRule")}
# Labels Prometheus adds to every scraped series (job, instance) and the Prometheus Operator
# adds from the target (namespace, pod, ...); `le` is a histogram's bucket bound.
SCRAPE_LABELS = {"job", "instance", "namespace", "pod", "service", "endpoint", "container", "le"}


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {overlay: kustomize(DEPLOY / "overlays" / overlay) for overlay in OVERLAYS}


def one(resources: list[dict], kind: str, name: str | None = None) -> dict:
    matches = [r for r in resources if r["kind"] == kind and (name is None or r["metadata"]["name"] == name)]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


def server_container(resources: list[dict]) -> dict:
    return one(resources, "Deployment")["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_manifest_validates_strictly_against_the_kubernetes_schemas(rendered, overlay):
    kinds = set()
    for resource in rendered[overlay]:
        key = (resource["apiVersion"], resource["kind"])
        if key in CUSTOM_KINDS:
            with pytest.raises(SchemaNotFoundError):  # checked for shape below instead
                kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)
            continue
        kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)
        kinds.add(resource["kind"])
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget",
            "NetworkPolicy", "ConfigMap", "ServiceAccount", "PersistentVolumeClaim"} <= kinds


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_kubernetes_validate_command_passes_the_rendered_overlay(rendered, overlay, tmp_path):
    manifest = tmp_path / f"{overlay}.yaml"
    manifest.write_text(yaml.safe_dump_all(rendered[overlay]))
    result = subprocess.run([sys.executable, "-m", "kubernetes_validate", "--strict", "-k",
                             KUBERNETES_VERSION, str(manifest)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    warnings = [line for line in (result.stdout + result.stderr).splitlines() if "WARN" in line]
    assert len(warnings) == len(CUSTOM_KINDS) and all("monitoring.coreos.com/v1" in w for w in warnings)


def test_the_validation_is_strict_and_offline(rendered):
    deployment = copy.deepcopy(one(rendered["cpu"], "Deployment"))
    probe = deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpc"]
    probe["prot"] = probe.pop("port")  # a typo must fail, not pass as an unknown field
    with pytest.raises(ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)
    probe["port"] = "grpc"  # native gRPC probes take an integer port, not a name
    del probe["prot"]
    with pytest.raises(ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_model_config_map_name_carries_a_content_hash(rendered, overlay):
    # kustomize's suffix: an edit of models.toml renames the ConfigMap and so rolls the pods.
    config_map = one(rendered[overlay], "ConfigMap")
    assert re.fullmatch(r"explainserve-models-[a-z0-9]{10}", config_map["metadata"]["name"])
    volumes = one(rendered[overlay], "Deployment")["spec"]["template"]["spec"]["volumes"]
    assert config_map["metadata"]["name"] in [v.get("configMap", {}).get("name") for v in volumes]


def test_promtool_checks_the_alerting_rules(rendered, tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(one(rendered["cpu"], "PrometheusRule")["spec"]))
    result = promtool("check", "rules", str(rules))
    assert result.returncode == 0 and "SUCCESS" in result.stdout, result.stdout + result.stderr
    # The check parses PromQL: a broken expression fails it.
    broken = copy.deepcopy(one(rendered["cpu"], "PrometheusRule")["spec"])
    broken["groups"][0]["rules"][0]["expr"] += " by ("
    rules.write_text(yaml.safe_dump(broken))
    assert promtool("check", "rules", str(rules)).returncode != 0


def test_gpu_overlay_asks_for_a_gpu_on_gpu_nodes_and_cpu_overlay_does_not(rendered):
    gpu_pod = one(rendered["gpu"], "Deployment")["spec"]["template"]["spec"]
    gpu = gpu_pod["containers"][0]
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert gpu_pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in gpu_pod["tolerations"]
    assert gpu["image"].endswith("-gpu") and cli_args(gpu).device == "cuda"
    cpu = server_container(rendered["cpu"])
    assert "nvidia.com/gpu" not in json.dumps(one(rendered["cpu"], "Deployment"))
    assert cpu["image"].endswith("-cpu") and cli_args(cpu).device == "cpu"
    for container in (gpu, cpu):
        assert {"cpu", "memory"} <= set(container["resources"]["requests"])
        assert "memory" in container["resources"]["limits"]


def entrypoint() -> list[str]:
    from dockerfile_parse import DockerfileParser
    with open(ROOT / "Dockerfile", "rb") as handle:
        structure = DockerfileParser(fileobj=handle).structure
    return json.loads([item["value"] for item in structure if item["instruction"] == "ENTRYPOINT"][-1])


def cli_args(container: dict):
    """The server's parsed flags: the image's entrypoint plus the pod's args."""
    command = entrypoint()
    assert "command" not in container, "the pod must keep the image's entrypoint"
    assert command[0] == "explainserve"
    return cli_parser().parse_args(command[1:] + container.get("args", []))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ports_probes_and_flags_agree_with_the_server(rendered, overlay):
    resources = rendered[overlay]
    pod = one(resources, "Deployment")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    args = cli_args(container)
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"grpc": args.port, "metrics": args.metrics_port}
    assert args.host == "0.0.0.0"
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = container[kind]["grpc"]
        assert probe["port"] == args.port and isinstance(probe["port"], int)
        assert probe.get("service", "") in ("", SERVICE_NAME)  # the names the server reports
    mounts = {mount["name"]: mount for mount in container["volumeMounts"]}
    assert str(args.models) == mounts["model-repository"]["mountPath"]
    assert mounts["weights"]["mountPath"] == str(args.models.parent / "weights")
    assert mounts["weights"]["readOnly"] and container["securityContext"]["readOnlyRootFilesystem"]
    # Drain budget: endpoints removed (preStop), in-flight calls finish (--grace-period), exit.
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + args.grace_period + 5
    assert args.max_connection_age and args.max_connection_age_grace <= args.grace_period + pre_stop
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] == 10001


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_names_and_labels_agree_across_the_manifests(rendered, overlay):
    resources = rendered[overlay]
    deployment = one(resources, "Deployment")
    selector = deployment["spec"]["selector"]["matchLabels"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= pod_labels.items()
    container_ports = {port["name"] for port in server_container(resources)["ports"]}
    cluster_ip = one(resources, "Service", "explainserve")
    headless = one(resources, "Service", "explainserve-headless")
    assert headless["spec"]["clusterIP"] == "None" and cluster_ip["spec"]["type"] == "ClusterIP"
    for service in (cluster_ip, headless):
        assert service["spec"]["selector"] == selector
        assert {port["targetPort"] for port in service["spec"]["ports"]} <= container_ports
    assert {port["name"] for port in headless["spec"]["ports"]} == {"grpc"}  # no double scrape
    hpa = one(resources, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                            "name": deployment["metadata"]["name"]}
    assert hpa["spec"]["minReplicas"] >= 2  # with maxUnavailable 1 below, one pod always serves
    assert one(resources, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"] == selector
    policy = one(resources, "NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchLabels"] == selector
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    admitted = [port["port"] for rule in policy["spec"]["ingress"] for port in rule["ports"]]
    assert sorted(admitted) == sorted(container_ports) == ["grpc", "metrics"]
    monitor = one(resources, "ServiceMonitor")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= cluster_ip["metadata"]["labels"].items()
    assert [endpoint["port"] for endpoint in monitor["spec"]["endpoints"]] == ["metrics"]
    pod = deployment["spec"]["template"]["spec"]
    config_map = one(resources, "ConfigMap")
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert volumes["model-repository"]["configMap"]["name"] == config_map["metadata"]["name"]
    claim = one(resources, "PersistentVolumeClaim")
    assert volumes["weights"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert pod["serviceAccountName"] == one(resources, "ServiceAccount")["metadata"]["name"]
    for resource in resources:
        if resource["kind"] != "ConfigMap":
            assert resource["metadata"]["labels"]["app.kubernetes.io/name"] == "explainserve"


def test_the_model_repository_config_map_serves_the_demo_model(rendered, tmp_path):
    from explainserve.models.demo import network as demo
    from explainserve.models.demo.repository import demo_model_config
    text = one(rendered["cpu"], "ConfigMap")["data"]["models.toml"]
    assert "/opt/explainserve/demo/" in text  # the path the Dockerfile links to the assets
    repository = tmp_path / "models.toml"
    repository.write_text(text.replace("/opt/explainserve/demo", str(demo.DEMO_ASSETS_DIR)))
    (served,) = load_model_repository(repository)
    assert served == demo_model_config()


def adapter_rules() -> list[dict]:
    return yaml.safe_load((DEPLOY / "prometheus-adapter" / "values.yaml").read_text())["rules"]["custom"]


def test_the_hpa_metric_is_served_by_the_prometheus_adapter_rule(rendered):
    hpa = one(rendered["gpu"], "HorizontalPodAutoscaler")
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods" and metric["pods"]["target"]["type"] == "AverageValue"
    name = metric["pods"]["metric"]["name"]
    (rule,) = [rule for rule in adapter_rules() if rule["name"]["as"] == name]
    assert re.fullmatch(rule["name"]["matches"], metrics.QUEUE_DEPTH._name)
    assert rule["seriesQuery"].startswith(metrics.QUEUE_DEPTH._name + "{")
    assert rule["resources"]["overrides"] == {"namespace": {"resource": "namespace"},
                                              "pod": {"resource": "pod"}}
    for placeholder in ("<<.Series>>", "<<.LabelMatchers>>", "<<.GroupBy>>"):
        assert placeholder in rule["metricsQuery"]
    assert metrics.QUEUE_DEPTH._type == "gauge" and metrics.QUEUE_DEPTH._labelnames == ("model",)


def test_the_service_monitor_and_prometheus_rule_have_the_operator_shape(rendered):
    monitor = one(rendered["cpu"], "ServiceMonitor")
    assert set(monitor["spec"]) == {"selector", "endpoints"}
    for endpoint in monitor["spec"]["endpoints"]:
        assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "scheme"}
        assert re.fullmatch(r"\d+[smh]", endpoint["interval"]) and endpoint["path"] == "/metrics"
    rule = one(rendered["cpu"], "PrometheusRule")
    anchors = docs_anchors()
    names = []
    for group in rule["spec"]["groups"]:
        assert set(group) == {"name", "rules"} and group["rules"]
        for alert in group["rules"]:
            assert set(alert) <= {"alert", "expr", "for", "labels", "annotations"}
            assert re.fullmatch(r"ExplainServe[A-Z][A-Za-z]+", alert["alert"])
            assert alert["expr"].count("(") == alert["expr"].count(")")
            assert "for" not in alert or re.fullmatch(r"\d+[smh]", alert["for"])
            assert alert["labels"]["severity"] in {"critical", "warning", "info"}
            assert {"summary", "description", "runbook"} <= set(alert["annotations"])
            runbook = alert["annotations"]["runbook"]
            assert runbook == f"docs/operations.md#{alert['alert'].lower()}" and runbook.split("#")[1] in anchors
            names.append(alert["alert"])
    assert len(names) == len(set(names))


def docs_anchors() -> set[str]:
    """GitHub-style anchors of the headings in docs/operations.md."""
    headings = re.findall(r"^#+ (.+)$", (ROOT / "docs" / "operations.md").read_text(), re.MULTILINE)
    return {re.sub(r"[^a-z0-9 _-]", "", heading.lower()).replace(" ", "-") for heading in headings}


def defined_metrics() -> dict[str, tuple[str, ...]]:
    """Exposed series names -> label names, for every metric in explainserve.metrics."""
    series = {}
    for item in vars(metrics).values():
        if hasattr(item, "_name") and hasattr(item, "_labelnames"):
            # A histogram's family name appears in descriptions; its series carry suffixes.
            suffixes = {"counter": ["_total"], "histogram": ["", "_bucket", "_sum", "_count"]}.get(item._type, [""])
            for suffix in suffixes:
                series[item._name + suffix] = item._labelnames
    return series


def test_every_metric_and_label_in_alerts_dashboard_and_adapter_exists():
    defined = defined_metrics()
    texts = {
        "prometheusrule": (DEPLOY / "base" / "prometheusrule.yaml").read_text(),
        "dashboard": (DEPLOY / "grafana" / "explainserve.json").read_text(),
        "adapter": (DEPLOY / "prometheus-adapter" / "values.yaml").read_text(),
    }
    used = set()
    for where, text in texts.items():
        text = text.replace('\\"', '"')
        for name, matchers in re.findall(r"(explainserve_[a-z_]+)(?:\{([^}]*)\})?", text):
            assert name in defined, f"{where} uses {name}, which explainserve.metrics does not define"
            keys = set(re.findall(r"([a-z_]+)\s*(?:=~|!~|!=|=)", matchers or ""))
            assert keys <= set(defined[name]) | SCRAPE_LABELS, f"{where}: {name} has no labels {keys}"
            used.add(name)
        for grouping in re.findall(r"by \(([a-z_, ]+)\)", text):
            labels = {label.strip() for label in grouping.split(",")}
            every_label = {label for names in defined.values() for label in names}
            assert labels <= every_label | SCRAPE_LABELS, f"{where} groups by unknown {labels}"
    for required in ("explainserve_requests_total", "explainserve_request_duration_seconds_bucket",
                     "explainserve_queue_duration_seconds_bucket", "explainserve_queue_depth",
                     "explainserve_compute_duration_seconds_bucket", "explainserve_batch_size_sum",
                     "explainserve_rejected_total", "explainserve_device_memory_bytes"):
        assert required in used, f"{required} is on no dashboard or alert"


def test_the_grafana_dashboard_is_importable():
    dashboard = json.loads((DEPLOY / "grafana" / "explainserve.json").read_text())
    assert dashboard["uid"] == "explainserve" and dashboard["schemaVersion"] >= 36
    variables = {variable["name"] for variable in dashboard["templating"]["list"]}
    assert {"datasource", "namespace", "model"} <= variables
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}" and panel["targets"]
            for target in panel["targets"]:
                assert target["expr"].count("(") == target["expr"].count(")")
                assert "$namespace" in target["expr"]


def test_client_service_config_balances_and_retries_unavailable(models_by_name):
    """The documented client config against two real servers, one of them draining: every
    call lands, because UNAVAILABLE is retried on the other server."""
    config = json.loads(SERVICE_CONFIG.read_text())
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    (method,) = config["methodConfig"]
    assert method["name"] == [{"service": SERVICE_NAME}]
    assert "UNAVAILABLE" in method["retryPolicy"]["retryableStatusCodes"]
    models = (models_by_name["linear"],)
    with running_server(models) as draining, running_server(models) as healthy:
        draining.server.draining.active = True
        target = f"ipv4:{draining.address},{healthy.address}"

        def failures(options) -> int:
            with grpc.insecure_channel(target, options=options) as channel:
                stub = pb_grpc.ExplainerServiceStub(channel)
                failed = 0
                for _ in range(12):
                    try:
                        stub.ListModels(pb.ListModelsRequest(), timeout=10)
                    except grpc.RpcError as error:
                        assert error.code() == grpc.StatusCode.UNAVAILABLE
                        failed += 1
                return failed

        assert failures([("grpc.service_config", json.dumps(config))]) == 0
        # The same balancing without the retry policy: calls reach both servers, and those
        # on the draining one fail.
        balancing_only = {"loadBalancingConfig": config["loadBalancingConfig"]}
        assert failures([("grpc.service_config", json.dumps(balancing_only))]) > 0


def test_the_deploy_files_parse():
    for path in sorted(DEPLOY.rglob("*.yaml")):
        assert list(yaml.safe_load_all(path.read_text())), path
    for path in sorted(DEPLOY.rglob("*.json")):
        json.loads(path.read_text())
    assert tomllib.loads((DEPLOY / "base" / "models.toml").read_text())["models"]
