#!/usr/bin/env bash
# GPU check, from the project root on a machine with a CUDA device:
#
#     bash benchmarks/gpu_check.sh [WHEEL_DIR]
#
# Uses the Python that is there (torch with CUDA, grpcio, protobuf, numpy, pillow, pytest),
# plus pure-Python wheels carried in WHEEL_DIR (default: wheels/): grpcio-health-checking,
# grpcio-reflection and the client. Nothing is downloaded. Runs
#   1. the test suite's device-dependent folders with --device cuda (tests/conftest.py: the
#      servers the tests start in-process run on CUDA); tests whose reference library is not
#      installed are reported as collection errors and the rest go on;
#   2. the load benchmark's scheduler scenarios (overload with deadlines, a many-row job alone)
#      on CUDA with resnet18 and vit_b_16.
# Everything it prints is also written under $OUT (default: gpu-check/).
set -uo pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
WHEELS=${1:-wheels}
OUT=${OUT:-gpu-check}
mkdir -p "$OUT"
export PYTHONPATH="server:client:tests:benchmarks${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

log() { printf '== %s\n' "$*" | tee -a "$OUT/summary.txt"; }

if [ -d "$WHEELS" ]; then
    log "installing the carried wheels from $WHEELS"
    "$PYTHON" -m pip install --no-index --no-deps --find-links "$WHEELS" \
        grpcio-health-checking grpcio-reflection explainserve-client >"$OUT/pip.txt" 2>&1 \
        || log "pip install from $WHEELS failed (see $OUT/pip.txt); trying what is installed"
fi

nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1 || true
if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    log "no CUDA device visible to torch; nothing to check"
    exit 2
fi
"$PYTHON" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))" \
    | tee -a "$OUT/summary.txt"

status=0
log "tests with --device cuda"
timeout 420 "$PYTHON" -m pytest tests/workers tests/scheduling tests/engine tests/methods \
    tests/api tests/test_hooks.py --device cuda -q -p no:cacheprovider \
    --continue-on-collection-errors -o addopts="--import-mode=importlib -ra" \
    2>&1 | tee "$OUT/pytest.txt" | tail -n 40
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

for arch in resnet18 vit_b_16; do
    log "load benchmark on cuda: $arch (scheduler scenarios)"
    timeout 240 "$PYTHON" benchmarks/load.py --quick --only deadlines,alone --device cuda \
        --arch "$arch" --size 224 --seconds 10 --out "$OUT/load_cuda_$arch.json" \
        >"$OUT/load_cuda_$arch.txt" 2>&1
    code=$?
    tail -n 30 "$OUT/load_cuda_$arch.txt"
    [ "$code" -eq 0 ] || { log "load benchmark $arch exited $code"; status=1; }
done

log "done (status $status); results under $OUT"
exit "$status"
