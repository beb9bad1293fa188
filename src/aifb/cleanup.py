"""`aifb cleanup`: find Slurm jobs this workflow left behind and cancel them.

Ours are the jobs whose name starts with `aifb-` (service jobs `aifb-svc-<id>`, extra client
jobs `aifb-cli-<id>-<k>`) or whose comment starts with `aifb:` (`aifb:<id> owner=...`). One
is a leftover when nothing will stop it any more:

  - its owner (the benchmark job `owner=job:<jobid>`, or process `owner=pid:<host>:<pid>`) is
    gone, or
  - its benchmark's run.json (in the job's working directory) is no longer `running`.

A job whose owner is still alive belongs to a benchmark in progress and is kept, unless
`--all`. With `--snakemake`, Snakemake's own jobs for this work root (comment `rule_<rule>_...`,
working directory = the work root) are listed and cancelled too - use it only when no
Snakemake is running here (Snakemake cancels its own jobs when it is stopped normally).
"""

from __future__ import annotations

import getpass
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .errors import ServiceError
from .jsonio import read_json
from .launch_slurm import COMMENT_PREFIX, JOB_PREFIX, owner_alive, scancel

RULES = ("run_benchmark", "summarize", "report", "sweep_report", "index")
_FIELDS = "%i|%j|%T|%r|%N|%M|%Z|%k"


@dataclass
class Job:
    job_id: str
    name: str
    state: str
    reason: str
    nodes: str
    time_used: str
    workdir: str
    comment: str

    @property
    def benchmark_id(self) -> str | None:
        if self.comment.startswith(COMMENT_PREFIX):
            return self.comment[len(COMMENT_PREFIX):].split()[0]
        return None

    @property
    def owner(self) -> str | None:
        for word in self.comment.split():
            if word.startswith("owner="):
                return word.split("=", 1)[1]
        return None


def list_jobs(user: str | None = None) -> list[Job]:
    user = user or getpass.getuser()
    try:
        out = subprocess.run(["squeue", "-h", "-u", user, "-t", "PENDING,RUNNING,SUSPENDED,CONFIGURING,COMPLETING",
                              "-o", _FIELDS], capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise ServiceError("squeue not found on PATH: `aifb cleanup` needs a Slurm client") from None
    if out.returncode != 0:
        raise ServiceError(f"squeue failed: {out.stderr.strip()}")
    jobs = []
    for line in out.stdout.splitlines():
        parts = line.split("|", 7)
        if len(parts) == 8:
            jobs.append(Job(*parts))
    return jobs


def is_ours(job: Job) -> bool:
    return job.name.startswith(JOB_PREFIX) or job.comment.startswith(COMMENT_PREFIX)


SNAKEMAKE_PREFIX = "aifb-smk"  # profiles/slurm: slurm-jobname-prefix


def is_snakemake_job(job: Job) -> bool:
    return job.name.startswith(SNAKEMAKE_PREFIX) or any(
        job.comment.startswith(f"rule_{r}") for r in RULES)


def same_dir(a: str, b: Path) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


def verdict(job: Job) -> tuple[bool, str]:
    """(leftover?, why) for one of our jobs."""
    alive = owner_alive(job.owner)
    if alive is False:
        return True, f"its owner {job.owner} is gone"
    run_json = Path(job.workdir) / "run.json"
    status = None
    if run_json.is_file():
        try:
            status = read_json(run_json).get("status")
        except (OSError, ValueError):
            status = None
    if status and status != "running":
        return True, f"its benchmark {job.benchmark_id} is {status}"
    if alive:
        return False, f"its owner {job.owner} is still running (benchmark in progress)"
    if status == "running":
        return False, (f"its benchmark {job.benchmark_id} is running and its owner "
                       f"{job.owner} cannot be checked from here")
    return False, f"owner {job.owner or 'unknown'} cannot be checked from here"


def cleanup(*, dry_run: bool = False, everything: bool = False, snakemake_root: Path | None = None,
            out=print) -> int:
    """Cancel leftovers; returns how many were (or, dry run, would be) cancelled."""
    jobs = list_jobs()
    n = 0
    seen = 0
    for job in jobs:
        if is_snakemake_job(job):
            if snakemake_root is not None and same_dir(job.workdir, snakemake_root):
                leftover, why = True, f"Snakemake job ({job.comment}) of {snakemake_root} (--snakemake)"
            elif job.name.startswith(SNAKEMAKE_PREFIX):
                leftover, why = False, (f"a Snakemake job ({job.comment}) in {job.workdir}: Snakemake "
                                        "cancels its own jobs; if it was killed, use --snakemake "
                                        "in that work root")
            else:
                continue
        elif is_ours(job):
            leftover, why = verdict(job)
            if everything and not leftover:
                leftover, why = True, f"--all ({why})"
        else:
            continue
        seen += 1
        desc = f"{job.job_id} {job.name} ({job.state} {job.time_used} on {job.nodes or job.reason})"
        if not leftover:
            out(f"kept {desc}: {why}")
            continue
        n += 1
        if dry_run:
            out(f"would cancel {desc}: {why}")
        elif scancel(job.job_id):
            out(f"cancelled {desc}: {why}")
        else:
            out(f"could not cancel {desc} (scancel failed): {why}")
    if not seen:
        out(f"no aifb jobs in the queue of {getpass.getuser()}")
    return n
