"""docs/api.md stays true: generated from the proto, its decoding examples run, its status table
covers every status the server raises, and its service config works with gRPC."""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
import shutil
import subprocess
import sys
import time

import grpc
import numpy as np
import pytest
from explainserve import errors, metrics
from explainserve.config import BatchingConfig
from explainserve_client import Client, ExplainServeError
from explainserve_client._proto import explainer_pb2
from support import ROOT, load_script, running_server

API_DOC = ROOT / "docs" / "api.md"
SERVER_SOURCE = ROOT / "server" / "explainserve"


def load_docs_generator():
    return load_script(ROOT / "proto" / "docs.py", "proto_docs")


def doc_section(text: str, heading: str) -> str:
    """The text under a markdown heading, up to the next heading of any level."""
    match = re.search(rf"^#+ {re.escape(heading)}\n(.*?)(?=^#+ |\Z)", text, re.MULTILINE | re.DOTALL)
    assert match, f"docs/api.md has no heading {heading!r}"
    return match.group(1)


def marked_snippet(name: str) -> str:
    match = re.search(rf"<!-- tested: {name} -->\n```\w+\n(.*?)```", API_DOC.read_text(), re.DOTALL)
    assert match, f"docs/api.md has no snippet marked <!-- tested: {name} -->"
    return match.group(1)


def test_api_doc_is_generated_from_the_current_proto():
    docs = load_docs_generator()
    text = API_DOC.read_text()
    assert docs.update(text, docs.generated_sections()) == text, (
        "docs/api.md is stale: run python proto/docs.py")


def test_every_rpc_message_field_and_enum_value_is_documented():
    text = API_DOC.read_text()
    service = explainer_pb2.DESCRIPTOR.services_by_name["ExplainerService"]
    rpcs = doc_section(text, f"{service.full_name}")
    for method in service.methods:
        assert f"| `{method.name}` |" in rpcs
    for message in explainer_pb2.DESCRIPTOR.message_types_by_name.values():
        section = doc_section(text, message.name)
        for field in message.fields:
            assert f"| `{field.name}` | {field.number} |" in section, f"{message.name}.{field.name}"
    for enum in explainer_pb2.DESCRIPTOR.enum_types_by_name.values():
        section = doc_section(text, enum.name)
        for value in enum.values:
            assert f"| `{value.name}` | {value.number} |" in section, f"{enum.name}.{value.name}"


def statuses_the_server_can_return() -> dict[str, set[str]]:
    """Status name -> source files, from the ServiceErrors raised and the StatusCodes used."""
    classes = {cls.__name__: cls.status for _, cls in inspect.getmembers(errors, inspect.isclass)
               if issubclass(cls, errors.ServiceError) and cls is not errors.ServiceError}
    raised = re.compile(rf"\b({'|'.join(classes)})\(")
    named = re.compile(r"StatusCode\.([A-Z_]+)")
    found: dict[str, set[str]] = {}
    for path in SERVER_SOURCE.rglob("*.py"):
        if path.name == "errors.py":  # defines the classes; raises none
            continue
        source = path.read_text()
        statuses = {classes[name] for name in raised.findall(source)}
        statuses |= set(named.findall(source)) - {"UNKNOWN"}  # UNKNOWN: a metrics fallback only
        if "not_found(" in source:
            statuses.add("NOT_FOUND")
        for status in statuses:
            found.setdefault(status, set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_status_the_server_can_return_is_in_the_status_table():
    table = doc_section(API_DOC.read_text(), "Status codes")
    documented = set(re.findall(r"^\| `([A-Z_]+)` \|", table, re.MULTILINE))
    raised = statuses_the_server_can_return()
    assert {"INVALID_ARGUMENT", "NOT_FOUND", "RESOURCE_EXHAUSTED", "UNAVAILABLE"} <= set(raised)
    missing = {status: sorted(files) for status, files in raised.items() if status not in documented}
    assert not missing, f"statuses raised but not in docs/api.md's status table: {missing}"
    assert all(name in grpc.StatusCode.__members__ for name in documented)


def test_the_python_decoding_example_runs(tmp_path):
    script = tmp_path / "decode.py"
    script.write_text(marked_snippet("decode-python"))
    finished = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.strip() == "[[0.0, 0.5, 1.0], [-1.0, 2.0, 0.25]]"


@pytest.mark.skipif(shutil.which("node") is None, reason="`node` is not on PATH")
def test_the_javascript_decoding_example_runs(tmp_path):
    script = tmp_path / "decode.mjs"
    script.write_text(marked_snippet("decode-javascript"))
    finished = subprocess.run(["node", str(script)], capture_output=True, text=True, timeout=60)
    assert finished.returncode == 0, finished.stderr
    assert json.loads(finished.stdout) == {"shape": [2, 3], "values": [0, 0.5, 1, -1, 2, 0.25]}


def refusals_counted(model: str, at_least: int, wait_s: float = 5.0) -> int:
    """Explain calls the server counted as RESOURCE_EXHAUSTED, once at least `at_least` are
    (the server counts a call just after its status has gone out, so the client can be first)."""
    counter = metrics.REQUESTS.labels(rpc="Explain", model=model, method="saliency",
                                      code="RESOURCE_EXHAUSTED")
    give_up = time.monotonic() + wait_s
    while counter._value.get() < at_least and time.monotonic() < give_up:
        time.sleep(0.01)
    return int(counter._value.get())


def test_the_documented_service_config_retries_a_full_queue_after_the_pushback(models_by_name):
    """A queue of size 0 refuses every request with RESOURCE_EXHAUSTED and a pushback; with
    docs/service_config.json, gRPC itself tries maxAttempts times before giving up."""
    refusing = dataclasses.replace(models_by_name["linear"], name="linear_full",
                                   batching=BatchingConfig(max_queue_size=0))
    config = json.loads((ROOT / "docs" / "service_config.json").read_text())
    attempts = config["methodConfig"][0]["retryPolicy"]["maxAttempts"]
    image = np.zeros((3, 8, 8), dtype=np.float32)
    with running_server((refusing,)) as server:
        # service_config=None: no retry policy, so exactly one refusal before the count below
        with Client(server.address, timeout=30, service_config=None) as plain:
            request = plain.explain_request(image, "linear_full", "saliency", targets=[0])
            with pytest.raises(grpc.RpcError) as refused:
                list(plain.stub.Explain(request, timeout=30))
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        pushback = dict(refused.value.trailing_metadata())["grpc-retry-pushback-ms"]
        assert int(pushback) > 0
        before = refusals_counted("linear_full", at_least=1)
        assert before == 1
        with Client(server.address, timeout=30,
                    options=[("grpc.service_config", json.dumps(config))]) as retrying:
            with pytest.raises(ExplainServeError) as gave_up:
                retrying.explain(image, model="linear_full", method="saliency", targets=[0])
        assert gave_up.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert refusals_counted("linear_full", at_least=before + attempts) - before == attempts
