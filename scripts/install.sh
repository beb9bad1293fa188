#!/usr/bin/env bash
# Set up everything AI Factory Bench needs on this machine, idempotently:
#   - a virtual environment in .venv with the pinned package set (pyproject.toml), aifb editable
#   - redis-server + redis-benchmark (Debian packages) when missing and we are root; otherwise
#     say how to get them
# Usage: scripts/install.sh            (PYTHON=python3.12 scripts/install.sh to pick a Python)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
need_apt=()
command -v redis-server >/dev/null || need_apt+=(redis-server)
command -v redis-benchmark >/dev/null || need_apt+=(redis-tools)
command -v jq >/dev/null || need_apt+=(jq)

if ((${#need_apt[@]})); then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    echo "install: apt-get install ${need_apt[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  else
    echo "install: missing ${need_apt[*]}: install them (Debian/Ubuntu: sudo apt-get install ${need_apt[*]};" >&2
    echo "         conda: conda install -c conda-forge redis jq), then run this again." >&2
    exit 1
  fi
fi

if [[ ! -x .venv/bin/python ]]; then
  echo "install: creating .venv with $($PYTHON --version)" >&2
  "$PYTHON" -m venv .venv
fi
# Re-install only when the pinned set changed (pyproject.toml newer than the stamp).
if [[ ! -f .venv/.aifb-installed || pyproject.toml -nt .venv/.aifb-installed ]]; then
  echo "install: pip install -e '.[test]' (about a minute the first time)" >&2
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[test]'
  touch .venv/.aifb-installed
fi
echo "install: ready ($(.venv/bin/aifb --version), $(redis-server --version | cut -d' ' -f1-3))" >&2
