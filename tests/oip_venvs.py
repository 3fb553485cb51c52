"""Throwaway virtual environments for clients that cannot share the project's: tritonclient
needs protobuf < 7 while grpcio-tools needs protobuf >= 7, and the client's oldest supported
protobuf is older than both. Each environment is built once per requirement set (its name
holds a hash of the requirements and of this interpreter) under the system's temporary
directory, with pip from the same package index as the project's, and reused afterwards."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

from support import ROOT

CLIENT = ROOT / "client"


def cached_venv(name: str, requirements: list[str], with_client: bool = True) -> Path:
    """The interpreter of an environment holding `requirements` (and the client, editable)."""
    key = hashlib.sha256("\n".join([sys.version, str(ROOT), *requirements,
                                    (CLIENT / "pyproject.toml").read_text() if with_client else ""])
                         .encode()).hexdigest()[:12]
    home = Path(tempfile.gettempdir()) / f"explainserve-{name}-{key}"
    python = home / "bin" / "python"
    if (home / "ready").is_file():
        return python
    venv.create(home, with_pip=True, clear=True)
    extra = ["-e", str(CLIENT)] if with_client else []
    result = subprocess.run([str(python), "-m", "pip", "install", "-q", *requirements, *extra],
                            capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise RuntimeError(f"could not build the {name} environment: {result.stderr[-2000:]}")
    (home / "ready").write_text("\n".join(requirements) + "\n")
    return python


def run_python(python: Path, script: Path, *args: str, timeout: float = 300) -> str:
    """Run `script` with that interpreter outside the repository's import path."""
    result = subprocess.run([str(python), str(script), *args], capture_output=True, text=True,
                            timeout=timeout, cwd=tempfile.gettempdir())
    if result.returncode != 0:
        raise AssertionError(f"{script.name} failed ({result.returncode}):\n{result.stdout}\n"
                             f"{result.stderr[-4000:]}")
    return result.stdout
