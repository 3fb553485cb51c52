"""Generate the Python gRPC code for explainserve.v1 into the client package.

Run from the repository root:  python proto/generate.py
The generated files are never edited by hand; tests/proto/test_proto.py fails when they are stale.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

PROTO_ROOT = Path(__file__).resolve().parent
PROTO_FILE = "explainserve/v1/explainer.proto"
DEFAULT_OUT = PROTO_ROOT.parent / "client" / "explainserve_client" / "_proto"
GENERATED = ("explainer_pb2.py", "explainer_pb2.pyi", "explainer_pb2_grpc.py")

# protoc writes absolute imports that mirror the .proto path ("from explainserve.v1 import
# explainer_pb2"), which would collide with the server package named explainserve. A
# relative import keeps the generated modules self-contained inside the client package.
_ABSOLUTE_IMPORT = re.compile(r"^from explainserve\.v1 import ", re.MULTILINE)


def generate(out_dir: Path) -> list[Path]:
    """Compile the proto into out_dir and return the generated files."""
    with tempfile.TemporaryDirectory() as scratch:
        include = str(Path(protoc.__file__).parent / "_proto")
        code = protoc.main([
            "grpc_tools.protoc", f"-I{PROTO_ROOT}", f"-I{include}",
            f"--python_out={scratch}", f"--pyi_out={scratch}", f"--grpc_python_out={scratch}",
            str(PROTO_ROOT / PROTO_FILE),
        ])
        if code != 0:
            raise RuntimeError(f"protoc failed with exit code {code} on {PROTO_FILE}")
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for name in GENERATED:
            text = (Path(scratch) / "explainserve" / "v1" / name).read_text()
            target = out_dir / name
            target.write_text(_ABSOLUTE_IMPORT.sub("from . import ", text))
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
