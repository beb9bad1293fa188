#!/usr/bin/env bash
# Check the NVML telemetry source on a GPU machine that has no network and no project install:
# only this repository, gpu_deps/ (made on a machine with PyPI by
#   python3 -m pip install --target gpu_deps nvidia-ml-py==13.615.71 psutil==7.2.2
# about 2 MiB; git-ignored) and the machine's python3 (>= 3.10).
#
#   scripts/gpu_telemetry_check.sh [SECONDS] [INTERVAL_S]     (default 10 s at 0.1 s)
#
# Samples the GPUs as they are (idle unless something else runs), prints power mean, energy
# delta (NVML counter and power integral), utilisation, and writes the samples and a summary
# to $OUT (default ./gpu_telemetry_out).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-./gpu_telemetry_out}
if [[ ! -f gpu_deps/pynvml.py ]]; then
  echo "gpu_telemetry_check: gpu_deps/ is missing: python3 -m pip install --target gpu_deps" \
       "nvidia-ml-py==13.615.71 psutil==7.2.2" >&2
  exit 2
fi
PY=${PYTHON:-python3}
"$PY" --version
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,power.draw,utilization.gpu --format=csv || true
PYTHONPATH="$PWD/src:$PWD/gpu_deps${PYTHONPATH:+:$PYTHONPATH}" \
  "$PY" scripts/gpu_telemetry_check.py "$OUT" "${1:-10}" "${2:-0.1}"
