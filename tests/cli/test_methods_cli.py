"""`explainserve methods --server ADDRESS`: one line per method, then its parameters."""

from __future__ import annotations

import json

from explainserve.cli.main import main


def test_methods_prints_every_method_and_its_parameters(server, client, capsys):
    assert main(["methods", "--server", server.address]) == 0
    lines = capsys.readouterr().out.splitlines()
    expected = client.list_methods()
    heads = [line.split("\t") for line in lines if not line.startswith("  ")]
    assert [head[0] for head in heads] == [method.name for method in expected]
    occlusion = next(head for head in heads if head[0] == "occlusion")
    assert occlusion[1] == "target" and occlusion[2].startswith("sanity ")
    params = [line.split("\t") for line in lines if line.startswith("  ")]
    assert len(params) == sum(len(method.parameters) for method in expected)
    window = next(p for p in params if p[0] == "  window")
    assert window[1] == "int" and window[2] == "default 32 [1, ]"


def test_methods_json_is_what_the_client_returns(server, client, capsys):
    from dataclasses import asdict
    assert main(["methods", "--server", server.address, "--json"]) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert printed == [json.loads(json.dumps(asdict(m))) for m in client.list_methods()]
