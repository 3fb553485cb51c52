"""Each method's verdict in the cascading model-parameter randomisation test (Adebayo et al.
2018, arXiv:1810.03292, sec. 3.1), as benchmarks/sanity.py last measured it and wrote it to
sanity_verdicts.json beside this module. ListMethods reports it; nothing is measured here."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

VERDICTS = Path(__file__).with_name("sanity_verdicts.json")
PASSES, FAILS, NOT_CHECKED = "passes", "fails", "not_checked"


@dataclass(frozen=True)
class Verdict:
    verdict: str  # PASSES, FAILS or NOT_CHECKED
    detail: str = ""


@functools.cache
def _verdicts() -> dict[str, dict]:
    if not VERDICTS.is_file():
        return {}
    return json.loads(VERDICTS.read_text()).get("methods", {})


def verdict(method: str) -> Verdict:
    """The method's recorded verdict; NOT_CHECKED for one the benchmark has not run."""
    entry = _verdicts().get(method)
    if entry is None:
        return Verdict(NOT_CHECKED, "not part of the last sanity-check run")
    return Verdict(entry["verdict"], entry.get("detail", ""))
