"""Services (and extra client jobs) as Slurm jobs, for targets whose executor is `slurm`.

Targets (config/targets.yaml, validated against workflow/schemas/targets.schema.yaml) say how
each service kind runs on a cluster. For a managed service on a Slurm target the benchmark job
(client job 0: the Snakemake `run_benchmark` job, or the process running aifb.workflow.runner) does:

    write results/<id>/service-job.json      what to start, how (binary/module/apptainer), where
    sbatch --parsable --job-name aifb-svc-<id> --comment "aifb:<id> owner=... root=..." --time ...
           [--partition cpu|gpu] [--account/--qos/--constraint] [--gpus=N] ...
        -> the job runs `python -m aifb.slurm.service_job RUN_DIR` on its node: it starts the service
           there with the kind's LocalProcessService logic, runs the kind's real readiness
           probe, writes results/<id>/service.json (host, port, pid, version, node) and stays
           until cancelled (or until its owner is gone, or its --time runs out)
    wait for service.json                   while checking with squeue that the job is still
                                            PENDING/RUNNING; a job that ends, or pends longer
                                            than the target's queue_timeout, fails the run with
                                            Slurm's state and reason
    ... load ...
    scancel the service job                 in a finally: success, failure and interruption

Nothing is left behind: the runner tears down in a finally and on SIGINT/SIGTERM; the service
job stops itself when its owner (client job or process) is gone; Slurm's --time is the
backstop; `aifb cleanup` finds what is left (by the comment job_comment() sets).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import math
import os
import re
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

from aifb import process
from aifb.load import merge
from aifb.load.shard import split
from aifb.load.share import RequestQuota, RequestShare
from aifb.errors import ConfigError, ServiceError
from aifb.jsonio import read_json, write_json
from aifb.paths import work_root
from aifb.schemas import validation_errors
from aifb.services.base import ServiceInfo
from aifb.units import parse_duration, parse_size

SCHEMA = "targets.schema.yaml"
JOB_PREFIX = "aifb-"
COMMENT_PREFIX = "aifb:"
# Job states in which a job still holds (or waits for) resources.
ACTIVE_STATES = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED",
                 "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED"}
BUILTIN_LOCAL = {"description": "this machine; services as local processes", "executor": "local"}
DEFAULT_MARGIN_S = 600.0
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
DEFAULT_QUEUE_TIMEOUT_S = 1800.0


# --------------------------------------------------------------------------- targets

def targets_file(root: Path | None = None) -> Path:
    """config/targets.yaml, or the file config/config.yaml names in `targets:`."""
    root = Path(root or work_root())
    cfg = root / "config" / "config.yaml"
    rel = "config/targets.yaml"
    if cfg.is_file():
        try:
            rel = (yaml.safe_load(cfg.read_text(encoding="utf-8")) or {}).get("targets") or rel
        except yaml.YAMLError:
            pass
    return root / rel


def validate_targets(data, source: str = "config/targets.yaml") -> dict:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a mapping of target names to definitions is expected")
    errors = validation_errors(data, SCHEMA)
    if errors:
        raise ConfigError(f"{source}: invalid targets:\n  " + "\n  ".join(errors))
    return data


def load_targets(root: Path | None = None) -> dict:
    """Every target, validated. Without a targets file only the built-in `local` exists."""
    return load_targets_file(targets_file(root))


def load_targets_file(path: Path) -> dict:
    """The targets of one file, validated (the built-in `local` alone when there is none)."""
    if not path.is_file():
        return {"local": dict(BUILTIN_LOCAL)}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: malformed YAML: {exc}") from None
    return validate_targets(data, str(path))


def get_target(name: str, root: Path | None = None) -> dict:
    targets = load_targets(root)
    if name not in targets:
        raise ConfigError(f"target {name!r} is not defined in {targets_file(root)} "
                          f"(defined: {', '.join(sorted(targets))})")
    return dict(targets[name], name=name)


def service_how(target: dict, kind: str) -> dict:
    """How `kind` runs on `target`: its entry under services:, else `default`, else {}."""
    services = target.get("services") or {}
    return dict(services.get(kind) or services.get("default") or {})


def service_runtime_minutes(recipe: dict, target: dict) -> int:
    """The service job's time limit: the benchmark's own limit plus the target's margin."""
    from aifb.workflow.sweep import runtime_minutes

    margin = parse_duration(target.get("service_margin", DEFAULT_MARGIN_S))
    return runtime_minutes(recipe) + int(math.ceil(margin / 60.0))


# --------------------------------------------------------------------------- Slurm commands

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


def site_options(target: dict, *, gpus: int = 0) -> list[str]:
    """--partition/--account/--qos/--constraint and the site's extras, for one job."""
    slurm = target.get("slurm") or {}
    parts = target.get("partitions") or {}
    opts = []
    partition = parts.get("gpu") if gpus else parts.get("cpu")
    if gpus and not parts.get("gpu"):
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


def check_shared(target: dict, run_dir: Path) -> None:
    shared = target.get("shared_dir")
    if shared and not Path(run_dir).resolve().is_relative_to(Path(os.path.expandvars(shared)).resolve()):
        raise ServiceError(
            f"results go to {run_dir}, which is not under target {target['name']!r}'s shared_dir "
            f"{shared}: Slurm jobs on other nodes could not see them (set AIFB_ROOT to a "
            "directory on the shared filesystem)")


# --------------------------------------------------------------------------- the service job

