"""Render a kustomization without the kustomize binary: the subset deploy/ uses.

resources (files and folders), configMapGenerator (files, with kustomize's content-hash name
suffix and the references to it renamed), patches (strategic merge, or JSON 6902 with a
target), images and namespace. Anything else raises, so a new feature in deploy/ cannot be
silently ignored. tests/deploy/test_deploy.py compares the result with `kubectl kustomize` where
that binary exists.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

SUPPORTED = {"apiVersion", "kind", "resources", "configMapGenerator", "patches", "images",
             "namespace"}
# Strategic-merge keys of the lists deploy/ patches (from the Kubernetes API's
# x-kubernetes-patch-merge-key); any other list is replaced whole, as kustomize does.
MERGE_KEYS = {"containers": "name", "initContainers": "name", "volumes": "name", "env": "name",
              "volumeMounts": "mountPath", "ports": "containerPort", "imagePullSecrets": "name"}
Resource = dict[str, Any]


def build(directory: Path) -> list[Resource]:
    directory = Path(directory)
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - SUPPORTED
    if unknown:
        raise ValueError(f"{directory}/kustomization.yaml uses {sorted(unknown)}, which "
                         "kustomize_lite does not render")
    resources: list[Resource] = []
    for entry in kustomization.get("resources", []):
        path = directory / entry
        resources += build(path) if path.is_dir() else load_documents(path)
    renamed = {}
    for generator in kustomization.get("configMapGenerator", []):
        config_map = generate_config_map(directory, generator)
        renamed[generator["name"]] = config_map["metadata"]["name"]
        resources.append(config_map)
    for resource in resources:
        rename_config_map_references(resource, renamed)
    for patch in kustomization.get("patches", []):
        apply_patch(resources, directory / patch["path"], patch.get("target"))
    for image in kustomization.get("images", []):
        for resource in resources:
            set_image(resource, image)
    if "namespace" in kustomization:
        for resource in resources:
            resource["metadata"]["namespace"] = kustomization["namespace"]
    return resources


def load_documents(path: Path) -> list[Resource]:
    return [document for document in yaml.safe_load_all(path.read_text()) if document]


def generate_config_map(directory: Path, generator: dict) -> Resource:
    unknown = set(generator) - {"name", "files"}
    if unknown:
        raise ValueError(f"configMapGenerator {generator['name']}: {sorted(unknown)} not rendered")
    data = {Path(item).name: (directory / item).read_text() for item in generator["files"]}
    name = generator["name"]
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": f"{name}-{config_map_hash(name, data)}"}, "data": data}


def config_map_hash(name: str, data: dict[str, str]) -> str:
    """kustomize's api/hasher: sha256 of Go's json.Marshal of {kind, name, data}, the first
    ten hex digits with 0 1 3 a e replaced (so the suffix never looks like a number)."""
    encoded = json.dumps({"data": data, "kind": "ConfigMap", "name": name}, sort_keys=True,
                         separators=(",", ":"), ensure_ascii=False)
    for char, escape in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e"),
                         ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        encoded = encoded.replace(char, escape)  # Go's json.Marshal escapes these
    digest = hashlib.sha256(encoded.encode()).hexdigest()[:10]
    return digest.translate(str.maketrans("013ae", "ghkmt"))


def pod_spec(resource: Resource) -> dict | None:
    return resource.get("spec", {}).get("template", {}).get("spec")


def rename_config_map_references(resource: Resource, renamed: dict[str, str]) -> None:
    spec = pod_spec(resource)
    if not spec or not renamed:
        return
    for volume in spec.get("volumes", []):
        if "configMap" in volume:
            volume["configMap"]["name"] = renamed.get(volume["configMap"]["name"], volume["configMap"]["name"])
    for container in spec.get("containers", []) + spec.get("initContainers", []):
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                ref = source["configMapRef"]
                ref["name"] = renamed.get(ref["name"], ref["name"])
        for variable in container.get("env", []):
            ref = variable.get("valueFrom", {}).get("configMapKeyRef")
            if ref:
                ref["name"] = renamed.get(ref["name"], ref["name"])


def apply_patch(resources: list[Resource], path: Path, target: dict | None) -> None:
    patch = yaml.safe_load(path.read_text())
    if isinstance(patch, list):  # JSON 6902
        if target is None:
            raise ValueError(f"JSON 6902 patch {path} needs a target")
        matched = [r for r in resources if r["kind"] == target["kind"]
                   and r["metadata"]["name"] == target["name"]]
        if not matched:
            raise ValueError(f"patch {path}: no {target['kind']}/{target['name']}")
        for resource in matched:
            for operation in patch:
                apply_operation(resource, operation)
        return
    matched = [r for r in resources if r["kind"] == patch["kind"]
               and r["metadata"]["name"] == patch["metadata"]["name"]]
    if len(matched) != 1:
        raise ValueError(f"strategic merge patch {path} matches {len(matched)} resources")
    merged = strategic_merge(matched[0], patch)
    matched[0].clear()
    matched[0].update(merged)


def strategic_merge(base: Any, patch: Any, key: str = "") -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        if any(name.startswith("$") for name in patch):
            raise ValueError(f"patch directives {list(patch)} are not rendered")
        merged = copy.deepcopy(base)
        for name, value in patch.items():
            merged[name] = strategic_merge(base[name], value, name) if name in base else copy.deepcopy(value)
        return merged
    if isinstance(base, list) and isinstance(patch, list) and key in MERGE_KEYS:
        merge_key = MERGE_KEYS[key]
        merged = copy.deepcopy(base)
        added = []
        for item in patch:
            index = next((i for i, old in enumerate(merged) if old.get(merge_key) == item.get(merge_key)), None)
            if index is None:
                added.append(copy.deepcopy(item))
            else:
                merged[index] = strategic_merge(merged[index], item)
        return added + merged  # kustomize puts the patch's new items first
    return copy.deepcopy(patch)


def apply_operation(resource: Resource, operation: dict) -> None:
    """JSON Patch (RFC 6902) add / replace / remove."""
    *parents, last = [part.replace("~1", "/").replace("~0", "~")
                      for part in operation["path"].lstrip("/").split("/")]
    node: Any = resource
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    op = operation["op"]
    if op == "add" and isinstance(node, list):
        node.insert(len(node) if last == "-" else int(last), copy.deepcopy(operation["value"]))
    elif op in ("add", "replace"):
        node[int(last) if isinstance(node, list) else last] = copy.deepcopy(operation["value"])
    elif op == "remove":
        del node[int(last) if isinstance(node, list) else last]
    else:
        raise ValueError(f"JSON patch op {op!r} is not rendered")


def set_image(resource: Resource, image: dict) -> None:
    spec = pod_spec(resource)
    if not spec:
        return
    for container in spec.get("containers", []) + spec.get("initContainers", []):
        name = image_name(container["image"])
        if name != image["name"]:
            continue
        new = image.get("newName", name)
        if "digest" in image:
            container["image"] = f"{new}@{image['digest']}"
        elif "newTag" in image:
            container["image"] = f"{new}:{image['newTag']}"
        else:
            container["image"] = new


def image_name(reference: str) -> str:
    """registry/repo:tag@digest -> registry/repo (a registry's :port is not a tag)."""
    reference = reference.split("@")[0]
    return reference.rsplit(":", 1)[0] if ":" in reference.rsplit("/", 1)[-1] else reference
