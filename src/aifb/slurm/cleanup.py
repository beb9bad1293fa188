"""`aifb cleanup`: find Slurm jobs this workflow left behind and cancel them.

Ours are the jobs with the marker aifb.slurm.commands.job_comment() sets: the comment
`aifb:<id> owner=<owner> root=<work root>`, with this work root. A job name (`aifb-...`) alone
proves nothing (anyone may name a job so), and a job of another work root (another checkout or
project directory) is that root's to clean up. One of ours is a leftover when nothing will
stop it any more:

  - its owner (the benchmark job `owner=job:<jobid>`, or process `owner=pid:<host>:<pid>`) is
    gone, or
  - its benchmark's results/<id>/run.json is no longer `running`.

A job whose owner is alive belongs to a benchmark in progress and is never cancelled unless it
is named (`aifb cleanup JOBID` or `aifb cleanup BM-...`). `--all` also cancels jobs whose owner
cannot be checked from here (a process on another host). With `--snakemake`, Snakemake's own
jobs for this work root (comment `rule_<rule>_...`, working directory = the work root) are
listed and cancelled too - use it only when no Snakemake is running here (Snakemake cancels its
own jobs when it is stopped normally).
"""

from __future__ import annotations

import getpass
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from aifb.errors import ServiceError
from aifb.jsonio import read_json
from aifb.paths import ID_PATTERN
from aifb.slurm.commands import COMMENT_PREFIX, owner_alive, scancel

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
    def marker(self) -> re.Match | None:
        return _MARKER.match(self.comment)

    @property
    def benchmark_id(self) -> str | None:
        return self.marker.group("id") if self.marker else None

    @property
    def owner(self) -> str | None:
        return self.marker.group("owner") if self.marker else None

    @property
    def root(self) -> str | None:
        return self.marker.group("root") if self.marker else None


_MARKER = re.compile(rf"^{re.escape(COMMENT_PREFIX)}(?P<id>{ID_PATTERN}) owner=(?P<owner>\S+) "
                     r"root=(?P<root>/.*)$")


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


def is_ours(job: Job, root: Path) -> bool:
    """Marked by us (job_comment) for this work root."""
    return job.root is not None and same_dir(job.root, root)


SNAKEMAKE_PREFIX = "aifb-smk"  # profiles/slurm: slurm-jobname-prefix


def is_snakemake_job(job: Job) -> bool:
    return job.name.startswith(SNAKEMAKE_PREFIX) or any(
        job.comment.startswith(f"rule_{r}") for r in RULES)


def same_dir(a: str, b: Path) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


def verdict(job: Job, root: Path, everything: bool = False) -> tuple[bool, str]:
    """(leftover?, why) for one of our jobs."""
    alive = owner_alive(job.owner)
    if alive is False:
        return True, f"its owner {job.owner} is gone"
    run_json = root / "results" / job.benchmark_id / "run.json"
    status = None
    if run_json.is_file():
        try:
            status = read_json(run_json).get("status")
        except (OSError, ValueError, AttributeError):
            status = None
    if alive:
        return False, (f"its owner {job.owner} is still running (benchmark in progress; name the "
                       f"job to cancel it: aifb cleanup {job.job_id})")
    if status and status != "running":
        return True, f"its benchmark {job.benchmark_id} is {status}"
    if everything:
        return True, f"--all (its owner {job.owner} cannot be checked from here)"
    return False, (f"its owner {job.owner} cannot be checked from here (--all cancels such jobs, "
                   f"or name it: aifb cleanup {job.job_id})")


def cleanup(*, root: Path, dry_run: bool = False, everything: bool = False,
            snakemake_root: Path | None = None, named: list[str] | None = None, out=print) -> int:
    """Cancel leftovers of this work root (or exactly the `named` jobs: Slurm job IDs or
    benchmark IDs); returns how many were (or, dry run, would be) cancelled."""
    jobs = list_jobs()
    named = set(named or [])
    n = 0
    seen = 0
    for job in jobs:
        if named and not ({job.job_id, job.benchmark_id} & named):
            continue
        if is_snakemake_job(job) and not named:
            if snakemake_root is not None and same_dir(job.workdir, snakemake_root):
                leftover, why = True, f"Snakemake job ({job.comment}) of {snakemake_root} (--snakemake)"
            elif job.name.startswith(SNAKEMAKE_PREFIX):
                leftover, why = False, (f"a Snakemake job ({job.comment}) in {job.workdir}: Snakemake "
                                        "cancels its own jobs; if it was killed, use --snakemake "
                                        "in that work root")
            else:
                continue
        elif is_ours(job, root):
            leftover, why = (True, "named") if named else verdict(job, root, everything)
        elif job.root is not None:
            leftover, why = False, f"a job of another work root ({job.root}): clean up there"
        else:
            if job.job_id in named:
                out(f"refused {job.job_id} {job.name}: not marked as a job of this work root "
                    f"(comment {job.comment!r}); use scancel if it is yours")
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
        out(f"no aifb jobs of {root} in the queue of {getpass.getuser()}"
            + (f" among {', '.join(sorted(named))}" if named else ""))
    return n