class SlurmServiceLauncher:
    """A managed service as its own Slurm job; the same lifecycle as LocalProcessService
    (deploy / alive / describe / teardown), so the runner treats both alike."""

    POLL_FILE_S = 0.2
    POLL_QUEUE_S = 2.0
    STOP_WAIT_S = 90.0

    def __init__(self, spec: dict, run_dir: Path, target: dict, *, benchmark_id: str,
                 recipe: dict, log=None, on_submit=None):
        self.kind = spec["kind"]
        self.spec = spec
        self.run_dir = Path(run_dir)
        self.target = target
        self.benchmark_id = benchmark_id
        self.recipe = recipe
        self.log = log or (lambda m: None)
        self.on_submit = on_submit
        self.how = service_how(target, self.kind)
        self.job_id: str | None = None
        self.last_state: dict | None = None
        self.ready = False
        self.torn_down = False
        self.info = ServiceInfo(kind=self.kind, name=spec.get("name", self.kind), managed=True,
                                log=str(self.run_dir / "service.log"))
        app = self.how.get("apptainer") or {}
        self.info.image = spec.get("image") or app.get("image")
        self.info.extra.update({"executor": "slurm", "target": target["name"]})

    # -- what to submit -----------------------------------------------------------------
    def resources(self) -> dict:
        res = dict(self.how.get("resources") or {})
        res.update({k: v for k, v in (self.spec.get("resources") or {}).items() if v is not None})
        return res

    def sbatch_options(self) -> list[str]:
        res = self.resources()
        gpus = int(res.get("gpus") or 0)
        minutes = service_runtime_minutes(self.recipe, self.target)
        opts = [f"--job-name={JOB_PREFIX}svc-{self.benchmark_id}",
                f"--comment={job_comment(self.run_dir)}",
                f"--time={minutes}", "--nodes=1", "--ntasks=1",
                f"--cpus-per-task={int(res.get('cpus') or 1)}",
                f"--chdir={self.run_dir}",
                f"--output={self.run_dir / 'logs' / 'service-job-%j.out'}"]
        mem = mem_option(res.get("mem"))
        if mem:
            opts.append(f"--mem={mem}")
        return opts + site_options(self.target, gpus=gpus)

    def request(self) -> dict:
        spec = dict(self.spec)
        if self.spec.get("binary") is None and self.how.get("binary"):
            spec["binary"] = self.how["binary"]
        return {"benchmark_id": self.benchmark_id, "kind": self.kind, "spec": spec,
                "how": self.how, "target": self.target["name"],
                "bind": self.target.get("bind", "auto"),
                "scratch_dir": self.target.get("scratch_dir"),
                "owner": owner_tag(), "image": self.info.image,
                "written_at": process.wall_iso()}

    # -- lifecycle ----------------------------------------------------------------------
    async def deploy(self) -> str:
        if not slurm_available():
            raise ServiceError(f"target {self.target['name']!r} runs services as Slurm jobs, but "
                               "sbatch/squeue/scancel are not on PATH here")
        check_shared(self.target, self.run_dir)
        (self.run_dir / "logs").mkdir(parents=True, exist_ok=True)
        for stale in ("service.json",):
            (self.run_dir / stale).unlink(missing_ok=True)
        write_json(self.run_dir / "service-job.json", self.request())
        opts = self.sbatch_options()
        argv = [sys.executable, "-m", "aifb.slurm.service_job", str(self.run_dir)]
        script = job_script(self.target, self.how, argv,
                            title=f"AI Factory Bench: {self.kind} service of {self.benchmark_id}")
        self.info.started_at = process.wall_iso()
        t0, submitted_unix = time.monotonic(), time.time()
        self.job_id = await asyncio.to_thread(sbatch, opts, script)
        self.info.job_id = self.job_id
        self.info.command = argv
        self.info.extra["sbatch"] = opts
        self.info.extra["time_limit_min"] = service_runtime_minutes(self.recipe, self.target)
        self.log(f"{self.kind} service submitted as Slurm job {self.job_id} "
                 f"({' '.join(o for o in opts if o.startswith(('--partition', '--time', '--gpus', '--gres')))})")
        if self.on_submit:
            self.on_submit()
        doc = await self._wait_ready(t0)
        svc = doc.get("service") or {}
        for key in ("endpoint", "host", "port", "pid", "binary", "version", "command", "ready_at",
                    "ready_s"):
            if svc.get(key) is not None:
                setattr(self.info, key, svc[key])
        self.info.command = svc.get("command") or argv
        self.info.node = doc.get("node")
        self.info.extra.update({"job_started_at": doc.get("job_started_at"),
                                "queue_wait_s": round(doc["job_started_unix"] - submitted_unix, 3)
                                if doc.get("job_started_unix") else None,
                                "submit_to_ready_s": round(time.monotonic() - t0, 3),
                                "job_log": str(self.run_dir / "logs" / f"service-job-{self.job_id}.out")})
        if doc.get("workdir"):
            self.info.extra["workdir"] = doc["workdir"]
        for key in ("exposure", "auth"):  # who may use it, as the service job found
            if (svc.get("extra") or {}).get(key):
                self.info.extra[key] = svc["extra"][key]
        self.ready = True
        return self.info.endpoint

    def _read_doc(self) -> dict | None:
        path = self.run_dir / "service.json"
        try:
            doc = read_json(path)
        except (OSError, ValueError):
            return None
        return doc if str(doc.get("job_id")) == str(self.job_id) else None

    async def _wait_ready(self, t0: float) -> dict:
        queue_timeout = parse_duration(self.target.get("queue_timeout", DEFAULT_QUEUE_TIMEOUT_S))
        ready_timeout = parse_duration(self.spec.get("ready_timeout", "30s")) + 60.0
        next_queue = 0.0
        started = None
        while True:
            doc = self._read_doc()
            if doc and doc.get("status") == "ready":
                return doc
            if doc and doc.get("status") in ("failed", "exited", "stopped"):
                raise ServiceError(
                    f"{self.kind} service job {self.job_id} on {doc.get('node')}: {doc.get('reason')}",
                    log_tail=doc.get("log_tail") or process.log_tail(self.run_dir / "service.log"))
            now = time.monotonic()
            if now >= next_queue:
                next_queue = now + self.POLL_QUEUE_S
                st = self.last_state = await asyncio.to_thread(job_state, self.job_id)
                if not is_active(st):
                    await asyncio.sleep(1.0)  # the job may have written service.json just now
                    doc = self._read_doc()
                    if doc and doc.get("status") == "ready":
                        return doc
                    what = (f"state {st['state']}, reason {st['reason']}" if st else
                            "Slurm no longer knows it")
                    raise ServiceError(
                        f"{self.kind} service job {self.job_id} ended before the service was "
                        f"ready ({what}); job log: {self.run_dir / 'logs' / f'service-job-{self.job_id}.out'}",
                        log_tail=(doc or {}).get("log_tail") or self._job_log_tail())
                if st["state"] == "PENDING":
                    if now - t0 > queue_timeout:
                        await asyncio.to_thread(scancel, self.job_id)
                        raise ServiceError(
                            f"{self.kind} service job {self.job_id} still pending after "
                            f"{queue_timeout:g} s (reason: {st['reason']}); cancelled it "
                            "(raise queue_timeout in config/targets.yaml, or pick another "
                            "partition/QoS)")
                elif started is None:
                    started = now
                    self.log(f"service job {self.job_id} running on {st['nodes']} after "
                             f"{now - t0:.1f} s in the queue")
                elif now - started > ready_timeout:
                    raise ServiceError(
                        f"{self.kind} service job {self.job_id} has run {now - started:.0f} s "
                        "without reporting ready (results/<id>/service.json): is the run "
                        "directory on a filesystem its node shares?",
                        log_tail=self._job_log_tail())
            await asyncio.sleep(self.POLL_FILE_S)

    def _job_log_tail(self) -> str:
        return process.log_tail(self.run_dir / "logs" / f"service-job-{self.job_id}.out")

    def alive(self) -> bool:
        if not self.ready or self.job_id is None:
            return False
        try:
            st = self.last_state = job_state(self.job_id)
        except ServiceError:
            return True  # cannot tell; do not call a good run partial for it
        doc = self._read_doc() or {}
        return st is not None and st["state"] == "RUNNING" and doc.get("status") == "ready"

    STATE_WORDS = {
        "CANCELLED": "it was cancelled (scancel) by someone other than this benchmark",
        "TIMEOUT": "its time limit ran out",
        "NODE_FAIL": "its node failed",
        "OUT_OF_MEMORY": "it ran out of memory",
        "PREEMPTED": "it was preempted",
        "FAILED": "it failed",
        "COMPLETED": "it ended by itself",
        "BOOT_FAIL": "its node failed to boot",
        "DEADLINE": "it reached its deadline",
    }

    def death_reason(self) -> str:
        st = self.last_state
        doc = self._read_doc() or {}
        if st is None:
            why = "Slurm no longer knows it"
        else:
            why = f"Slurm state {st['state']}: " + self.STATE_WORDS.get(st["state"], "it is no longer running")
            if st["reason"] not in ("", "None"):
                why += f" (reason {st['reason']})"
        if doc.get("status") == "exited":
            why += f"; {doc.get('reason')}"
        return f"the {self.kind} service job {self.job_id} ended during the run ({why})"

    def describe(self) -> dict:
        return self.info.to_dict()

    async def teardown(self) -> None:
        if self.job_id is None or self.torn_down:
            return
        self.torn_down = True
        st = await asyncio.to_thread(job_state, self.job_id)
        was_active = is_active(st)
        if was_active:
            await asyncio.to_thread(scancel, self.job_id)
        deadline = time.monotonic() + self.STOP_WAIT_S
        while was_active and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            st = await asyncio.to_thread(job_state, self.job_id)
            if not is_active(st):
                break
        self.last_state = st
        doc = self._read_doc() or {}
        svc = doc.get("service") or {}
        self.info.stopped_at = svc.get("stopped_at") or process.wall_iso()
        self.info.exit_code = svc.get("exit_code")
        self.info.extra["job_state"] = st["state"] if st else None
        self.info.extra["cancelled_by_teardown"] = was_active
        if doc.get("status") not in (None, "ready", "stopped"):
            self.info.extra["service_job_status"] = doc.get("status")
            self.info.extra["service_job_reason"] = doc.get("reason")
        if is_active(st):
            self.info.extra["still_active_after_s"] = self.STOP_WAIT_S
        self.log(f"service job {self.job_id}: " + (f"cancelled ({st['state'] if st else 'gone'})"
                                                   if was_active else f"had already ended ({st['state'] if st else 'gone'})"))


