# Shared by start.sh, stop.sh and multinode.sh (sourced, not run): munge, pid files, waiting
# for nodes. Each caller defines say().

running() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# A munge key, then munged (shared by every Slurm cluster on this machine), then a check.
ensure_munge() {
  if [[ ! -s /etc/munge/munge.key ]]; then
    mkdir -p /etc/munge
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
    say "created /etc/munge/munge.key"
  fi
  mkdir -p /run/munge
  chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
  chmod 0700 /etc/munge; chmod 0400 /etc/munge/munge.key
  if ! running /run/munge/munged.pid; then
    su -s /bin/sh munge -c "/usr/sbin/munged --pid-file=/run/munge/munged.pid" 2>/dev/null \
      || /usr/sbin/munged --force --pid-file=/run/munge/munged.pid
    say "started munged"
  fi
  for _ in $(seq 50); do munge -n </dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
  munge -n </dev/null | unmunge >/dev/null || { say "munge does not work"; return 1; }
}

# TERM the process of a pid file, KILL it after 10 s; remove the file.  stop_pidfile NAME FILE
stop_pidfile() {
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

# Until sinfo shows every named node in one of UP_STATES (default idle, mix, alloc; 30 s;
# down nodes are resumed).
wait_nodes_up() {
  local node state ok=" ${UP_STATES:-idle mix alloc} "
  for node in "$@"; do
    state=""
    for _ in $(seq 150); do
      state=$(sinfo -h -n "$node" -o %t 2>/dev/null | head -1 || true)
      [[ -n "$state" && "$ok" == *" $state "* ]] && break
      if [[ "$state" == down* || "$state" == drain* ]]; then
        scontrol update nodename="$node" state=resume 2>/dev/null || true
      fi
      sleep 0.2
    done
    if [[ -z "$state" || "$ok" != *" $state "* ]]; then
      say "node $node is not up (state '${state:-none}')"
      return 1
    fi
  done
}

# Cancel every job of the cluster the Slurm clients talk to (SLURM_CONF, else the default
# config) and wait up to N*0.2 s for them to leave the queue.  cancel_all_jobs N
cancel_all_jobs() {
  local jobs
  jobs=$(squeue -h -t PENDING,RUNNING,SUSPENDED -o %i 2>/dev/null | tr '\n' ' ' || true)
  if [[ -n "${jobs// }" ]]; then
    say "cancelling jobs: $jobs"
    scancel $jobs 2>/dev/null || true
    for _ in $(seq "$1"); do
      [[ -z "$(squeue -h -t PENDING,RUNNING,COMPLETING -o %i 2>/dev/null)" ]] && break; sleep 0.2
    done
  fi
}
