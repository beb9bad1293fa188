#!/usr/bin/env bash
# Stop the single-node Slurm that scripts/slurm/start.sh started (slurmd, slurmctld, munged).
# Jobs still queued or running are cancelled first (their services stop with them).
#   scripts/slurm/stop.sh [--quiet] [--keep-munge]
set -uo pipefail
quiet=0; keep_munge=0
for a in "$@"; do
  case $a in --quiet) quiet=1 ;; --keep-munge) keep_munge=1 ;; esac
done
say() { ((quiet)) || echo "slurm: $*" >&2; }

stop_pid() {  # name pidfile
  local pid
  [[ -f "$2" ]] || return 0
  pid=$(cat "$2")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    say "stopped $1 ($pid)"
  fi
  rm -f "$2"
}

if command -v squeue >/dev/null && [[ -f /run/slurm/slurmctld.pid ]] && kill -0 "$(cat /run/slurm/slurmctld.pid)" 2>/dev/null; then
  jobs=$(squeue -h -t PENDING,RUNNING,SUSPENDED -o %i 2>/dev/null | tr '\n' ' ')
  if [[ -n "${jobs// }" ]]; then
    say "cancelling jobs: $jobs"
    scancel $jobs 2>/dev/null || true
    for _ in $(seq 100); do
      [[ -z "$(squeue -h -t PENDING,RUNNING,COMPLETING -o %i 2>/dev/null)" ]] && break; sleep 0.2
    done
  fi
fi
stop_pid slurmd /run/slurm/slurmd.pid
stop_pid slurmctld /run/slurm/slurmctld.pid
((keep_munge)) || stop_pid munged /run/munge/munged.pid
exit 0