# --------------------------------------------------------------------------- client jobs
#
# A recipe with more load clients than the target's clients.max_per_job is split over
# ceil(clients / max_per_job) client jobs. Job 0 is the benchmark job itself; jobs 1..n-1 are
# `aifb-cli-<id>-<k>` Slurm jobs running `python -m aifb.slurm.launch client RUN_DIR K`.
#
#   benchmark job: TCP coordinator on its node (address per the target's `bind`), writes
#       results/<id>/clients/plan.json (endpoint, each job's block of clients, load, seed), submits
#       the client jobs
#   client job k: connects; clock sync (below); startup + validate its clients (no preload: job 0
#       preloads); "ready"
#   benchmark job (its own on_ready, after its preload): waits for every "ready" (checking with
#       squeue that the jobs are alive), refuses the run when a job's clock uncertainty exceeds
#       clients.max_clock_error, then sends "go" with one start instant T (seconds since the
#       benchmark's t0) and every job starts its engine at T on its own clock
#   client job k: records to results/<id>/clients/<k>/requests.jsonl on the benchmark's time base;
#       after the load a second clock sync, then "done" with its load_stats
#   benchmark job: merges every job's records into requests.jsonl (client index shifted to the
#       global one, clock drift between the two syncs corrected linearly), sums the load stats,
#       records each job's ID, node and clock offset in run.json, scancels what is left.
#
# Clock sync, NTP style over the coordinator's TCP connection: the client sends a ping at its
# monotonic t1, the benchmark job answers with its time since t0 (t), the client reads the
# answer at t4: the benchmark's t0 on the client's clock is (t1 + t4) / 2 - t, within
# +-(t4 - t1) / 2. The sample with the smallest round trip of SYNC_SAMPLES is kept. No wall
# clock is involved, so NTP steps on either node do not matter.
#
# Authentication: plan.json is on the shared filesystem, so anyone who can read it can reach
# the coordinator. Each run has a random token in results/<id>/clients/token, created 0600 (the
# client jobs run as the same user and read it). On every connection the coordinator first
# sends a fresh nonce; from then on every line in either direction is `MAC JSON`, MAC being
# HMAC-SHA256 under the token of nonce, direction, the line's sequence number and the JSON
# (see Channel). A line that fails the check, a hello for a client job this run did not submit
# (or from another Slurm job ID than the one sbatch returned for it), a second hello for a
# job, or anything before hello: the connection is closed, nothing of it is used, and the run
# is flagged (clients.bad_messages; status partial with the reason). Job IDs that reach
# scancel are only those sbatch returned.

