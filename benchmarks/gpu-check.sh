#!/usr/bin/env bash
# Every GPU-only check, on a machine with one NVIDIA GPU, in under 5 minutes: the tests marked
# `gpu` (CUDA loader paths, lease enforcement against the real NVML reading) and the inference
# bench rows, then a summary. Run from anywhere: benchmarks/gpu-check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
export PYTHONPATH=$PWD
out=$(mktemp -d)

if ! nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; then
    echo "gpu-check: no NVIDIA GPU here (nvidia-smi failed)" >&2
    exit 2
fi

timeout 210 "$PYTHON" -m pytest -m gpu -q -p no:cacheprovider tests >"$out/pytest.txt" 2>&1
tests=$?
timeout 60 "$PYTHON" -m mlsup bench infer --quick --json "$out/bench.json" >"$out/bench.txt" 2>&1
bench=$?

echo "== gpu-check summary"
echo "pytest -m gpu: exit $tests — $(tail -n 1 "$out/pytest.txt")"
grep -E "^(FAILED|ERROR)" "$out/pytest.txt" || true
echo "mlsup bench infer --quick: exit $bench"
tail -n 20 "$out/bench.txt"
echo "full output: $out"
[ "$tests" -eq 0 ] && [ "$bench" -eq 0 ]
