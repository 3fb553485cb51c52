"""The README opens with the two commands, and CI runs exactly the second one."""

from __future__ import annotations

import re
from support import ROOT


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```(?:bash|sh)\n(.+?)\n```", text, flags=re.S)[:2]


def test_readme_starts_with_two_commands():
    demo, tests = readme_commands()
    assert "explainserve demo" in demo and "pip install" in demo
    assert "pytest" in tests and "pip install" in tests


def test_ci_runs_the_readme_test_command():
    _, tests = readme_commands()
    ci = (ROOT / ".ci" / "run").read_text()
    assert tests.strip() in ci