SYNC_SAMPLES = 32
DEFAULT_CLOCK_BOUND_S = 1e-3
_TIME_KEYS = ("t_sched", "t_start", "t_first", "t_end")


def client_job_count(settings: dict, target: dict) -> int:
    per_job = (target.get("clients") or {}).get("max_per_job")
    if target.get("executor") != "slurm" or not per_job:
        return 1
    return max(1, math.ceil(int(settings["clients"]) / int(per_job)))


def job_load(settings: dict, lo: int, hi: int) -> dict:
    """The load settings of the job driving clients [lo, hi) of settings['clients']. A
    `requests: N` stays N: it is shared by all the jobs (aifb.load.engine.RequestShare)."""
    n = int(settings["clients"])
    out = dict(settings, clients=hi - lo)
    if settings.get("rate") is not None:
        out["rate"] = settings["rate"] * (hi - lo) / n
    return out


def job_seed(seed: int, k: int) -> int:
    return seed if k == 0 else (seed * 1_000_003 + k) % 2**31


def _line(msg: dict) -> bytes:
    return (json.dumps(msg, separators=(",", ":"), default=str) + "\n").encode()


TOKEN_FILE = "token"
MAX_LINE = 16 << 20  # a "done" carries the load stats: generous, but bounded


class BadMessage(Exception):
    """A coordinator line that is not authentic or not allowed (the words say which)."""


def write_token(path: Path) -> bytes:
    """A new random token in `path`, readable by this user only."""
    token = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token.hex() + "\n")
    return token


def read_token(path: Path) -> bytes:
    return bytes.fromhex(path.read_text(encoding="ascii").strip())


class Channel:
    """One coordinator connection's authenticated lines (see the comment above)."""

    def __init__(self, token: bytes, nonce: str, reader, writer, *, side: str):
        self.token, self.nonce = token, nonce
        self.reader, self.writer = reader, writer
        self.out_dir, self.in_dir = ("c2s", "s2c") if side == "client" else ("s2c", "c2s")
        self.out_seq = self.in_seq = 0

    def _mac(self, direction: str, seq: int, body: bytes) -> str:
        head = f"{self.nonce}|{direction}|{seq}|".encode()
        return hmac.new(self.token, head + body, hashlib.sha256).hexdigest()

    def send(self, msg: dict) -> None:
        body = json.dumps(msg, separators=(",", ":"), default=str).encode()
        self.writer.write(self._mac(self.out_dir, self.out_seq, body).encode() + b" " + body + b"\n")
        self.out_seq += 1

    async def drain(self) -> None:
        await self.writer.drain()

    async def recv(self) -> dict | None:
        """The next authentic message; None at the end of the stream; BadMessage otherwise."""
        try:
            line = await self.reader.readline()
        except (ValueError, asyncio.LimitOverrunError):
            raise BadMessage("a line longer than the limit") from None
        if not line:
            return None
        mac, _, body = line.rstrip(b"\n").partition(b" ")
        want = self._mac(self.in_dir, self.in_seq, body).encode()
        if not hmac.compare_digest(mac, want):
            raise BadMessage("a line that fails authentication (no valid HMAC under this run's "
                             "token)")
        self.in_seq += 1
        try:
            msg = json.loads(body)
        except ValueError:
            raise BadMessage("an authenticated line that is not JSON") from None
        if not isinstance(msg, dict):
            raise BadMessage("an authenticated line that is not a JSON object")
        return msg


