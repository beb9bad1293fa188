"""A managed service as its own Slurm job, seen from the benchmark job (SlurmServiceLauncher).

For a managed service on a Slurm target the benchmark job (client job 0: the Snakemake
`run_benchmark` job, or the process running aifb.workflow.runner) does:

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
backstop; `aifb cleanup` finds what is left (by the comment commands.job_comment() sets).
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from aifb import process
from aifb.errors import ServiceError
from aifb.jsonio import read_json, write_json
from aifb.services.base import ServiceInfo
from aifb.slurm.channel import write_token
from aifb.slurm.commands import (JOB_PREFIX, is_active, job_comment, job_script, job_state,
                                 mem_option, owner_tag, sbatch, scancel, site_options,
                                 slurm_available)
from aifb.slurm.service_telemetry import TOKEN_FILE as TELEMETRY_TOKEN
from aifb.slurm.service_telemetry import RemoteSampler
from aifb.slurm.targets import (DEFAULT_QUEUE_TIMEOUT_S, check_shared, service_how,
                                service_runtime_minutes)
from aifb.telemetry import launch as telemetry_launch
from aifb.units import parse_duration


class SlurmServiceLauncher:
    """A managed service as its own Slurm job; the same lifecycle as LocalProcessService
    (deploy / alive / describe / teardown), so the runner treats both alike."""

    POLL_FILE_S = 0.2
    POLL_QUEUE_S = 2.0
    STOP_WAIT_S = 90.0

    def __init__(self, spec: dict, run_dir: Path, target: dict, *, benchmark_id: str,
                 recipe: dict, log=None, on_submit=None, service_dir: Path | None = None):
        """service_dir: where this service's job files go (service-job.json, service.json,
        service.log, logs/), default run_dir; a pipeline gives each service its own."""
        self.kind = spec["kind"]
        self.spec = spec
        self.results_dir = Path(run_dir)   # the run's: the job's comment names it (cleanup)
        self.run_dir = Path(service_dir or run_dir)
        self.target = target
        self.benchmark_id = benchmark_id
        self.recipe = recipe
        self.log = log or (lambda m: None)
        self.on_submit = on_submit
        self.how = service_how(target, self.kind)
        self.job_id: str | None = None
        self.last_state: dict | None = None
        self.telemetry_address: dict | None = None   # the service job's sampler, when on
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
                f"--comment={job_comment(self.results_dir)}",
                f"--time={minutes}", "--nodes=1", "--ntasks=1",
                f"--cpus-per-task={int(res.get('cpus') or 1)}",
                f"--chdir={self.run_dir}",
                f"--output={self.run_dir / 'logs' / 'service-job-%j.out'}"]
        mem = mem_option(res.get("mem"))
        if mem:
            opts.append(f"--mem={mem}")
        return opts + site_options(self.target, gpus=gpus, role=self.spec.get("partition"),
                                   partition=self.how.get("partition"))

    def request(self) -> dict:
        spec = dict(self.spec)
        if self.spec.get("binary") is None and self.how.get("binary"):
            spec["binary"] = self.how["binary"]
        return {"benchmark_id": self.benchmark_id, "kind": self.kind, "spec": spec,
                "how": self.how, "target": self.target["name"],
                "bind": self.target.get("bind", "auto"),
                "scratch_dir": self.target.get("scratch_dir"),
                "owner": owner_tag(), "image": self.info.image,
                "telemetry": telemetry_launch.settings(self.recipe),
                "written_at": process.wall_iso()}

    # -- lifecycle ----------------------------------------------------------------------
    async def deploy(self) -> str:
        if not slurm_available():
            raise ServiceError(f"target {self.target['name']!r} runs services as Slurm jobs, but "
                               "sbatch/squeue/scancel are not on PATH here")
        check_shared(self.target, self.run_dir)
        (self.run_dir / "logs").mkdir(parents=True, exist_ok=True)
        for stale in ("service.json", TELEMETRY_TOKEN):
            (self.run_dir / stale).unlink(missing_ok=True)
        request = self.request()
        if request["telemetry"]:
            write_token(self.run_dir / TELEMETRY_TOKEN)
        write_json(self.run_dir / "service-job.json", request)
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
        self.telemetry_address = doc.get("telemetry")
        for key in ("exposure", "auth"):  # who may use it, as the service job found
            if (svc.get("extra") or {}).get(key):
                self.info.extra[key] = svc["extra"][key]
        self.ready = True
        return self.info.endpoint

    async def start_telemetry(self, t0_ns: int, interval_s: float) -> RemoteSampler:
        """The sampler inside the service job, on the service's node, on the run's time base."""
        return await RemoteSampler.start(
            self.run_dir, self.telemetry_address, t0_ns, interval_s,
            f"in the Slurm service job {self.job_id}, on the service's node {self.info.node}")

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

    COMPLETING_WAIT_S = 15.0

    def final_state(self) -> dict | None:
        """The job's state once it is past COMPLETING, which a cancelled job shows while its
        processes stop (seen here for seconds after an scancel: squeue says COMPLETING, not
        CANCELLED); up to COMPLETING_WAIT_S, else the last state seen. Blocking: called once,
        after the load."""
        st = self.last_state
        deadline = time.monotonic() + self.COMPLETING_WAIT_S
        while st is not None and st["state"] == "COMPLETING" and time.monotonic() < deadline:
            time.sleep(0.5)
            try:
                st = job_state(self.job_id)
            except ServiceError:
                break
        self.last_state = st
        return st

    def death_reason(self) -> str:
        st = self.final_state()
        doc = self._read_doc() or {}
        if st is None:
            why = "Slurm no longer knows it"
        else:
            why = f"Slurm state {st['state']}: " + self.STATE_WORDS.get(st["state"], "it is no longer running")
            if st["reason"] not in ("", "None"):
                why += f" (reason {st['reason']})"
        if doc.get("status") == "exited":
            why += f"; {doc.get('reason')}"
        elif doc.get("status") == "stopped":   # its own account: the signal, or its owner gone
            why += f"; the service job: {doc.get('reason')}"
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
        (self.run_dir / TELEMETRY_TOKEN).unlink(missing_ok=True)   # its port is closed now
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
