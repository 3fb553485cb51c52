"""The command-line tools the deploy/ checks run: `kubectl kustomize` renders the overlays
exactly as a cluster would get them, and `promtool` (Debian's prometheus package) parses and
checks the alerting rules. Where a tool is missing and we are root, it is installed from the
Debian packages (kubectl from the machine's configured package source); otherwise the test
that needs it is skipped with the reason printed."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml


@functools.cache
def _installed(binary: str, package: str) -> str | None:
    if shutil.which(binary):
        return shutil.which(binary)
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return None
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env, timeout=900)
    subprocess.run(["apt-get", "install", "-y", "-q", package], capture_output=True, env=env,
                   timeout=900)
    return shutil.which(binary)


def tool(binary: str, package: str) -> str:
    path = _installed(binary, package)
    if path is None:
        pytest.skip(f"{binary} is not installed and cannot be here (apt-get install {package} "
                    "needs root)")
    return path


def kustomize(directory: Path) -> list[dict]:
    """`kubectl kustomize DIRECTORY`, parsed."""
    output = subprocess.run([tool("kubectl", "kubectl"), "kustomize", str(directory)],
                            capture_output=True, text=True, timeout=120, check=True).stdout
    return [document for document in yaml.safe_load_all(output) if document]


def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([tool("promtool", "prometheus"), *args], capture_output=True,
                          text=True, timeout=120)