class ClientJobs:
    """The benchmark job's side of a run with extra client jobs (see the comment above)."""

    READY_POLL_S = 2.0
    START_DELAY_NS = 300_000_000

    def __init__(self, *, run: dict, run_dir: Path, target: dict, endpoint: str, settings: dict,
                 recipe: dict, clock, log, service: dict | None = None):
        self.run, self.run_dir, self.target = run, Path(run_dir), target
        self.service = service or recipe["service"]  # the run's (e.g. its password variable)
        self.endpoint, self.settings, self.recipe = endpoint, settings, recipe
        self.clock, self.log = clock, log
        self.n = client_job_count(settings, target)
        self.blocks = split(int(settings["clients"]), self.n)
        # requests: N is one count for all the jobs; this job is its root (see aifb.load.engine).
        self.quota = self.share0 = None
        self.quota_task: asyncio.Task | None = None
        if settings.get("requests") is not None:
            self.quota = RequestQuota(int(settings["requests"]), self.n, clock.t0_ns,
                                      self._broadcast)
            self.share0 = RequestShare(lambda n: self.quota.update(0, n))
        cj = target.get("clients") or {}
        self.bound_s = parse_duration(cj.get("max_clock_error", DEFAULT_CLOCK_BOUND_S))
        self.jobs = [{"k": k, "clients": list(self.blocks[k]), "job_id": None, "node": None,
                      "host": None, "state": None} for k in range(self.n)]
        self.jobs[0].update(job_id=os.environ.get("SLURM_JOB_ID"),
                            node=os.environ.get("SLURMD_NODENAME") or socket.gethostname(),
                            host=socket.gethostname(), state="RUNNING (benchmark job)")
        self.ready = {k: asyncio.Event() for k in range(1, self.n)}
        self.done = {k: asyncio.Event() for k in range(1, self.n)}
        self.writers: dict[int, Channel] = {}
        self.server = None
        self.problems: list[str] = []
        self.merged = False
        self.token = secrets.token_bytes(32)   # replaced by the one written in start()
        self.submitted = asyncio.Event()       # every client job's Slurm ID is known
        self.bad_messages: list[dict] = []
        self.greeted: set[int] = set()

    def load_for(self, k: int) -> dict:
        lo, hi = self.blocks[k]
        return job_load(self.settings, lo, hi)

    def _broadcast(self, kind: str, t: int) -> None:
        """A shared requests count's "safe"/"end" to this job's load and every client job."""
        self.share0.deliver(kind, t)
        for ch in list(self.writers.values()):
            try:
                ch.send({"share": kind, "t": t})
            except Exception:  # a job that went away: its loss is reported elsewhere
                pass

    # -- coordinator ----------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        from aifb.clock import now_ns

        k = None
        nonce = secrets.token_hex(16)
        writer.write(_line({"nonce": nonce}))
        ch = Channel(self.token, nonce, reader, writer, side="server")
        try:
            while True:
                msg = await ch.recv()
                if msg is None:
                    break
                if "ping" in msg:
                    t = now_ns() - self.clock.t0_ns
                    ch.send({"pong": msg["ping"], "t": t})
                    continue
                if "hello" in msg:
                    k = await self._hello(k, msg)
                    self.writers[k] = ch
                elif k is None:
                    raise BadMessage(f"{sorted(msg)[:3]} before hello")
                elif "ready" in msg:
                    self.jobs[k]["clock"] = {"start": self._sync_record(msg["sync"])}
                    self.jobs[k]["client"] = msg.get("client")
                    self.ready[k].set()
                elif "error" in msg:
                    self.jobs[k]["error"] = msg["error"]
                    self.ready[k].set()
                    self.done[k].set()
                elif "count" in msg:
                    if self.quota is not None:
                        self.quota.update(k, int(msg["count"]))
                elif "done" in msg:
                    self.jobs[k]["stats"] = msg.get("stats")
                    self.jobs[k].setdefault("clock", {})["end"] = self._sync_record(msg["sync"])
                    self.done[k].set()
        except BadMessage as exc:
            self._refuse(writer, k, str(exc))
        except (OSError, ValueError, KeyError, TypeError, asyncio.IncompleteReadError):
            pass
        finally:
            if k is not None and self.writers.get(k) is ch:
                self.jobs[k]["disconnected"] = True
                self.ready[k].set()
                self.done[k].set()
                self.writers.pop(k, None)
            writer.close()

    async def _hello(self, k, msg: dict) -> int:
        """The client job a hello is from, if it is one this run submitted and not yet heard
        from; BadMessage otherwise."""
        if k is not None:
            raise BadMessage("a second hello on one connection")
        try:
            k = int(msg["hello"])
        except (TypeError, ValueError):
            raise BadMessage(f"hello from {msg['hello']!r}, not a client job number") from None
        if not 1 <= k < self.n:
            raise BadMessage(f"hello from client job {k}; this run has jobs 1..{self.n - 1}")
        if self.jobs[k]["job_id"] is None:  # a fast job may call before sbatch has answered
            try:
                await asyncio.wait_for(self.submitted.wait(), 120)
            except asyncio.TimeoutError:
                raise BadMessage(f"hello from client job {k} before it was submitted") from None
        want = self.jobs[k]["job_id"]
        if str(msg.get("job_id")) != str(want):
            raise BadMessage(f"hello from Slurm job {msg.get('job_id')!r} as client job {k}, which "
                             f"this run submitted as job {want}")
        if k in self.greeted:
            raise BadMessage(f"a second hello from client job {k}")
        self.greeted.add(k)
        self.jobs[k].update(node=msg.get("node"), host=msg.get("host"), pid=msg.get("pid"))
        return k

    def _refuse(self, writer, k, problem: str) -> None:
        peer = writer.get_extra_info("peername")
        where = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.bad_messages.append({"from": where, "client_job": k, "problem": problem,
                                  "at": process.wall_iso()})
        self.log(f"coordinator: refused a connection from {where}: {problem}")
        if len(self.bad_messages) == 1:
            self.problems.append(
                "the coordinator received messages that were not authentic or not allowed (see "
                "clients.bad_messages in run.json); they were refused and nothing of them was used")

    def _sync_record(self, sync: dict) -> dict:
        out = dict(sync)
        out["uncertainty_s"] = sync["uncertainty_ns"] / 1e9
        # on the same host both monotonic clocks are one: this is then ~0 (a self-check)
        if sync.get("host") == socket.gethostname():
            out["same_host_offset_ns"] = sync["base_ns"] - self.clock.t0_ns
        return out

    async def start(self) -> None:
        from aifb.workflow.runner import run_identity
        from aifb.slurm.service_job import node_address

        host = node_address(self.target.get("bind", "auto"))
        self.server = await asyncio.start_server(self._handle, host, 0, limit=MAX_LINE)
        port = self.server.sockets[0].getsockname()[1]
        cdir = self.run_dir / "clients"
        if cdir.exists():
            shutil.rmtree(cdir)
        cdir.mkdir(parents=True)
        self.token = write_token(cdir / TOKEN_FILE)
        spec = self.service
        write_json(cdir / "plan.json", {
            "benchmark_id": self.run["benchmark_id"], "coordinator": [host, port],
            "kind": spec["kind"], "endpoint": self.endpoint, "service": spec,
            "workload": self.recipe.get("workload") or {}, "t0_unix_ns": self.clock.t0_unix_ns,
            "salt": run_identity(self.run)["salt"],
            "jobs": [{"k": k, "clients": list(self.blocks[k]), "load": self.load_for(k),
                      "seed": job_seed(self.recipe.get("seed", 42), k)} for k in range(self.n)]})
        cj = self.target.get("clients") or {}
        minutes = service_runtime_minutes(self.recipe, self.target)
        for k in range(1, self.n):
            opts = [f"--job-name={JOB_PREFIX}cli-{self.run['benchmark_id']}-{k}",
                    f"--comment={job_comment(self.run_dir)}",
                    f"--time={minutes}", "--nodes=1", "--ntasks=1",
                    f"--cpus-per-task={int(cj.get('cpus', 2))}", f"--mem={cj.get('mem', '2G')}",
                    f"--chdir={self.run_dir}",
                    f"--output={self.run_dir / 'logs' / f'client-job-{k}-%j.out'}",
                    *site_options(self.target)]
            argv = [sys.executable, "-m", "aifb.slurm.launch", "client", str(self.run_dir), str(k)]
            script = job_script(self.target, {}, argv,
                                title=f"AI Factory Bench: client job {k} of {self.run['benchmark_id']}")
            self.jobs[k]["job_id"] = await asyncio.to_thread(sbatch, opts, script)
            self.jobs[k]["sbatch"] = opts
        self.submitted.set()
        self.log(f"{self.n} client jobs: this one (clients {self.blocks[0][0]}..{self.blocks[0][1] - 1}) + "
                 + ", ".join(f"Slurm job {self.jobs[k]['job_id']} (clients {self.blocks[k][0]}.."
                             f"{self.blocks[k][1] - 1})" for k in range(1, self.n))
                 + f"; coordinator {host}:{port}")

    async def _alive_or_raise(self, k: int, what: str) -> None:
        st = await asyncio.to_thread(job_state, self.jobs[k]["job_id"])
        self.jobs[k]["state"] = st["state"] if st else None
        if not is_active(st):
            tail = process.log_tail(self.run_dir / "logs" / f"client-job-{k}-{self.jobs[k]['job_id']}.out")
            raise ServiceError(
                f"client job {k} (Slurm job {self.jobs[k]['job_id']}) ended before {what} ("
                + (f"state {st['state']}, reason {st['reason']}" if st else "unknown to Slurm")
                + ")", log_tail=tail)

    async def barrier(self, info: dict) -> None:
        """Job 0's on_ready: every client job ready and in sync -> one start instant."""
        from aifb.clock import now_ns

        queue_timeout = parse_duration(self.target.get("queue_timeout", DEFAULT_QUEUE_TIMEOUT_S))
        t0 = time.monotonic()
        for k in range(1, self.n):
            while not self.ready[k].is_set():
                try:
                    await asyncio.wait_for(self.ready[k].wait(), self.READY_POLL_S)
                except asyncio.TimeoutError:
                    await self._alive_or_raise(k, "it was ready")
                    if time.monotonic() - t0 > queue_timeout:
                        raise ServiceError(f"client job {k} (Slurm job {self.jobs[k]['job_id']}) "
                                           f"not ready after {queue_timeout:g} s "
                                           f"(state {self.jobs[k]['state']})") from None
            job = self.jobs[k]
            if job.get("error") or job.get("disconnected") and "clock" not in job:
                raise ServiceError(f"client job {k} (Slurm job {job['job_id']} on {job['node']}): "
                                   f"{job.get('error') or 'disconnected before it was ready'}")
            unc = job["clock"]["start"]["uncertainty_s"]
            if unc > self.bound_s:
                raise ServiceError(
                    f"client job {k} on {job['node']}: clock offset known only within "
                    f"+-{unc * 1e3:.3f} ms, more than the bound of {self.bound_s * 1e3:g} ms "
                    "(clients.max_clock_error in config/targets.yaml): records of different "
                    "jobs could not be put on one time base; refused")
        start = now_ns() - self.clock.t0_ns + self.START_DELAY_NS
        for k, w in list(self.writers.items()):
            w.send({"go": start})
            await w.drain()
        self.t_go_ns = start
        self.log(f"all {self.n} client jobs ready; common start at t={start / 1e9:.3f} s")
        await sleep_until(self.clock.t0_ns + start)
        if self.quota is not None:
            self.quota_task = asyncio.get_running_loop().create_task(self.quota.run())

    async def finish(self, stats0: dict) -> dict:
        """After job 0's load: collect the others, merge records and stats."""
        grace = 30.0 + 2 * float(self.settings.get("timeout_s") or 30.0)
        deadline = time.monotonic() + grace
        for k in range(1, self.n):
            while not self.done[k].is_set() and time.monotonic() < deadline:
                try:
                    await asyncio.wait_for(self.done[k].wait(), self.READY_POLL_S)
                except asyncio.TimeoutError:
                    st = await asyncio.to_thread(job_state, self.jobs[k]["job_id"])
                    if not is_active(st):
                        break
            job = self.jobs[k]
            if "stats" not in job:
                self.problems.append(f"client job {k} (Slurm job {job['job_id']}) did not report its "
                                     f"end ({job.get('error') or 'no answer'}); its records so far "
                                     "are merged")
        if self.quota_task is not None:
            self.quota_task.cancel()
        merged = self.merge_records()
        stats = self.merge_stats(stats0)
        stats["merged_records"] = merged
        if self.quota is not None:
            stats["shared_requests"] = self.quota.describe()
        for k in range(1, self.n):
            clk = self.jobs[k].get("clock") or {}
            end = clk.get("end")
            if end and end["uncertainty_s"] > self.bound_s:
                self.problems.append(
                    f"client job {k}: clock uncertainty after the load +-{end['uncertainty_s'] * 1e3:.3f} ms "
                    f"exceeds the bound of {self.bound_s * 1e3:g} ms")
        return stats

    def _drift(self, k: int):
        clk = self.jobs[k].get("clock") or {}
        s, e = clk.get("start"), clk.get("end")
        if not s or not e or e["at_ns"] <= s["at_ns"]:
            return None
        drift = e["base_ns"] - s["base_ns"]
        clk["drift_ns"] = drift
        clk["drift_ppm"] = round(drift / (e["at_ns"] - s["at_ns"]) * 1e6, 3)
        # A change smaller than the two measurements' uncertainty is noise, not drift.
        clk["drift_significant"] = abs(drift) > s["uncertainty_ns"] + e["uncertainty_ns"]
        if not clk["drift_significant"]:
            return None
        return s["at_ns"] / 1e9, e["at_ns"] / 1e9, drift / 1e9

    def merge_records(self) -> int:
        """Append every extra job's records to requests.jsonl (global client index, drift
        corrected); returns how many were appended."""
        out_path = self.run_dir / "requests.jsonl"
        shadow = self.run_dir / ".requests.jsonl.inflight"  # aifb.workflow.runner.INFLIGHT
        if not out_path.exists() and shadow.exists():
            out_path = shadow  # Snakemake removed the output of a cancelled job: keep them together
        total = 0
        with open(out_path, "a", encoding="utf-8") as out:
            for k in range(1, self.n):
                path = self.run_dir / "clients" / str(k) / "requests.jsonl"
                if not path.is_file():
                    continue
                lo = self.blocks[k][0]
                corr = self._drift(k)
                buf = []
                lines = 0
                with open(path, encoding="utf-8") as fh:
                    for line in fh:
                        lines += 1  # the job's own count, a torn last line included
                        if not line.endswith("\n"):
                            break  # a torn last line of a killed job
                        rec = json.loads(line)
                        rec["client"] += lo
                        if corr:
                            s0, s1, d = corr
                            for key in _TIME_KEYS:
                                v = rec.get(key)
                                if v is not None:
                                    rec[key] = round(v - d * (v - s0) / (s1 - s0), 9)
                        buf.append(json.dumps(rec, separators=(",", ":")))
                        if len(buf) >= 10000:
                            out.write("\n".join(buf) + "\n")
                            total += len(buf)
                            buf = []
                if buf:
                    out.write("\n".join(buf) + "\n")
                    total += len(buf)
                self.jobs[k]["records"] = lines
        self.merged = True
        return total

    def merge_stats(self, stats0: dict) -> dict:
        """The run's load_stats: every job's merged by the one merge of the engine
        (aifb.load.merge: same sums, window, stop ranking and open-loop figures as for worker
        processes; a job that did not report is lost), job 0's own fields (client, prepare_s,
        its processes) kept, and every job's whole stats in client_jobs."""
        parts = [stats0] + [self.jobs[k].get("stats") for k in range(1, self.n)]
        lost = [{"client_job": k, "job_id": self.jobs[k]["job_id"]}
                for k, p in enumerate(parts) if not p]
        merged = merge.merge_stats([(p, None) if p else None for p in parts], blocks=self.blocks,
                                   pids=[j["job_id"] for j in self.jobs], load=self.settings,
                                   lost=lost, member="client_job")
        out = {**stats0, **merged}
        out["client_jobs"] = [{"k": k, "stats": p} for k, p in enumerate(parts)]
        starts = [p["t_load_start"] for p in parts if p and p.get("t_load_start") is not None]
        # Each job's engine starts at the common instant plus its own start-up time.
        out["client_jobs_start_spread_s"] = round(max(starts) - min(starts), 9) if starts else None
        return out

    def describe(self) -> dict:
        jobs = []
        for j in self.jobs:
            d = {k: v for k, v in j.items() if k not in ("stats",)}
            jobs.append(d)
        bound_ok = all((j.get("clock") or {}).get(w, {}).get("uncertainty_s", 0) <= self.bound_s
                       for j in self.jobs[1:] for w in ("start", "end"))
        return {
            "bad_messages": list(self.bad_messages),
            "coordinator_auth": "HMAC-SHA256 per message under a per-run token (clients/token, "
                                "mode 0600), fresh nonce per connection",
            "job_ids": [j["job_id"] for j in self.jobs if j["job_id"]],
            "hosts": [j["host"] or j["node"] for j in self.jobs],
            "nodes": [j["node"] for j in self.jobs],
            "jobs": jobs,
            "clock_sync": {
                "method": "NTP-style ping over the coordinator's TCP connection: the benchmark "
                          "job's monotonic time since t0 against the client job's monotonic "
                          f"clock, best of {SYNC_SAMPLES} round trips, before and after the load; "
                          "linear drift correction between the two",
                "bound_s": self.bound_s,
                "max_uncertainty_s": max([(j.get("clock") or {}).get(w, {}).get("uncertainty_s", 0)
                                          for j in self.jobs[1:] for w in ("start", "end")] or [0]),
                "within_bound": bound_ok,
            },
        }

    async def close(self) -> None:
        """Stop what is left of the client jobs (they write their records and exit), cancel
        any still in the queue, and merge whatever records they left if finish() did not."""
        if self.quota_task is not None:
            self.quota_task.cancel()
        for w in list(self.writers.values()):
            try:
                w.send({"stop": True})
            except Exception:
                pass
        if self.writers:
            try:
                await asyncio.wait_for(asyncio.gather(*(self.done[k].wait() for k in list(self.writers))), 15)
            except asyncio.TimeoutError:
                pass
        ids = [j["job_id"] for j in self.jobs[1:] if j.get("job_id")]
        for jid in ids:
            st = await asyncio.to_thread(job_state, jid)
            if is_active(st):
                await asyncio.sleep(0)
                await asyncio.to_thread(scancel, jid)
                self.log(f"client job Slurm {jid}: cancelled ({st['state']})")
        for j in self.jobs[1:]:
            if j.get("job_id"):
                st = await asyncio.to_thread(job_state, j["job_id"])
                j["state"] = st["state"] if st else None
        if self.server is not None:
            self.server.close()
        if not self.merged:
            n = await asyncio.to_thread(self.merge_records)
            if n:
                self.log(f"kept {n} records of the client jobs in requests.jsonl")


