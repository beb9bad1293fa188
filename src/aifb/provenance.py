"""Facts about the code and the machine, recorded in run.json so a run can be reproduced.

Git commit and dirty flag of the project, versions of the framework and key packages, Python,
OS and kernel, CPU model and count, memory, GPUs and driver when nvidia-smi is present.
"""

from __future__ import annotations

import functools
import importlib.metadata as md
import os
import platform
import shutil
import socket
import subprocess
from pathlib import Path

from aifb import __version__
from aifb.paths import code_root

KEY_PACKAGES = ("snakemake", "snakemake-executor-plugin-slurm", "polars", "altair",
                "vl-convert-python", "aiohttp", "uvloop", "jsonschema", "pyyaml")


def _run(argv: list[str], cwd: Path | None = None, timeout: float = 10) -> str | None:
    try:
        out = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state(root: Path | None = None) -> dict:
    root = root or code_root()
    commit = _run(["git", "rev-parse", "HEAD"], cwd=root)
    if commit is None:
        return {"git_commit": None, "git_dirty": None}
    status = _run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root)
    return {"git_commit": commit, "git_dirty": bool(status)}


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _mem_total_bytes() -> int | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _gpus() -> list[dict]:
    if not shutil.which("nvidia-smi"):
        return []
    out = _run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                "--format=csv,noheader"])
    gpus = []
    for line in (out or "").splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3:
            gpus.append({"name": parts[0], "driver": parts[1], "memory": parts[2]})
    return gpus


def parent_command(match: str = "snakemake") -> list[str] | None:
    """argv of the nearest ancestor process whose command line mentions `match` (the Snakemake
    invocation that ran this job), read from /proc; None when there is none."""
    pid = os.getppid()
    for _ in range(8):
        if pid <= 1:
            return None
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                argv = [a.decode("utf-8", "replace") for a in fh.read().split(b"\0") if a]
            with open(f"/proc/{pid}/stat", encoding="utf-8") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return None
        if any(match in a for a in argv[:3]):
            return argv
        pid = ppid
    return None


def package_versions(names=KEY_PACKAGES) -> dict:
    out = {}
    for name in names:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


@functools.cache
def environment() -> dict:
    uname = platform.uname()
    return {
        "framework": "aifb",
        "framework_version": __version__,
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "packages": package_versions(),
        "os": platform.platform(),
        "kernel": uname.release,
        "hostname": socket.gethostname(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "mem_total_bytes": _mem_total_bytes(),
        "gpus": _gpus(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
    }
