#!/usr/bin/env bash
# A three-node Slurm on this one machine, beside the single-node one of start.sh (never touching
# it): slurmctld on the host, listening on a bridge address only, and three slurmd, each in its
# own network, UTS (hostname), mount and time namespace, so that its "node" has its own address, name
# and CLOCK_MONOTONIC, as separate machines would.
#
#   bridge aifb-mn0 198.18.0.1/24 (host side; nothing routed outside: no default route in the
#   namespaces, ip_forward untouched)
#   aifb-n1  198.18.0.11  monotonic +0 s    partition gpu  (stands in for GPU nodes; no GPUs)
#   aifb-n2  198.18.0.12  monotonic +37 s   partition cpu  (default)
#   aifb-n3  198.18.0.13  monotonic -12 s   partition cpu
#
# Everything of it lives in /run/aifb-mn (slurm.conf: select it with SLURM_CONF=/run/aifb-mn/slurm.conf,
# state, spool, logs, pid files, and the hosts file its daemons see on /etc/hosts in their own
# mount namespaces: node names resolve there; the host's /etc/hosts is not changed).
# Own ClusterName (aifb-mn) and ports (6917, 6918); munged is shared (started if missing).
# Processes started by a slurmd (slurmstepd, job scripts) inherit its namespaces.
#
#   scripts/slurm/multinode.sh start   (or scripts/slurm/start.sh --nodes 3) idempotent
#   scripts/slurm/multinode.sh stop    (or scripts/slurm/stop.sh --nodes 3)  removes every
#       namespace, veth, bridge, file and process it made; idempotent
#   scripts/slurm/multinode.sh status  the nodes, their addresses and clock offsets
# MN_CPUS (default 2 per CPU node) and MN_GPU_CPUS (default 4) size the nodes: with 2 CPUs a
# CPU node holds one 2-CPU job, so a benchmark job and a client job land on different nodes.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=scripts/slurm/lib.sh
. "$here/lib.sh"

dir=/run/aifb-mn
conf=$dir/slurm.conf
bridge=aifb-mn0
host_ip=198.18.0.1
nodes=(aifb-n1 aifb-n2 aifb-n3)
ips=(198.18.0.11 198.18.0.12 198.18.0.13)
offsets=(0 37 -12)          # CLOCK_MONOTONIC offset of each node, seconds (the truth the tests check)
ctld_name=aifb-mnctl      # the controller's hostname (in its own UTS namespace)
ctld_port=6917
slurmd_port=6918
export SLURM_CONF=$conf
say() { echo "slurm-mn: $*" >&2; }