async def sleep_until(t_ns: int) -> None:
    from aifb.clock import now_ns

    left = (t_ns - now_ns()) / 1e9
    if left > 0.002:
        await asyncio.sleep(left - 0.002)
    while now_ns() < t_ns:
        await asyncio.sleep(0)


# --------------------------------------------------------------------------- client job side

async def _client_job(run_dir: Path, k: int, log) -> int:
    from aifb.clients import get_client, register
    from aifb.clock import RunClock, now_ns
    from aifb.load.engine import run_load
    from aifb.errors import AifbError
    from aifb.workflow.runner import service_secrets

    plan = read_json(run_dir / "clients" / "plan.json")
    token = read_token(run_dir / "clients" / TOKEN_FILE)
    me = plan["jobs"][k]
    host, port = plan["coordinator"]
    deadline = time.monotonic() + 60
    while True:
        try:
            reader, writer = await asyncio.open_connection(host, port, limit=MAX_LINE)
            break
        except OSError as exc:
            if time.monotonic() > deadline:
                log(f"cannot reach the benchmark job's coordinator at {host}:{port}: {exc}")
                return 1
            await asyncio.sleep(0.5)
    try:
        nonce = json.loads(await reader.readline())["nonce"]
    except (ValueError, KeyError, TypeError):
        log(f"the coordinator at {host}:{port} did not open with a nonce: not ours, stopping")
        return 1
    ch = Channel(token, str(nonce), reader, writer, side="client")
    main = asyncio.current_task()
    pongs: asyncio.Queue = asyncio.Queue()
    # requests: N is shared by all the jobs: report this job's measured count to the root
    share = RequestShare(lambda n: ch.send({"count": n}))
    go: asyncio.Future = asyncio.get_running_loop().create_future()
    finishing = {"now": False}

    async def read_loop():
        while True:
            try:
                msg = await ch.recv()
            except BadMessage as exc:
                log(f"the coordinator sent {exc}: stopping")
                break
            if msg is None:
                break
            if "pong" in msg:
                pongs.put_nowait(msg)
            elif "share" in msg:
                share.deliver(msg["share"], int(msg["t"]))
            elif "go" in msg and not go.done():
                go.set_result(int(msg["go"]))
            elif "stop" in msg:
                break
        if not finishing["now"]:
            log("the benchmark job closed the connection (or said stop): stopping")
            main.cancel()

    ch.send({"hello": k, "job_id": os.environ.get("SLURM_JOB_ID"),
             "node": os.environ.get("SLURMD_NODENAME") or socket.gethostname(),
             "host": socket.gethostname(), "pid": os.getpid()})
    await ch.drain()
    reader_task = asyncio.create_task(read_loop())

    async def sync() -> dict:
        best = None
        for i in range(SYNC_SAMPLES):
            t1 = now_ns()
            ch.send({"ping": i})
            msg = await pongs.get()
            t4 = now_ns()
            rtt = t4 - t1
            if best is None or rtt < best["rtt_ns"]:
                best = {"base_ns": (t1 + t4) // 2 - msg["t"], "uncertainty_ns": (rtt + 1) // 2,
                        "rtt_ns": rtt, "at_ns": msg["t"]}
        best["samples"] = SYNC_SAMPLES
        best["host"] = socket.gethostname()
        return best

    s0 = await sync()
    clock = RunClock(t0_ns=s0["base_ns"], t0_unix_ns=plan["t0_unix_ns"])
    log(f"clock sync: benchmark t0 = {s0['base_ns']} on this clock, +-{s0['uncertainty_ns'] / 1e3:.1f} us")
    kind = plan["kind"]
    base_cls = get_client(kind)
    # Job 0 preloads the service; this process's clients must not load it again.
    register(kind)(type(f"NoPreload{base_cls.__name__}", (base_cls,),
                        {"prepare": lambda self: asyncio.sleep(0)}))

    async def on_ready(info):
        ch.send({"ready": k, "sync": s0, "client": info.get("client")})
        await ch.drain()
        t = await go
        await sleep_until(clock.t0_ns + t)

    out_dir = run_dir / "clients" / str(k)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        from aifb.services import get_service

        secrets = service_secrets(plan["service"], get_service(kind))
        stats = await run_load(kind=kind, endpoint=plan["endpoint"], workload=plan["workload"],
                               load=me["load"], seed=me["seed"],
                               records_path=out_dir / "requests.jsonl", clock=clock,
                               secrets=secrets, log=log, on_ready=on_ready,
                               share=share if me["load"].get("requests") is not None else None,
                               identity={"benchmark_id": plan["benchmark_id"],
                                         "salt": plan.get("salt"),
                                         "client_offset": me["clients"][0]})
    except AifbError as exc:
        ch.send({"error": str(exc)})
        await ch.drain()
        log(f"FAILED: {exc}")
        return 1
    finishing["now"] = True
    s1 = await sync()
    ch.send({"done": k, "stats": stats, "sync": s1})
    await ch.drain()
    log(f"done: {stats['records_written']} records; clock drift since the start "
        f"{(s1['base_ns'] - s0['base_ns']) / 1e3:+.1f} us")
    reader_task.cancel()
    writer.close()
    return 0


def client_main(run_dir: str, k: str) -> int:
    import signal

    import uvloop

    def log(msg):
        print(f"[{process.wall_iso()}] client job {k}: {msg}", file=sys.stderr, flush=True)

    async def main():
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        return await _client_job(Path(run_dir).resolve(), int(k), log)

    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main())
    except asyncio.CancelledError:
        log("stopped (records so far are kept)")
        return 1


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "client":
        sys.exit(client_main(sys.argv[2], sys.argv[3]))
    print("usage: python -m aifb.slurm.launch client RUN_DIR K", file=sys.stderr)
    sys.exit(2)
