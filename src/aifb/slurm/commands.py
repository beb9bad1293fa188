"""Slurm's command-line tools, wrapped: sbatch, squeue (job_state), scancel; the marker our
jobs carry (job_comment, owner_tag, owner_alive); and what a job is submitted with (site_options,
mem_option, job_script). Every failure to reach Slurm is a ServiceError that says what to check.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import shutil
import socket
import subprocess
from pathlib import Path

from aifb.errors import ConfigError, ServiceError
from aifb.units import parse_size

JOB_PREFIX = "aifb-"
COMMENT_PREFIX = "aifb:"
# Job states in which a job still holds (or waits for) resources.
ACTIVE_STATES = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED",
                 "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED"}
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def slurm_available() -> bool:
    return all(shutil.which(c) for c in ("sbatch", "squeue", "scancel"))


def _run(argv: list[str], *, input: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise ServiceError(f"{argv[0]} not found on PATH: this target needs a Slurm client "
                           "(sbatch, squeue, scancel)") from None
    except subprocess.TimeoutExpired:
        raise ServiceError(f"{shlex.join(argv[:3])} ... did not answer within {timeout:g} s "
                           "(is slurmctld up?)") from None


def sbatch(options: list[str], script: str) -> str:
    """Submit `script` (given on stdin) with `options`; returns the job ID."""
    argv = ["sbatch", "--parsable", *options]
    out = _run(argv, input=script)
    if out.returncode != 0:
        raise ServiceError(f"sbatch refused the job: {out.stderr.strip() or out.stdout.strip()} "
                           f"(sbatch {shlex.join(options)})")
    return out.stdout.strip().split(";")[0]


def job_state(job_id: str) -> dict | None:
    """{'state', 'reason', 'nodes', 'exit'} of a job squeue still knows (finished jobs stay
    visible for MinJobAge), or None when it knows none by that ID."""
    out = _run(["squeue", "-h", "-t", "all", "-j", str(job_id), "-o", "%T|%r|%N|%M|%l"], timeout=30)
    if out.returncode != 0:
        if "Invalid job id" in out.stderr:
            return None
        raise ServiceError(f"squeue -j {job_id} failed: {out.stderr.strip()}")
    line = out.stdout.strip().splitlines()[0] if out.stdout.strip() else ""
    if not line:
        return None
    state, reason, nodes, used, limit = (line.split("|") + [""] * 5)[:5]
    return {"state": state, "reason": reason, "nodes": nodes, "time_used": used, "time_limit": limit}


def scancel(job_id: str) -> bool:
    out = _run(["scancel", str(job_id)], timeout=30)
    return out.returncode == 0


def is_active(state: dict | None) -> bool:
    return state is not None and state["state"] in ACTIVE_STATES


def owner_tag() -> str:
    """Who owns a service job: the Slurm job we run in, or this process on this host."""
    if os.environ.get("SLURM_JOB_ID"):
        return f"job:{os.environ['SLURM_JOB_ID']}"
    return f"pid:{socket.gethostname()}:{os.getpid()}"


def job_comment(run_dir: Path) -> str:
    """The marker `aifb cleanup` knows our jobs by (never the job name alone): the benchmark ID,
    the owner, and the work root last (a path may hold spaces)."""
    run_dir = Path(run_dir).resolve()
    return f"{COMMENT_PREFIX}{run_dir.name} owner={owner_tag()} root={run_dir.parents[1]}"


def owner_alive(owner: str | None) -> bool | None:
    """True/False when it can be told from here, None when it cannot (a pid on another host)."""
    if not owner:
        return None
    kind, _, rest = owner.partition(":")
    if kind == "job":
        try:
            return is_active(job_state(rest))
        except ServiceError:
            return None
    if kind == "pid":
        host, _, pid = rest.rpartition(":")
        if host != socket.gethostname():
            return None
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except (PermissionError, ValueError):
            return None
        try:  # a zombie is gone for our purposes
            with open(f"/proc/{pid}/stat", encoding="utf-8") as fh:
                return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return True
    return None


def mem_option(mem) -> str | None:
    """sbatch --mem value from a recipe size (4GiB, 2048 bytes) or a target string (8G)."""
    if mem is None:
        return None
    if isinstance(mem, str) and mem.strip()[-1:] in "KMGT" and mem.strip()[:-1].isdigit():
        return mem.strip()
    return f"{max(1, math.ceil(parse_size(mem) / 2**20))}M"


def site_options(target: dict, *, gpus: int = 0, role: str | None = None,
                 partition: str | None = None) -> list[str]:
    """--partition/--account/--qos/--constraint and the site's extras, for one job. The
    partition: the target's partition for `role` ("cpu" or "gpu", a recipe's
    service.partition: what the recipe asks for explicitly); else `partition` (a service kind's
    own default on this target, services.<kind>.partition); else its gpu one when GPUs are
    asked for, its cpu one otherwise."""
    slurm = target.get("slurm") or {}
    parts = target.get("partitions") or {}
    opts = []
    if role and not parts.get(role):
        raise ServiceError(f"service.partition {role!r}: target {target['name']!r} names no "
                           f"{role} partition (partitions.{role} in config/targets.yaml)")
    partition = parts[role] if role else partition or parts.get("gpu" if gpus else "cpu")
    if gpus and not partition:
        raise ServiceError(f"the recipe asks for {gpus} GPU(s) but target {target['name']!r} "
                           "names no gpu partition (partitions.gpu in config/targets.yaml)")
    if partition:
        opts.append(f"--partition={partition}")
    if slurm.get("account"):
        opts.append(f"--account={slurm['account']}")
    if slurm.get("qos"):
        opts.append(f"--qos={slurm['qos']}")
    constraint = slurm.get("gpu_constraint") if gpus and slurm.get("gpu_constraint") else slurm.get("constraint")
    if constraint:
        opts.append(f"--constraint={constraint}")
    if gpus:
        opts.append(slurm.get("gpu_request", "--gpus={n}").format(n=gpus))
    opts += list(slurm.get("extra") or [])
    return opts


def job_script(target: dict, how: dict, argv: list[str], *, title: str) -> str:
    """The batch script: modules, environment, then exec the entry point (so that Slurm's
    signals reach Python directly)."""
    modules = list((target.get("slurm") or {}).get("modules") or [])
    mod = how.get("module")
    modules += [mod] if isinstance(mod, str) else list(mod or [])
    # Everything interpolated is quoted or checked: the title is one comment line, variable
    # names are names (a key like "X=1; touch f; Y" would otherwise be a command).
    lines = ["#!/bin/bash", "# " + " ".join(title.split()), "set -e"]
    if modules:
        lines += ["type module >/dev/null 2>&1 || . /etc/profile >/dev/null 2>&1 || true",
                  *(f"module load {shlex.quote(m)}" for m in modules)]
    for key, value in (how.get("env") or {}).items():
        if not ENV_NAME.fullmatch(str(key)):
            raise ConfigError(f"targets: env name {key!r} of target {target.get('name')!r} is not "
                              "a variable name ([A-Za-z_][A-Za-z0-9_]*)")
        lines.append(f"export {key}={shlex.quote(str(value))}")
    lines.append("exec " + shlex.join(argv))
    return "\n".join(lines) + "\n"
