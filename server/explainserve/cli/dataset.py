"""A dataset job of `explainserve explain DIR_OR_GLOB --out DIR`: every image of a directory
(or a glob) explained with each method, across every replica of --server, K calls at a time.

Per image and method it writes `<relative path>.<method>.npz` (attribution, heatmap, targets,
scores, labels) and `<relative path>.<method>.png` (the overlay of the first target), then
appends one JSON line to DIR/manifest.jsonl: image, method, target, score, files, status. A
rerun skips every (image, method) the manifest lists as OK whose files exist, so a job that
stopped resumes where it stopped; retriable failures (a replica going away, a full queue, a
refused deadline) are retried with backoff; the counts per status end the run."""

from __future__ import annotations

import glob
import io
import json
import os
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from explainserve.cli.progress import ProgressBar

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
MANIFEST = "manifest.jsonl"
# gRPC statuses worth another attempt: the replica went away or is draining, its queue is
# full, or the scheduler refused a deadline it could not meet right now.
RETRIABLE = ("UNAVAILABLE", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED")


def is_dataset(sources: list[str]) -> bool:
    """A directory or a glob pattern makes a dataset job; image files keep the plain mode."""
    return any(Path(source).is_dir() or glob.has_magic(source) for source in sources)


@dataclass(frozen=True)
class Item:
    image: Path
    relative: Path  # where its results go, under the output directory
    method: str

    @property
    def key(self) -> tuple[str, str]:
        return str(self.image), self.method


def find_images(sources: list[str]) -> list[tuple[Path, Path]]:
    """(image, path relative to its source root), sorted, each image once."""
    found: dict[Path, Path] = {}
    for source in sources:
        if Path(source).is_dir():
            root = Path(source)
            paths = [path for path in root.rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES]
        else:
            root = Path(glob_root(source))
            paths = [Path(path) for path in glob.glob(source, recursive=True)]
        for path in sorted(path for path in paths if path.is_file()):
            found.setdefault(path, path.relative_to(root) if path.is_relative_to(root)
                             else Path(path.name))
    return sorted(found.items())


def glob_root(pattern: str) -> str:
    """The directory part of a pattern before its first wildcard."""
    parts = []
    for part in Path(pattern).parts:
        if glob.has_magic(part):
            break
        parts.append(part)
    return str(Path(*parts)) if parts else "."


def finished(out: Path) -> set[tuple[str, str]]:
    """(image, method) pairs the manifest lists as OK with all their files present. A line
    cut short by a killed run is skipped."""
    done: set[tuple[str, str]] = set()
    path = out / MANIFEST
    if not path.exists():
        return done
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if entry.get("status") == "OK" and all((out / name).exists() for name in entry["files"]):
            done.add((entry["image"], entry["method"]))
    return done


class Manifest:
    """Appends JSON lines from many threads; each line is flushed to the file at once."""

    def __init__(self, path: Path) -> None:
        cut = path.exists() and path.stat().st_size and not path.read_bytes().endswith(b"\n")
        self._file = open(path, "a", encoding="utf-8")
        if cut:
            self._file.write("\n")  # a killed run's half line stays on its own line
        self._lock = threading.Lock()

    def append(self, entry: dict) -> None:
        with self._lock:
            self._file.write(json.dumps(entry) + "\n")
            self._file.flush()
            os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


def write_results(out: Path, item: Item, explanations) -> list[str]:
    """The arrays of every target in one .npz and the first target's overlay in one .png,
    each written to a temporary name and renamed, so a file that exists is complete."""
    base = out / item.relative.parent / f"{item.relative.name}.{item.method}"
    base.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"targets": np.array([e.target for e in explanations], dtype=np.int64),
              "scores": np.array([e.score for e in explanations], dtype=np.float64),
              "labels": np.array([e.label for e in explanations])}
    for name in ("attribution", "heatmap"):
        maps = [getattr(e, name) for e in explanations]
        if all(m is not None for m in maps):
            arrays[name] = np.stack(maps)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    files = [_write_atomic(base.with_name(base.name + ".npz"), buffer.getvalue())]
    if explanations and explanations[0].overlay_png:
        files.append(_write_atomic(base.with_name(base.name + ".png"), explanations[0].overlay_png))
    return [str(path.relative_to(out)) for path in files]


def _write_atomic(path: Path, data: bytes) -> Path:
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    partial.replace(path)
    return path


def explain_one(client, item: Item, args, out: Path, retries: int) -> dict:
    """One (image, method), retried on retriable statuses; its manifest entry."""
    from explainserve_client import ExplainServeError

    entry = {"image": str(item.image), "method": item.method, "target": None, "score": None,
             "files": [], "status": "OK"}
    delay = 0.2
    for attempt in range(retries + 1):
        try:
            explanations = client.explain(
                item.image, model=args.model, method=item.method, targets=args.target,
                layer=args.layer, top_k=args.top_k, overlay=True, timeout=args.timeout,
                **dict(args.param or ()))
        except ExplainServeError as error:
            entry["status"], entry["error"] = error.code.name, error.details
            if error.code.name not in RETRIABLE or attempt == retries:
                return entry
            time.sleep(delay)
            delay = min(5.0, delay * 2)
            continue
        except OSError as error:  # the image file itself
            entry["status"], entry["error"] = "UNREADABLE", str(error)
            return entry
        entry.pop("error", None)
        entry["status"] = "OK"
        entry["files"] = write_results(out, item, explanations)
        if explanations:
            entry["target"], entry["score"] = explanations[0].target, explanations[0].score
        entry["attempts"] = attempt + 1
        return entry
    return entry


def run_dataset(args) -> int:
    from explainserve_client import Client

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    methods = list(dict.fromkeys(args.method or ["gradcam"]))
    images = find_images(args.images)
    items = [Item(image, relative, method) for image, relative in images for method in methods]
    done = finished(out)
    todo = [item for item in items if item.key not in done]
    counts: Counter[str] = Counter({"SKIPPED": len(items) - len(todo)})
    bar = ProgressBar(len(items), label="explain", unit="results", rate=True)
    bar.update(counts["SKIPPED"], note=f"{counts['SKIPPED']} already done")
    manifest = Manifest(out / MANIFEST)
    lock = threading.Lock()

    def work(item: Item) -> None:
        entry = explain_one(client, item, args, out, args.retries)
        manifest.append(entry)
        with lock:
            counts[entry["status"]] += 1
            failed = sum(n for status, n in counts.items() if status not in ("OK", "SKIPPED"))
            bar.update(sum(counts.values()), note=f"{failed} failed" if failed else "")

    try:
        with Client(args.server, timeout=args.timeout) as client, \
                ThreadPoolExecutor(max(1, args.concurrency)) as pool:
            list(pool.map(work, todo))
    finally:
        bar.close()
        manifest.close()
    summary = ", ".join(f"{status} {count}" for status, count in sorted(counts.items()))
    sys.stdout.write(f"{len(images)} images x {len(methods)} methods: {summary}\n")
    failed = sum(n for status, n in counts.items() if status not in ("OK", "SKIPPED"))
    return 1 if failed else 0
