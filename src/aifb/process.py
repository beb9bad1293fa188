"""Starting and stopping local service processes so that none outlives its benchmark.

A service is started in its own session (so a terminal's Ctrl-C reaches the harness, which
then stops it in order) with PR_SET_PDEATHSIG=SIGTERM, so that even if the harness is killed
with SIGKILL the kernel stops the service. Stopping is SIGTERM, a grace period, then SIGKILL
of the whole process group.
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from aifb.errors import ServiceError

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """SIGTERM to this process when its parent dies (a service between fork and exec, an
    engine worker process at its start)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, 0))
        except OSError as exc:
            raise ServiceError(f"cannot listen on {host}: {exc.strerror} (service.host must be "
                               "an address of this machine)") from None
        return s.getsockname()[1]


def free_ports(host: str, n: int, taken: set[int]) -> list[int]:
    """n distinct free ports, none of them in `taken` (ports a server already uses)."""
    out: list[int] = []
    while len(out) < n:
        p = free_port(host)
        if p not in taken and p not in out:
            out.append(p)
    return out


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            return exc.errno in (errno.EADDRINUSE, errno.EACCES)
    return False


# What a server inherits from the harness: enough to find its programs and libraries, its home,
# locale and temporary directory, and the GPUs, container runtime and Slurm allocation it was
# given - not the rest (a password variable of the invoking user showed up in postgres's
# /proc/<pid>/environ, readable by that user's other processes and by root). A kind adds what
# it needs (aifb.services.base.LocalProcessService.spawn_env); a target's `env:` is kept too.
BASE_ENV = ("PATH", "LD_LIBRARY_PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ",
            "TMPDIR")
BASE_ENV_PREFIXES = ("LC_", "CUDA_", "NVIDIA_", "ROCR_", "HIP_", "GPU_DEVICE_", "APPTAINER",
                     "SINGULARITY", "SLURM_", "OMP_", "MODULE", "LMOD")


def server_env(extra: dict | None = None, keep: set[str] | frozenset = frozenset()) -> dict:
    """A minimal environment for a server process: BASE_ENV, the BASE_ENV_PREFIXES, the names
    in `keep` (a target's env), then `extra` (the kind's own settings and secrets)."""
    env = {k: v for k, v in os.environ.items()
           if k in BASE_ENV or k.startswith(BASE_ENV_PREFIXES) or k in keep}
    env.update(extra or {})
    return env


def spawn(argv: list[str], log_path: Path, *, cwd: Path | None = None,
          env: dict | None = None, stdin_data: bytes | None = None) -> subprocess.Popen:
    """Start a server; `env` None means server_env() (never the harness's whole environment);
    `stdin_data` is written to its stdin, which is then closed (a secret stays out of argv)."""
    env = server_env() if env is None else env
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "ab")
    try:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL if stdin_data is None else subprocess.PIPE,
                                cwd=cwd, env=env, start_new_session=True,
                                preexec_fn=die_with_parent)
    except OSError as exc:
        raise ServiceError(f"cannot start {argv[0]}: {exc.strerror}") from None
    finally:
        log.close()
    if stdin_data is not None:
        try:
            proc.stdin.write(stdin_data)
        except OSError:
            pass  # it exited at once: the readiness wait reports that with its log
        finally:
            try:
                proc.stdin.close()
            except OSError:
                pass
    return proc


def stop(proc: subprocess.Popen, grace_s: float = 5.0) -> int | None:
    """SIGTERM the process group, wait up to grace_s, then SIGKILL it. Returns the exit code."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
    try:  # children the server forked (none for redis, some for others) go too
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        return proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        return None


def log_tail(path: Path, lines: int = 20, max_bytes: int = 16384) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


def wall_iso(t: float | None = None) -> str:
    import datetime as dt
    return dt.datetime.fromtimestamp(t if t is not None else time.time(), dt.timezone.utc).isoformat(
        timespec="milliseconds")
