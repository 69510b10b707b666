#!/usr/bin/env bash
# The one-shot GPU check, run on a GPU host from the repository root:
#
#   bash scripts/gpu_check.sh OUT_DIR [--size full|tiny] [--device cuda|cpu] [--no-install] [--budget-s S]
#
# 1. installs the wheels scripts/gpu_wheels.sh put in .gpu-wheels/ (carried with the working tree)
#    into a directory of their own that leads PYTHONPATH, over the machine's Python (3.12, torch
#    2.11 CUDA): `pip install --target` of 32 wheels, --no-deps (the list is the closure), no
#    index. Chosen over a venv with --system-site-packages: same shadowing of the machine's
#    transformers 5.17 / tokenizers 0.23 / huggingface_hub 1.33 (PYTHONPATH comes before
#    site-packages, for importlib.metadata's version checks too), the server's subprocess inherits
#    it through the environment, and no venv or pip bootstrap to make first. Skipped when the same
#    wheels (SHA256SUMS) are already installed there: a second run on the same machine starts at 2.
#    --no-install skips it (a dry run here, where Python is 3.11 and the wheels are cp312: run it
#    with PYTHON pointing at an environment that has the packages).
# 2. runs scripts/gpu_check.py OUT_DIR (fidelity, throughput, memory, out-of-memory, server) within
#    --budget-s seconds (300 at full size), under a hard timeout 45 s past it. The project is not
#    pip-installed on a GPU host: the repository root is on PYTHONPATH (behind the wheels), so the
#    check, the server it starts and pytest all import this checkout's `server`;
# 3. runs the GPU-marked tests (tests/gpu) with TEST_DEVICE set to the device, results
#    into OUT_DIR/pytest_gpu.log and OUT_DIR/pytest_gpu.xml.
#
# Time at full size on an H100: install ~20 s (0 on a rerun), models built ~60 s (cached in
# /tmp/gpu-check-models for a rerun), gpu_check.py <= 300 s in all, tests ~60 s: about 6.5 minutes,
# plus the machine's start. OUT_DIR gets at most 6 files.
set -uo pipefail
cd "$(dirname "$0")/.."

if [ $# -lt 1 ] || [[ "$1" == -* ]]; then
  echo "usage: bash scripts/gpu_check.sh OUT_DIR [--size full|tiny] [--device cuda|cpu] [--no-install] [--budget-s S]" >&2
  exit 2
fi
OUT_DIR=$1
shift
SIZE=full
DEVICE=cuda
INSTALL=1
BUDGET=
while [ $# -gt 0 ]; do
  case "$1" in
    --size) SIZE=$2; shift 2 ;;
    --device) DEVICE=$2; shift 2 ;;
    --budget-s) BUDGET=$2; shift 2 ;;
    --no-install) INSTALL=0; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
if [ -z "$BUDGET" ]; then
  if [ "$SIZE" = full ]; then BUDGET=300; else BUDGET=240; fi
fi
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
PY=${PYTHON:-python3}
SITE=${GPU_CHECK_SITE:-/tmp/gpu-check-site}
started=$(date +%s)

export PYTHONUNBUFFERED=1 TQDM_DISABLE=1 TOKENIZERS_PARALLELISM=false
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
export TMPDIR=${TMPDIR:-/tmp}
# The project is not installed on a GPU host: `server` comes from this checkout's root. The
# wheels' directory goes ahead of it (below).
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}

if [ "$INSTALL" = 1 ]; then
  if [ ! -f .gpu-wheels/SHA256SUMS ]; then
    echo "no .gpu-wheels/SHA256SUMS: run 'bash scripts/gpu_wheels.sh' where the registry is reachable, and carry .gpu-wheels" >&2
    exit 1
  fi
  (cd .gpu-wheels && sha256sum --quiet -c SHA256SUMS) || { echo ".gpu-wheels does not match its SHA256SUMS" >&2; exit 1; }
  if cmp -s .gpu-wheels/SHA256SUMS "$SITE/.installed-from"; then
    echo "wheels already installed in $SITE"
  else
    rm -rf "$SITE"
    t=$(date +%s)
    "$PY" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check \
      --target "$SITE" .gpu-wheels/*.whl > "$OUT_DIR/install.log" 2>&1 \
      || { cat "$OUT_DIR/install.log"; echo "installing the wheels failed" >&2; exit 1; }
    cp .gpu-wheels/SHA256SUMS "$SITE/.installed-from"
    echo "installed $(ls .gpu-wheels/*.whl | wc -l) wheels into $SITE in $(($(date +%s) - t)) s"
  fi
  export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
fi

# What this Python will import: the versions the check runs with, or the import that fails.
"$PY" - <<'PYTHON' 2>&1 | tee "$OUT_DIR/install.log"
import importlib.metadata as md, sys
import torch
print("python", sys.version.split()[0], "| torch", torch.__version__, "| cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
print(" | ".join(f"{d} {md.version(d)}" for d in ("transformers", "tokenizers", "huggingface_hub", "FlagEmbedding",
      "funasr", "av", "silero-vad", "fastapi", "pydantic", "numpy")))
import server.app, FlagEmbedding, funasr, av, silero_vad  # noqa: E401,F401
print("imports ok: server.app, FlagEmbedding, funasr, av, silero_vad")
PYTHON

set +e
timeout --kill-after=15 $((BUDGET + 45)) "$PY" scripts/gpu_check.py "$OUT_DIR" --size "$SIZE" --device "$DEVICE" \
  --budget-s "$BUDGET" 2>&1 | tee "$OUT_DIR/gpu_check.log"
check_rc=${PIPESTATUS[0]}

TEST_DEVICE=$DEVICE timeout --kill-after=15 150 "$PY" -m pytest -m gpu tests/gpu -q -p no:cacheprovider \
  --junitxml "$OUT_DIR/pytest_gpu.xml" 2>&1 | tee "$OUT_DIR/pytest_gpu.log"
test_rc=${PIPESTATUS[0]}
set -e

echo
echo "==== summary ($(($(date +%s) - started)) s; gpu_check.py exit $check_rc, pytest -m gpu exit $test_rc) ===="
cat "$OUT_DIR/gpu_check_summary.md" 2>/dev/null || echo "(gpu_check.py wrote no summary: see gpu_check.log)"
tail -n 3 "$OUT_DIR/pytest_gpu.log"
[ "$check_rc" = 0 ] && [ "$test_rc" = 0 ]
