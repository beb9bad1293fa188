#!/usr/bin/env bash
# `make test`: the whole suite against real servers (scripts/install.sh --all installed them).
# The Slurm tests need a Slurm that answers. When none does and this user can start the test
# one (root, no slurmctld running), it is started here and stopped at the end; a Slurm that
# already answers (CI's .ci/run starts one before `make test`) is used and left running.
# Tests that still skip are named in the last line, with the command that runs them
# (tests/conftest.py).
#   scripts/test.sh [PYTEST_ARGS...]        e.g. scripts/test.sh -q tests/unit (no servers, seconds)
set -uo pipefail
cd "$(dirname "$0")/.."
say() { echo "test: $*" >&2; }

slurm_answers() {
  command -v sinfo >/dev/null &&
    timeout 20 sinfo -h -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)'
}

started=0
if ! slurm_answers && [[ $(id -u) -eq 0 ]] \
    && ! pgrep -x slurmctld >/dev/null; then
  say "starting the test Slurm for the Slurm tests (scripts/slurm/start.sh; stopped at the end)"
  if scripts/slurm/start.sh; then
    started=1
  else
    say "the test Slurm did not start: the Slurm tests will skip"
  fi
fi
stop_slurm() { ((started)) && scripts/slurm/stop.sh --quiet; started=0; }
trap stop_slurm EXIT
trap 'exit 130' INT TERM

.venv/bin/python -m pytest "$@"
