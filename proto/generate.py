"""Generate the Python gRPC code for explainserve.v1 and the Open Inference Protocol
(package inference) into the client package.

Run from the repository root:  python proto/generate.py
The generated files are never edited by hand; tests/proto/test_proto.py fails when they are stale.

The generator is pinned, not the runtime: protoc's Python code checks at import that the
protobuf runtime is at least as new as the protoc that wrote it (and, since protobuf 5.26, of
the same major version). Code from GENERATOR (protoc 25.x, before that check existed) uses only
the descriptor-pool and builder API that every runtime from 5.x to 7.x keeps, so the client
runs beside tritonclient (protobuf < 7) as well as beside grpcio-tools (protobuf >= 7). The
pinned grpcio-tools is installed once into a throwaway virtual environment under the system's
temporary directory, because it cannot share an environment with a protobuf 7 runtime.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
DEFAULT_OUT = PROTO_ROOT.parent / "client" / "explainserve_client" / "_proto"
GENERATOR = "grpcio-tools==1.62.3"
# .proto file -> the module stem protoc writes for it.
PROTO_FILES = {"explainserve/v1/explainer.proto": "explainer",
               "inference/grpc_predict_v2.proto": "grpc_predict_v2"}
GENERATED = tuple(f"{stem}{suffix}" for stem in PROTO_FILES.values()
                  for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py"))

# protoc writes absolute imports that mirror the .proto path ("from explainserve.v1 import
# explainer_pb2"), which would collide with the server package named explainserve. A
# relative import keeps the generated modules self-contained inside the client package.
_ABSOLUTE_IMPORT = re.compile(r"^from (explainserve\.v1|inference) import ", re.MULTILINE)


def generator_python() -> Path:
    """The interpreter of the throwaway environment holding the pinned grpcio-tools."""
    tag = re.sub(r"[^A-Za-z0-9.]+", "-", GENERATOR)
    home = Path(os.environ.get("EXPLAINSERVE_PROTOC_ENV",
                               Path(tempfile.gettempdir()) / f"explainserve-protoc-{tag}"))
    python = home / "bin" / "python"
    if not (home / "ready").is_file():
        venv.create(home, with_pip=True, clear=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", GENERATOR], check=True)
        (home / "ready").write_text(GENERATOR + "\n")
    return python


def generate(out_dir: Path) -> list[Path]:
    """Compile every proto into out_dir and return the generated files."""
    python = generator_python()
    with tempfile.TemporaryDirectory() as scratch:
        include = subprocess.run(
            [str(python), "-c", "import grpc_tools, os; "
             "print(os.path.join(os.path.dirname(grpc_tools.__file__), '_proto'))"],
            check=True, capture_output=True, text=True).stdout.strip()
        result = subprocess.run([
            str(python), "-m", "grpc_tools.protoc", f"-I{PROTO_ROOT}", f"-I{include}",
            f"--python_out={scratch}", f"--pyi_out={scratch}", f"--grpc_python_out={scratch}",
            *(str(PROTO_ROOT / name) for name in PROTO_FILES)], capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"protoc failed with exit code {result.returncode}: "
                               f"{result.stderr.strip()}")
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for proto, stem in PROTO_FILES.items():
            folder = Path(scratch) / Path(proto).parent
            for name in (f"{stem}_pb2.py", f"{stem}_pb2.pyi", f"{stem}_pb2_grpc.py"):
                target = out_dir / name
                target.write_text(_ABSOLUTE_IMPORT.sub("from . import ",
                                                       (folder / name).read_text()))
                written.append(target)
        return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    args = parser.parse_args(argv)
    for path in generate(args.out):
        sys.stdout.write(f"wrote {path}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