write_conf() {
  local cpus=${MN_CPUS:-2} gpu_cpus=${MN_GPU_CPUS:-4} mem=3000
  # The single-node file's settings (scheduling, no cgroups, no accounting, timeouts), with
  # this cluster's own name, controller, ports and paths, and its own nodes and partitions.
  echo "# Three-node test Slurm, written by scripts/slurm/multinode.sh (select it with SLURM_CONF=$conf)"
  sed -e "s/^ClusterName=.*/ClusterName=aifb-mn/" \
      -e "s|^SlurmctldHost=.*|SlurmctldHost=$ctld_name($host_ip)|" \
      -e "s|^StateSaveLocation=.*|StateSaveLocation=$dir/state|" \
      -e "s|^SlurmdSpoolDir=.*|SlurmdSpoolDir=$dir/spool/%n|" \
      -e "s|^SlurmctldPidFile=.*|SlurmctldPidFile=$dir/slurmctld.pid|" \
      -e "s|^SlurmdPidFile=.*|SlurmdPidFile=$dir/slurmd-%n.pid|" \
      -e "s|^SlurmctldLogFile=.*|SlurmctldLogFile=$dir/log/slurmctld.log|" \
      -e "s|^SlurmdLogFile=.*|SlurmdLogFile=$dir/log/slurmd-%n.log|" \
      -e "s/^SlurmctldPort=.*/SlurmctldPort=$ctld_port/" \
      -e "s/^SlurmdPort=.*/SlurmdPort=$slurmd_port/" \
      -e '/^NodeName=/d' -e '/^PartitionName=/d' -e '/^# Same node, no GPUs/d' \
      -e '1,3d' "$here/slurm.conf.in"
  cat <<EOF
# slurmctld listens on the bridge address only (SlurmctldHost's), not on every interface.
CommunicationParameters=NoCtldInAddrAny
NodeName=${nodes[0]} NodeAddr=${ips[0]} NodeHostname=${nodes[0]} CPUs=$gpu_cpus RealMemory=$mem State=UNKNOWN
NodeName=${nodes[1]} NodeAddr=${ips[1]} NodeHostname=${nodes[1]} CPUs=$cpus RealMemory=$mem State=UNKNOWN
NodeName=${nodes[2]} NodeAddr=${ips[2]} NodeHostname=${nodes[2]} CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=cpu Nodes=${nodes[1]},${nodes[2]} Default=YES MaxTime=4:00:00 State=UP
# Stands in for GPU nodes (no GPUs: a --gpus request is refused at submission).
PartitionName=gpu Nodes=${nodes[0]} Default=NO MaxTime=4:00:00 State=UP
EOF
}

hosts_file() {
  echo "127.0.0.1 localhost"
  echo "$host_ip $ctld_name"
  for i in 0 1 2; do echo "${ips[$i]} ${nodes[$i]}"; done
}

# Run a daemon as "machine" NAME: its own mount namespace (this cluster's hosts file bound on
# /etc/hosts and its slurm.conf on /etc/slurm/slurm.conf, as a node of a real cluster has them:
# the Slurm executor plugin's job step drops SLURM_CONF from the environment of its nested
# srun; host mounts still propagate in, nothing propagates out) and UTS namespace (hostname
# NAME), in network namespace NS and a new time namespace with CLOCK_MONOTONIC offset OFF
# unless they are "-". Not `ip netns exec`: it remounts /sys, hiding /sys/fs/cgroup from slurmd.
as_machine() {  # NAME NS OFF COMMAND...
  local name=$1 ns=$2 off=$3; shift 3
  local enter=() clock=()
  [[ $ns != - ]] && enter=(nsenter "--net=/run/netns/$ns")
  [[ $off != - ]] && clock=(--time "--monotonic=$off")
  "${enter[@]}" unshare --mount --propagation slave --uts "${clock[@]}" \
    sh -c 'mount --bind "$1" /etc/hosts && mount --bind "$2" /etc/slurm/slurm.conf &&
           hostname "$3" && shift 3 && exec "$@"' \
    sh "$dir/hosts" "$conf" "$name" "$@"
}

net_up() {
  if ! ip link show "$bridge" >/dev/null 2>&1; then
    ip link add "$bridge" type bridge
    ip addr add "$host_ip/24" dev "$bridge"
  fi
  ip link set "$bridge" up
  for i in 0 1 2; do
    local ns=${nodes[$i]} veth=aifb-mnv$((i + 1))
    ip netns list | grep -qw "^$ns" || ip netns add "$ns"
    if ! ip link show "$veth" >/dev/null 2>&1; then
      ip link add "$veth" type veth peer name eth0 netns "$ns"
      ip link set "$veth" master "$bridge" up
      ip -n "$ns" addr add "${ips[$i]}/24" dev eth0
    fi
    ip -n "$ns" link set lo up
    ip -n "$ns" link set eth0 up
  done
}

slurmd_pid() { cat "$dir/slurmd-$1.pid" 2>/dev/null || true; }

