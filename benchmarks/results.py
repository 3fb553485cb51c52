"""One JSON file per benchmark run: what ran, when, on which commit and machine, with which
settings, and every figure the docs' tables show. `benchmarks/tables.py` turns these files into
the tables of docs/*.md.

    {
      "benchmark": "load",                       # the script's name; the file is <name>.json
      "schema": 1,
      "command": "python benchmarks/load.py",    # as it was run, flags included
      "date": "2026-11-22T05:50:41Z",            # UTC, when the run finished
      "started": "2026-11-22T05:46:02Z",
      "duration_s": 279.1,
      "git": {"commit": "<40 hex>", "dirty": false, "changed": []},  # outside docs/, *.md
      "machine": {"cpu": "AMD EPYC", "cores": 2, "torch": "2.14.1+cu130", "torch_threads": 2,
                  "gpu": false, "gpu_name": null, "python": "3.11.7",
                  "load_average_at_start": 0.02, "load_average_at_end": 1.9},
      "settings": {"quick": false, ...},        # what the script was asked to do
      "figures": {...}                           # what it measured
    }

A script writes to docs/results/<name>.json by default (the file the docs are generated from),
and to the system's temporary folder with --quick, so a short run never replaces a full one.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
SCHEMA = 1

# Taken when a benchmark imports this module, before it does any work.
_STARTED = datetime.now(timezone.utc)
_STARTED_MONOTONIC = time.monotonic()
_LOAD_AT_START = os.getloadavg()[0]


def default_path(name: str, quick: bool = False) -> Path:
    """docs/results/<name>.json; a --quick run goes to the temporary folder instead."""
    if quick:
        return Path(tempfile.gettempdir()) / "explainserve-results" / f"{name}.json"
    return RESULTS / f"{name}.json"


def add_out_argument(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument(
        "--out", type=Path, default=None,
        help=f"write the result JSON here (default: docs/results/{name}.json; with --quick "
             f"{default_path(name, quick=True)})")


def command() -> str:
    """The command line as a user would type it from the repository root."""
    script, *args = sys.argv
    path = Path(script).resolve()
    try:
        script = str(path.relative_to(ROOT))
    except ValueError:
        script = str(path)
    return shlex.join(["python", script, *args])


def git_state() -> dict[str, Any]:
    """HEAD, and whether files other than docs/ and markdown differ from it (docs/ holds the
    results themselves, which a sequence of benchmark runs changes as it goes)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout
    try:
        commit = git("rev-parse", "HEAD").strip()
        changed = [line[3:] for line in git("status", "--porcelain", "--", ".", ":(exclude)docs",
                                            ":(exclude)*.md").splitlines() if line.strip()]
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None, "changed": []}
    return {"commit": commit, "dirty": bool(changed), "changed": changed[:50]}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(gpu: bool) -> dict[str, Any]:
    import torch  # only here: tables.py imports this module without torch
    name = torch.cuda.get_device_name(0) if gpu and torch.cuda.is_available() else None
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "gpu": bool(gpu), "gpu_name": name,
            "python": platform.python_version(),
            "load_average_at_start": round(_LOAD_AT_START, 2),
            "load_average_at_end": round(os.getloadavg()[0], 2)}


def _plain(value: Any) -> Any:
    """JSON-safe: NaN and infinities become null, tuples lists, numpy scalars numbers."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, Path):  # relative to the repository where it lies inside it
        path = value.resolve()
        return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_result(name: str, settings: dict[str, Any], figures: dict[str, Any],
                 out: Path | None = None, *, gpu: bool = False) -> Path:
    """Write the run's JSON (see the module docstring) and return its path."""
    quick = bool(settings.get("quick", False))
    path = out or default_path(name, quick)
    finished = datetime.now(timezone.utc)
    result = {
        "benchmark": name, "schema": SCHEMA, "command": command(),
        "date": finished.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "started": _STARTED.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "duration_s": round(time.monotonic() - _STARTED_MONOTONIC, 1),
        "git": git_state(), "machine": machine(gpu),
        "settings": _plain({"quick": quick, **settings}), "figures": _plain(figures),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, allow_nan=False) + "\n")
    sys.stderr.write(f"results written to {path}\n")
    return path
