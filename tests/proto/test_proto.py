"""The generated Python code is never stale relative to the .proto, and the client needs no torch."""

from __future__ import annotations

import subprocess
import sys
from support import ROOT

GENERATED = ROOT / "client" / "explainserve_client" / "_proto"


def test_generated_code_matches_the_proto(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "proto" / "generate.py"), "--out", str(tmp_path)],
                   check=True, capture_output=True)
    fresh_files = sorted(tmp_path.glob("*_pb2*"))
    assert {f.name for f in fresh_files} >= {"explainer_pb2.py", "grpc_predict_v2_pb2.py"}
    for fresh in fresh_files:
        committed = GENERATED / fresh.name
        assert committed.read_text() == fresh.read_text(), (
            f"{committed} is stale: run `python proto/generate.py` and commit the result")


def test_the_client_imports_without_torch():
    # A fresh interpreter in which importing torch fails: the client must not need it.
    code = ("import sys; sys.modules['torch'] = None\n"
            "import explainserve_client, explainserve_client.render, explainserve_client.codec\n"
            "from explainserve_client import Client\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT / "client")


def test_the_client_package_declares_no_torch_dependency():
    import tomllib
    project = tomllib.loads((ROOT / "client" / "pyproject.toml").read_text())["project"]
    assert not [d for d in project["dependencies"] if d.lower().startswith(("torch", "torchvision"))]
