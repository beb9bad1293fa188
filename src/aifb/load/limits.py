"""Open-file limits of a client process: how many descriptors a load needs (its connections,
one timerfd per open-loop client, a margin) and raising RLIMIT_NOFILE to fit, with a note when
one process holds more busy connections than its event loop serves on time."""

from __future__ import annotations

import resource

from aifb.errors import ServiceError
from aifb.load.settings import LoadSettings

# Busy connections per process beyond which uvloop's batching delays timers and tasks (libuv
# reads up to 48 x 1024 ready events per poll phase; measured here: 1,000 connections -> loop
# lag p99 18 ms, 2,000 -> 0.77 s). Above it the engine says so and suggests load.processes.
CONNECTIONS_PER_PROCESS = 1000
FD_MARGIN = 64  # descriptors beside the connections: files, pipes, epoll, timerfds, sockets


def raise_nofile_limit(connections: int) -> tuple[int, int]:
    """Make sure this process may hold `connections` sockets (plus a margin): raise the soft
    RLIMIT_NOFILE up to the hard limit, and - as root - the hard limit too (up to
    /proc/sys/fs/nr_open). Returns the (soft, hard) limits in force. Raises ServiceError naming
    `ulimit -n` when the limit cannot be raised far enough."""
    want = connections + FD_MARGIN
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    inf = resource.RLIM_INFINITY
    if soft == inf or want <= soft:
        return soft, hard
    try:
        if hard != inf and want > hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))  # needs CAP_SYS_RESOURCE
        else:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ValueError, OSError):
        if hard != inf and hard > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != inf and want > soft:
        raise ServiceError(
            f"{connections} connections in one client process need about {want} open files, "
            f"but `ulimit -n` is {soft} (hard limit {hard}) and cannot be raised here: raise the "
            "limit, or spread the connections over more processes (load.processes) or client jobs")
    return soft, hard


def note_connections(n: int, log) -> None:
    if n > CONNECTIONS_PER_PROCESS:
        log(f"note: {n} connections in one process; above ~{CONNECTIONS_PER_PROCESS} busy "
            "connections per process the event loop runs its timers late (see loop_lag_s): "
            f"use load.processes >= {-(-n // CONNECTIONS_PER_PROCESS)} where the cores allow")


def connections_needed(load: LoadSettings, n_clients: int) -> int:
    timers = n_clients if load.open_loop else 0  # one timerfd per open-loop client
    return n_clients * load.concurrency + timers