start_slurmd() {  # index
  local ns=${nodes[$1]} off=${offsets[$1]}
  running "$dir/slurmd-$ns.pid" && return 0
  mkdir -p "$dir/spool/$ns"
  # slurmd daemonizes; everything it starts (slurmstepd, job scripts) inherits its namespaces.
  as_machine "$ns" "$ns" "$off" /usr/sbin/slurmd -f "$conf" -N "$ns"
  say "started slurmd $ns (${ips[$1]}, monotonic ${off} s)"
}

cmd_start() {
  [[ $(id -u) -eq 0 ]] || { say "must run as root (namespaces, daemons)"; exit 1; }
  local t_start; t_start=$(date +%s.%N)
  unshare --help | grep -q -- '--monotonic' \
    || { say "this util-linux unshare has no --monotonic (time namespaces need util-linux >= 2.36)"; exit 1; }
  command -v slurmctld >/dev/null && [[ -f /etc/slurm/slurm.conf ]] \
    || { say "Slurm is not installed (or has no /etc/slurm/slurm.conf to bind over): run scripts/slurm/start.sh once"; exit 1; }
  if ! command -v ip >/dev/null; then
    say "apt-get install iproute2"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends iproute2 >/dev/null
  fi
  ensure_munge
  mkdir -p "$dir/state" "$dir/spool" "$dir/log"
  local new; new=$(write_conf)
  if [[ -f $conf && "$new" != "$(cat "$conf")" ]] && running "$dir/slurmctld.pid"; then
    say "configuration changed: restarting the cluster"
    cmd_stop
    mkdir -p "$dir/state" "$dir/spool" "$dir/log"
  fi
  printf '%s\n' "$new" >"$conf"
  hosts_file >"$dir/hosts"
  net_up
  if ! running "$dir/slurmctld.pid"; then
    # as host "aifb-mnctl": with NoCtldInAddrAny it binds what its name resolves to, the bridge address
    as_machine "$ctld_name" - - /usr/sbin/slurmctld -f "$conf"
    say "started slurmctld ($host_ip:$ctld_port)"
  fi
  for i in 0 1 2; do start_slurmd "$i"; done
  # comp: a node started again after a crash is up while Slurm still completes its lost job
  UP_STATES="idle mix alloc comp" wait_nodes_up "${nodes[@]}" || { say "nodes not up; see $dir/log/"; exit 1; }
  sinfo >&2
  say "ready in $(awk -v a="$t_start" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}') s (SLURM_CONF=$conf)"
}

cmd_stop() {
  if [[ -f $conf ]] && running "$dir/slurmctld.pid"; then
    cancel_all_jobs 50   # of this cluster only: SLURM_CONF is its file
  fi
  for ns in "${nodes[@]}"; do stop_pidfile "slurmd $ns" "$dir/slurmd-$ns.pid"; done
  stop_pidfile slurmctld "$dir/slurmctld.pid"
  for ns in "${nodes[@]}"; do
    if ip netns list | grep -qw "^$ns"; then
      # whatever still runs in the node (a job's process whose slurmstepd was killed)
      local pids; pids=$(ip netns pids "$ns" | tr '\n' ' ')
      if [[ -n "${pids// }" ]]; then
        say "killing what still runs in $ns: $pids"
        kill -KILL $pids 2>/dev/null || true
      fi
      ip netns delete "$ns"
    fi
  done
  for i in 1 2 3; do ip link delete "aifb-mnv$i" 2>/dev/null || true; done
  ip link delete "$bridge" 2>/dev/null || true
  rm -rf "$dir"
  say "stopped; namespaces, links and $dir removed"
}

cmd_status() {
  for i in 0 1 2; do
    local ns=${nodes[$i]} pid; pid=$(slurmd_pid "$ns")
    printf '%s %s slurmd=%s timens_offsets: %s\n' "$ns" "${ips[$i]}" "${pid:-none}" \
      "$( [[ -n $pid ]] && grep monotonic "/proc/$pid/timens_offsets" 2>/dev/null || echo -)"
  done
  sinfo 2>/dev/null || true
}

case ${1:-} in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
