#!/usr/bin/env bash
# Stop the single-node Slurm that scripts/slurm/start.sh started (slurmd, slurmctld, munged).
# Jobs still queued or running are cancelled first (their services stop with them).
# It leaves the clients a configuration that says the controller is down: with the usual one,
# every `scontrol`/`sinfo` retries a dead controller for MessageTimeout (10 s), and the Slurm
# executor plugin runs `scontrol show config` whenever Snakemake loads its plugins (any profile),
# so every snakemake call would wait 10 s. start.sh writes the usual one back.
#   scripts/slurm/stop.sh [--quiet] [--keep-munge]
#   scripts/slurm/stop.sh --nodes 3     the three-node cluster instead (multinode.sh stop)
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
quiet=0; keep_munge=0; nodes=1
for a in "$@"; do
  case $a in --quiet) quiet=1 ;; --keep-munge) keep_munge=1 ;; 3) nodes=3 ;; esac
done
# --nodes 3: the three-node cluster of start.sh --nodes 3 (multinode.sh), this one untouched
((nodes == 3)) && exec "$here/multinode.sh" stop
# shellcheck source=scripts/slurm/lib.sh
. "$here/lib.sh"
say() { ((quiet)) || echo "slurm: $*" >&2; }

if command -v squeue >/dev/null && [[ -f /run/slurm/slurmctld.pid ]] && kill -0 "$(cat /run/slurm/slurmctld.pid)" 2>/dev/null; then
  cancel_all_jobs 100
fi
stop_pidfile slurmd /run/slurm/slurmd.pid
stop_pidfile slurmctld /run/slurm/slurmctld.pid
((keep_munge)) || stop_pidfile munged /run/munge/munged.pid

# Only our own configuration (start.sh's ClusterName), and once.
conf=/etc/slurm/slurm.conf
if [[ -f "$conf" ]] && grep -qx 'ClusterName=aifb' "$conf" && ! grep -q '^# stopped by' "$conf"; then
  # MessageTimeout=1: a client tries the controller once and fails at once (measured: scontrol
  # show config 9.0 s -> 0.02 s against a stopped controller). Removing slurm.conf would not
  # do: a client without one asks DNS for the controller (configless Slurm) and waits on DNS.
  printf '%s\n' "# stopped by scripts/slurm/stop.sh: no controller runs, so clients fail at once" \
    "MessageTimeout=1" >>"$conf"
  say "marked $conf stopped (MessageTimeout=1; start.sh restores it)"
fi
exit 0
