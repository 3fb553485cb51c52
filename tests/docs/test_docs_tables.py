"""The measured tables in docs/ are what docs/results/*.json generate (benchmarks/tables.py):
a table that disagrees with its JSON, a table whose JSON does not exist yet ("not yet
measured") and a table made from a --quick run all fail."""

from __future__ import annotations

import json
import shutil

import pytest
from support import ROOT, load_script

tables = load_script(ROOT / "benchmarks" / "tables.py", "docs_tables")


def test_every_table_in_the_docs_is_what_its_json_generates():
    problems = tables.check()
    assert not problems, (
        "docs tables and docs/results/*.json disagree. A table 'not yet measured' needs its "
        "benchmark run (the message names the command), then `python benchmarks/tables.py`:\n"
        + "\n".join(problems))


def test_the_docs_have_table_blocks_and_each_source_is_a_benchmark_script():
    names = {match["name"] for path in tables.documents(tables.DOCS)
             for match in tables.BLOCK.finditer(path.read_text())}
    assert names == set(tables.TABLES), "every renderer has a block in docs/ and vice versa"
    for table in tables.TABLES.values():
        assert (ROOT / table.script).is_file(), (table.source, table.run)


def a_result(**settings) -> dict:
    return {"benchmark": "demo_model", "schema": 1, "command": "python benchmarks/demo_model.py",
            "date": "2026-01-02T03:04:05Z", "started": "2026-01-02T03:03:05Z", "duration_s": 60.0,
            "git": {"commit": "0123456789abcdef0123456789abcdef01234567", "dirty": False,
                    "changed": []},
            "machine": {"cpu": "Some CPU", "cores": 2, "torch": "2.14.1", "torch_threads": 2,
                        "gpu": False, "gpu_name": None, "python": "3.11",
                        "load_average_at_start": 0.1, "load_average_at_end": 1.0},
            "settings": {"quick": False, "singles": 2000, "single_seed": 12345, "pairs": 500,
                         "pair_seed": 12346, "forward_runs": 200, "forward_batch": 1,
                         "threads": 2, "layout": "torch.channels_last", **settings},
            "figures": {"accuracy": 0.9995, "errors": 1, "pair_top2_rate": 0.982,
                        "forward_ms": 1.6, "draw_ms_per_image": 1.0, "parameters": 98712,
                        "weights_bytes": 399112}}


@pytest.fixture
def scratch(tmp_path):
    docs, results = tmp_path / "docs", tmp_path / "docs" / "results"
    results.mkdir(parents=True)
    (docs / "page.md").write_text("# Page\n\n<!-- table:demo_model -->\n<!-- /table -->\n\nprose\n")
    return docs, results


def test_the_check_fails_on_a_missing_json_a_stale_table_and_a_quick_run(scratch):
    docs, results = scratch
    assert any("not yet measured" in p for p in tables.check(docs, results))
    assert tables.regenerate(docs, results)  # the placeholder remains: still reported
    assert "Not yet measured: run `python benchmarks/demo_model.py`" in (docs / "page.md").read_text()

    (results / "demo_model.json").write_text(json.dumps(a_result()))
    assert any("differs from" in p for p in tables.check(docs, results))
    assert tables.regenerate(docs, results) == []
    assert tables.check(docs, results) == []
    text = (docs / "page.md").read_text()
    assert "**99.95%** (1 error)" in text and "commit `0123456`" in text
    assert text.endswith("<!-- /table -->\n\nprose\n")  # prose outside the block is kept

    (docs / "page.md").write_text(text.replace("99.95%", "99.99%"))  # a hand edit
    assert any("differs from" in p for p in tables.check(docs, results))

    (results / "demo_model.json").write_text(json.dumps(a_result(quick=True)))
    tables.regenerate(docs, results)
    assert any("--quick run" in p for p in tables.check(docs, results))


def test_a_json_without_the_figures_a_table_needs_is_reported(scratch):
    docs, results = scratch
    broken = a_result()
    del broken["figures"]["accuracy"]
    (results / "demo_model.json").write_text(json.dumps(broken))
    problems = tables.check(docs, results)
    assert any("lacks what the table needs" in p and "accuracy" in p for p in problems)


def test_an_unknown_table_name_is_reported(scratch):
    docs, results = scratch
    (docs / "page.md").write_text("<!-- table:no_such_table -->\n<!-- /table -->\n")
    assert any("unknown table 'no_such_table'" in p for p in tables.check(docs, results))


def test_regenerating_twice_changes_nothing(tmp_path):
    """The generator is idempotent on the real docs and results (run on a copy)."""
    docs = tmp_path / "docs"
    shutil.copytree(tables.DOCS, docs, ignore=shutil.ignore_patterns("*.png"))
    results = docs / "results"
    results.mkdir(exist_ok=True)
    tables.regenerate(docs, results)
    once = {path.name: path.read_text() for path in tables.documents(docs)}
    tables.regenerate(docs, results)
    assert once == {path.name: path.read_text() for path in tables.documents(docs)}
