#!/usr/bin/env bash
# A real single-node Slurm on this machine, for tests and for trying profiles/slurm:
# munged + slurmctld + slurmd started directly (no systemd), partitions `cpu` (default) and
# `gpu` (same node, no GPUs). Idempotent: installs the Debian packages when missing (as root),
# rewrites /etc/slurm/slurm.conf only when it changed, starts only what is not running, and
# returns once `sinfo` shows the node idle.
#   scripts/slurm/start.sh          (SLURM_CPUS=8 SLURM_MEM_MB=16000 to size the node)
#   scripts/slurm/start.sh --nodes 3   a three-node cluster in namespaces beside it (multinode.sh)
#   scripts/slurm/stop.sh           stops the daemons (keeps packages; marks the config stopped)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
# --nodes 3: the three-node cluster in namespaces beside this one (multinode.sh)
if [[ "${1:-}" == --nodes ]]; then
  case ${2:-} in
    1) ;;
    3) exec "$here/multinode.sh" start ;;
    *) echo "slurm: --nodes 1 or --nodes 3" >&2; exit 2 ;;
  esac
fi
# shellcheck source=scripts/slurm/lib.sh
. "$here/lib.sh"
t_start=$(date +%s.%N)
say() { echo "slurm: $*" >&2; }

if [[ $(id -u) -ne 0 ]]; then
  say "must run as root (it installs packages and starts daemons)"; exit 1
fi

need=()
for pair in slurmctld:slurmctld slurmd:slurmd sinfo:slurm-client munged:munge; do
  command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}")
done
if ((${#need[@]})); then
  say "apt-get install ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # policy-rc.d: the packages' postinst must not try to start services (no systemd/init here)
  had_policy=0; [[ -e /usr/sbin/policy-rc.d ]] && had_policy=1
  ((had_policy)) || { printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; }
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  ((had_policy)) || rm -f /usr/sbin/policy-rc.d
fi

host=$(hostname -s)
cpus=${SLURM_CPUS:-8}
mem_mb=${SLURM_MEM_MB:-$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 3 / 4 ))}
mkdir -p /etc/slurm /var/lib/slurm/slurmctld /var/lib/slurm/slurmd /var/log/slurm /run/slurm /run/munge
conf=$(sed -e "s/@HOST@/$host/g" -e "s/@CPUS@/$cpus/g" -e "s/@MEM_MB@/$mem_mb/g" slurm.conf.in)
reconfigure=0
if [[ ! -f /etc/slurm/slurm.conf ]] || [[ "$conf" != "$(cat /etc/slurm/slurm.conf)" ]]; then
  reconfigure=1  # written below, after a running controller is stopped (stop.sh edits it)
fi

ensure_munge || exit 1

if running /run/slurm/slurmctld.pid && ((reconfigure)); then
  say "configuration changed: restarting the daemons"
  "$here/stop.sh" --quiet --keep-munge
fi
if ((reconfigure)); then
  printf '%s\n' "$conf" >/etc/slurm/slurm.conf
  say "wrote /etc/slurm/slurm.conf (node $host, $cpus CPUs, $mem_mb MB)"
fi
if ! running /run/slurm/slurmctld.pid; then
  /usr/sbin/slurmctld
  say "started slurmctld"
fi
if ! running /run/slurm/slurmd.pid; then
  /usr/sbin/slurmd
  say "started slurmd"
fi

wait_nodes_up "$host" || { say "see /var/log/slurm/slurmctld.log and slurmd.log"; exit 1; }
sinfo >&2
say "ready in $(awk -v a="$t_start" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}') s"
