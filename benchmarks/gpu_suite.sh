#!/usr/bin/env bash
# GPU benchmark suite (issue 19): one call, at most 8 minutes on an H200; quick sizes on a CPU.
#
#   bash benchmarks/gpu_suite.sh [OUT_DIR] [extra gpu_suite.py options...]
#
# OUT_DIR defaults to $OUT, else ./gpu_suite_out. Writes OUT_DIR/gpu_suite.json, gpu_suite.md and
# gpu_suite.log (stdout + stderr). Installs nothing: milkit's dependencies must already import
# (on the device machine: carried wheels on PYTHONPATH, see docs/benchmarks.md, "GPU suite").
#
# Environment: PYTHON (interpreter; default .venv/bin/python if present, else python3),
# GPU_SUITE_BUDGET (seconds the driver plans for; default 450 on CUDA, 170 on CPU),
# GPU_SUITE_TIMEOUT (hard limit for `timeout`; default budget + 25 s).
set -u
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT_DIR="${1:-${OUT:-./gpu_suite_out}}"
[ $# -gt 0 ] && shift
mkdir -p "$OUT_DIR"

if [ -n "${PYTHON:-}" ]; then PY="$PYTHON"
elif [ -x "$ROOT/.venv/bin/python" ]; then PY="$ROOT/.venv/bin/python"
else PY="$(command -v python3 || command -v python)"
fi
# an uninstalled checkout imports from the repo root (after any PYTHONPATH already set)
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$ROOT"
export PYTHONUNBUFFERED=1 MALLOC_ARENA_MAX="${MALLOC_ARENA_MAX:-4}"

if "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    MODE=(--device cuda); BUDGET="${GPU_SUITE_BUDGET:-450}"
else
    MODE=(--device cpu --quick); BUDGET="${GPU_SUITE_BUDGET:-170}"
fi
LIMIT="${GPU_SUITE_TIMEOUT:-$(( ${BUDGET%.*} + 25 ))}"

echo "gpu_suite.sh: $PY ${MODE[*]} budget ${BUDGET}s, timeout ${LIMIT}s, out $OUT_DIR" | tee "$OUT_DIR/gpu_suite.log"
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,driver_version --format=csv,noheader 2>&1 \
        | tee -a "$OUT_DIR/gpu_suite.log"
fi
# SIGTERM at LIMIT (the driver then writes its partial results), SIGKILL 10 s later
timeout -k 10 "$LIMIT" "$PY" "$ROOT/benchmarks/gpu_suite.py" --out "$OUT_DIR" "${MODE[@]}" --budget "$BUDGET" "$@" \
    2>&1 | tee -a "$OUT_DIR/gpu_suite.log"
rc=${PIPESTATUS[0]}
echo "gpu_suite.sh: exit $rc" | tee -a "$OUT_DIR/gpu_suite.log"
exit "$rc"
