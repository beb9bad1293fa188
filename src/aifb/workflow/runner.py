"""One benchmark, start to finish: run.json first, deploy, load, teardown, run.json last.

run.json is written (atomically) before anything starts and rewritten at each step, so a crash
leaves a file that says how far the run got. The service is torn down on success, failure and
interruption (SIGINT/SIGTERM cancel the load; records written so far are kept). Benchmark-level
failures (service won't start, endpoint unreachable) are results, not crashes: run.json says
`failed` with the reason and the service's log tail, and the function returns normally.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import sys
import traceback
from pathlib import Path

import uvloop

from aifb import process, provenance, telemetry
from aifb.clock import RunClock
from aifb.credentials import service_secrets, with_run_password
from aifb.endpoints import redact
from aifb.errors import AifbError
from aifb.jsonio import read_json, write_json
from aifb.load.engine import run_load
from aifb.load.live import LiveLoad
from aifb.load.settings import LoadSettings
from aifb.clients.base import new_salt
from aifb.paths import work_root
from aifb.progress import ProgressFile
from aifb.records import INFLIGHT
from aifb.services import get_service
from aifb.slurm.client_jobs import ClientJobs, client_job_count
from aifb.slurm.service_launcher import SlurmServiceLauncher
from aifb.slurm.service_telemetry import RemoteSampler
from aifb.slurm.targets import get_target
from aifb.telemetry import launch as telemetry_launch
from aifb.workflow import pipeline_run, registry
from aifb.workflow.recipe import load_settings, recipe_hash

RUN_FILES = ("run.json", "requests.jsonl", "summary.json", "service.log", "service.json",
             "service-job.json", "telemetry.jsonl", "telemetry.log")


def _next_attempt_dir(run_dir: Path) -> Path:
    n = 1
    while (run_dir / "attempts" / str(n)).exists():
        n += 1
    return run_dir / "attempts" / str(n)


# INFLIGHT (aifb.records): a second hard link to requests.jsonl while the run writes it, so that
# the records survive for keep_attempt(). Likewise the latest run.json (a copy: run.json is
# replaced by rename, which a link can't follow), so that an attempt killed outright (SIGKILL,
# OOM) can still say what it was.
INFLIGHT_RUN = ".run.json.inflight"


def save_run(run_dir: Path, run: dict) -> None:
    write_json(run_dir / "run.json", run)
    write_json(run_dir / INFLIGHT_RUN, run)


def _records_size(run_dir: Path) -> int:
    for name in ("requests.jsonl", INFLIGHT):
        try:
            return (run_dir / name).stat().st_size
        except OSError:
            continue
    return 0


def keep_attempt(run_dir: Path) -> Path | None:
    """Hard-link this attempt's files into attempts/<n>/ so that Snakemake, which deletes the
    outputs of an interrupted job, cannot take the records with it."""
    present = [f for f in RUN_FILES if (run_dir / f).exists()]
    shadow = run_dir / INFLIGHT
    if "requests.jsonl" not in present and shadow.exists():
        present.append(INFLIGHT)
    if not present:
        return None
    dest = _next_attempt_dir(run_dir)
    dest.mkdir(parents=True)
    for f in present:
        name = "requests.jsonl" if f == INFLIGHT else f
        try:
            os.link(run_dir / f, dest / name)
        except OSError:
            shutil.copy2(run_dir / f, dest / name)
    return dest


def archive_previous_attempt(run_dir: Path) -> Path | None:
    """Files left by an earlier attempt are moved to attempts/<n>/, never overwritten (files
    that keep_attempt already linked there are just unlinked here)."""
    shadow = run_dir / INFLIGHT
    if shadow.exists():  # an attempt that was killed outright
        if not (run_dir / "requests.jsonl").exists():
            os.link(shadow, run_dir / "requests.jsonl")
        shadow.unlink()
    shadow_run = run_dir / INFLIGHT_RUN
    if shadow_run.exists():
        if not (run_dir / "run.json").exists():
            last = read_json(shadow_run)
            if last.get("status") == "running":  # it never wrote its final status
                last["status"] = "partial" if _records_size(run_dir) else "failed"
                last["reason"] = ("the benchmark process was killed before it finished (no final "
                                  "status was written); the records up to then are kept")
            write_json(run_dir / "run.json", last)
        shadow_run.unlink()
    present = [f for f in RUN_FILES if (run_dir / f).exists()]
    if not present:
        return None
    if all((run_dir / f).stat().st_nlink > 1 for f in present):
        for f in present:
            (run_dir / f).unlink()
        return None
    dest = _next_attempt_dir(run_dir)
    dest.mkdir(parents=True)
    for f in present:
        shutil.move(str(run_dir / f), dest / f)
    return dest


def initial_run_record(benchmark_id: str, entry: dict, clock: RunClock) -> dict:
    recipe = entry["recipe"]
    load = recipe["load"]
    if pipeline_run.is_pipeline(recipe):
        service_block = pipeline_run.service_record(recipe)
    else:
        service = recipe["service"]
        service_block = {"kind": service["kind"], "name": recipe["name"],
                         "managed": not service.get("endpoint"),
                         "endpoint": redact(service.get("endpoint"))}
    return {
        "benchmark_id": benchmark_id,
        "created_at": process.wall_iso(),
        "finished_at": None,
        "status": "running",
        "reason": None,
        **provenance.git_state(),
        "recipe_hash": recipe_hash(recipe),
        "recipe": recipe,
        "recipe_path": entry.get("recipe_path"),
        "overrides": entry.get("overrides", []),
        "sweep": entry.get("sweep"),
        "rerun_of": entry.get("rerun_of"),
        "target": recipe.get("target", "local"),
        "service": service_block,
        "clients": {
            "count": load["clients"],
            "concurrency": load.get("concurrency", 1),
            "workers": load["clients"] * load.get("concurrency", 1),
            "mode": "open" if load.get("rate") else "closed",
            "job_ids": [os.environ["SLURM_JOB_ID"]] if os.environ.get("SLURM_JOB_ID") else [],
            "hosts": [socket.gethostname()],
            "nodes": [os.environ["SLURMD_NODENAME"]] if os.environ.get("SLURMD_NODENAME") else [],
            "pids": [os.getpid()],
            "command": [sys.executable, *sys.argv],
            "workflow_command": provenance.parent_command("snakemake"),
            "invocation": os.environ.get("AIFB_INVOCATION"),
            "implementation": None,
        },
        "environment": provenance.environment(),
        "clock": clock.describe(),
        "load_stats": None,
    }


class _Interrupted(Exception):
    pass


def _target_record(target: dict) -> dict:
    """What run.json keeps of the target (its name is `target`): executor and site settings."""
    keep = ("executor", "description", "partitions", "slurm", "bind", "shared_dir", "scratch_dir",
            "service_margin", "queue_timeout", "clients")
    return {k: target[k] for k in keep if k in target}


# -- server telemetry (aifb.telemetry): a sampler process from deploy to teardown ----------
async def _start_telemetry(run: dict, run_dir: Path, clock: RunClock, service_cls, endpoint: str,
                           service, target: dict, secrets: dict, log):
    """Start the sampler beside the service (None when the recipe says `telemetry: false`).
    For a service deployed as a Slurm job it runs inside that job, on the service's node
    (aifb.slurm.service_telemetry); for an existing endpoint on a Slurm target it runs here,
    in the benchmark job, and reads the service's own interfaces only: process, node and GPU
    sources need the service's node. Telemetry never fails the run: a sampler that cannot be
    started is said in run.json and the log."""
    cfg = telemetry_launch.settings(run["recipe"])
    if cfg is None:
        run["telemetry"] = None
        return None
    if isinstance(service, SlurmServiceLauncher) and service.telemetry_address:
        try:
            sampler = await service.start_telemetry(clock.t0_ns, cfg["interval_s"])
        except Exception as exc:   # OSError, a timeout, BadMessage: the run goes on without
            run["telemetry"] = {"file": telemetry.TELEMETRY_FILE, "interval_s": cfg["interval_s"],
                                "status": "failed", "reason": f"{type(exc).__name__}: {exc}"}
            log(f"telemetry: the service job's sampler did not start ({run['telemetry']['reason']})")
            return None
        run["telemetry"] = {"file": telemetry.TELEMETRY_FILE, "interval_s": cfg["interval_s"],
                            "sources": sampler.sources, "pid": sampler.pid, "status": "running",
                            "clock": sampler.clock, "placement": sampler.where}
        save_run(run_dir, run)
        log(f"telemetry: sampler in the service job (pid {sampler.pid} on {service.info.node}), "
            f"clock offset {sampler.clock['start']['offset_ns'] / 1e6:+.3f} ms "
            f"+-{sampler.clock['start']['uncertainty_s'] * 1e3:.3f} ms")
        return sampler
    local = target["executor"] != "slurm"
    pid = service.info.pid if (service is not None and local) else None
    own = service_cls.telemetry_sources(endpoint, secrets,
                                        service.info.extra if service is not None else {})
    sources = telemetry_launch.plan(own, pid=pid, local=local)
    sampler = telemetry_launch.Sampler.start(run_dir, clock.t0_ns, cfg["interval_s"], sources,
                                             log_path=run_dir / "telemetry.log")
    run["telemetry"] = {"file": telemetry.TELEMETRY_FILE, "interval_s": cfg["interval_s"],
                        "sources": telemetry_launch.public(sources), "pid": sampler.proc.pid,
                        "status": "running"}
    save_run(run_dir, run)
    log(f"telemetry: {len(sources) + 1} source(s) every {cfg['interval_s']:g} s "
        f"(pid {sampler.proc.pid})")
    return sampler


def run_identity(run: dict) -> dict:
    """The run's identity for its clients (aifb.load.startup.run_identity): the benchmark id (in
    request ids) and one random salt per run, kept in run.json (`salt`: an LLM workload with
    cache: cold prefixes every prompt with it, so no earlier run's cache helps)."""
    if not run.get("salt"):
        run["salt"] = new_salt()
    return {"benchmark_id": run["benchmark_id"], "salt": run["salt"], "client_offset": 0}


async def _benchmark(run: dict, run_dir: Path, clock: RunClock, log, root: Path | None = None,
                     live: LiveLoad | None = None) -> None:
    recipe = run["recipe"]
    if pipeline_run.is_pipeline(recipe):
        await _pipeline(run, run_dir, clock, log, root, live)
        return
    spec = dict(recipe["service"], name=recipe["name"])
    records_path = run_dir / "requests.jsonl"
    service = client_jobs = sampler = None
    stats_out: dict = {}
    try:
        service_cls = get_service(spec["kind"])  # an unimplemented kind stops here, clearly
        target = get_target(run["target"], root)  # an unknown target too
        run["target_config"] = _target_record(target)
        spec = with_run_password(spec, service_cls)  # no open PostgreSQL or Redis
        secrets = service_secrets(spec, service_cls)
        endpoint = spec.get("endpoint")
        if not endpoint:
            if target["executor"] == "slurm":
                def checkpoint():  # the job ID is in run.json before we wait for the job
                    run["service"].update(service.describe())
                    save_run(run_dir, run)

                service = SlurmServiceLauncher(spec, run_dir, target, benchmark_id=run["benchmark_id"],
                                               recipe=recipe, log=log, on_submit=checkpoint)
            else:
                service = service_cls(spec, run_dir / "service", run_dir / "service.log")
            log(f"deploying {spec['kind']} ...")
            try:
                endpoint = await service.deploy()
            finally:
                run["service"].update(service.describe())
                save_run(run_dir, run)
            where = (f"Slurm job {service.info.job_id} on {service.info.node}, "
                     if service.info.job_id else "")
            log(f"{spec['kind']} ready at {endpoint} after {service.info.ready_s:.2f} s "
                f"({where}pid {service.info.pid}, version {service.info.version})")
        sampler = await _start_telemetry(run, run_dir, clock, service_cls, endpoint, service, target,
                                         secrets, log)
        settings = load_settings(recipe)
        log(f"load: {settings['clients']} client(s) x {settings['concurrency']} in flight, "
            + (f"{settings['duration_s']:g} s" if settings["duration_s"] else f"{settings['requests']} requests")
            + f" after {settings['warmup_s']:g} s warmup")
        load0, on_ready, share = settings, None, None
        if target["executor"] == "slurm":
            if client_job_count(settings, target) > 1:
                client_jobs = ClientJobs(run=run, run_dir=run_dir, target=target, endpoint=endpoint,
                                         settings=settings, recipe=recipe, clock=clock, log=log,
                                         service=spec, salt=run_identity(run)["salt"])
                await client_jobs.start()
                run["clients"].update(client_jobs.describe())
                save_run(run_dir, run)
                load0, on_ready = client_jobs.load_for(0), client_jobs.barrier
                share = client_jobs.share0
        if live is not None:
            live.plan(LoadSettings.of(settings))
            if client_jobs is not None:   # the live figures are this job's clients' only
                lo, hi = client_jobs.blocks[0]
                live.pfile.update(part=f"clients {lo + 1}-{hi} of {settings['clients']}")
        # Filled by the engine also when the load is cancelled: an interrupted run keeps its
        # window (warmup_end / measure_end), so its summary never falls back to the records'
        # extent, which would include the warmup.
        stats = await run_load(kind=spec["kind"], endpoint=endpoint, workload=recipe.get("workload") or {},
                               load=load0, seed=recipe.get("seed", 42), records_path=records_path,
                               clock=clock, secrets=secrets, log=log, on_ready=on_ready,
                               stats_out=stats_out, share=share, identity=run_identity(run),
                               live=live)
        if client_jobs is not None:
            stats = await client_jobs.finish(stats)
            run["clients"].update(client_jobs.describe())
        if client_jobs is not None and client_jobs.problems:
            problem = "; ".join(client_jobs.problems)
        elif service is not None and not service.alive():
            problem = f"{service.death_reason()}; records up to then are kept"
        else:
            problem = None
        _finish_load(run, stats, problem)
    except asyncio.CancelledError:
        _cancelled(run, run_dir, stats_out)
        raise
    except Exception as exc:
        _failed(run, exc, log)
    finally:
        if client_jobs is not None:
            try:
                await asyncio.shield(client_jobs.close())
            except Exception:
                log(traceback.format_exc())
            run["clients"].update(client_jobs.describe())
        if sampler is not None:   # before the teardown: a stopped service is not a gap
            try:
                stop = (sampler.stop() if isinstance(sampler, RemoteSampler)
                        else asyncio.to_thread(sampler.stop))
                run["telemetry"] = await asyncio.shield(stop)
            except Exception:
                log(traceback.format_exc())
        if service is not None:
            try:
                await asyncio.shield(service.teardown())
            finally:
                run["service"].update(service.describe())


async def _pipeline(run: dict, run_dir: Path, clock: RunClock, log, root: Path | None,
                    live: LiveLoad | None) -> None:
    """_benchmark for a pipeline recipe (aifb.workflow.pipeline_run), with the same statuses."""
    stats_out: dict = {}
    try:
        target = get_target(run["target"], root)
        run["target_config"] = _target_record(target)
        stats, died = await pipeline_run.benchmark(run, run_dir, clock, log, target,
                                                   save=save_run, identity=run_identity(run),
                                                   stats_out=stats_out, live=live)
        _finish_load(run, stats, "; ".join(died) + "; records up to then are kept" if died else None)
    except asyncio.CancelledError:
        _cancelled(run, run_dir, stats_out)
        raise
    except Exception as exc:
        _failed(run, exc, log)


def _finish_load(run: dict, stats: dict, problem: str | None) -> None:
    """run.json's load_stats, client facts and status after a load: partial with `problem`
    (a service died, a client job failed) or when the load stopped early, else completed."""
    run["load_stats"] = stats
    run["clients"]["implementation"] = stats.get("client")
    run["clients"]["processes"] = stats.get("processes", 1)
    run["clients"]["pids"] += [p["pid"] for p in stats.get("process_stats", [])]
    if problem:
        run["status"], run["reason"] = "partial", problem
    elif stats.get("stopped_by") not in ("duration", "requests"):
        run["status"], run["reason"] = "partial", f"load stopped early: {stats.get('stopped_by')}"
    else:
        run["status"] = "completed"


def _failed(run: dict, exc: Exception, log) -> None:
    """A benchmark-level failure (AifbError: a service that won't start, an unreachable
    endpoint) is a result; anything else is a bug in the harness: its traceback goes to the
    log and run.json says so."""
    if isinstance(exc, AifbError):
        run["status"], run["reason"] = "failed", str(exc)
        if getattr(exc, "log_tail", None):
            run["service"]["log_tail"] = exc.log_tail
        log(f"FAILED: {exc}")
    else:
        run["status"], run["reason"] = "failed", f"internal error: {type(exc).__name__}: {exc}"
        log(traceback.format_exc())


def _cancelled(run: dict, run_dir: Path, stats_out: dict) -> None:
    if stats_out:
        run["load_stats"] = dict(stats_out, stopped_by="cancelled")
    run["status"] = "partial" if _records_size(run_dir) else "failed"
    run["reason"] = f"interrupted by {run.get('_signal', 'cancellation')}; records up to then are kept"


def run_benchmark(benchmark_id: str, *, root: Path | None = None, log=None) -> dict:
    """Run a registered benchmark into results/<id>/; returns the final run.json."""
    root = root or work_root()
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    entry = registry.get(benchmark_id, root)
    run_dir = root / "results" / benchmark_id
    run_dir.mkdir(parents=True, exist_ok=True)
    moved = archive_previous_attempt(run_dir)
    if moved:
        log(f"an earlier attempt's files were kept in {moved}")
    clock = RunClock()
    run = initial_run_record(benchmark_id, entry, clock)
    pfile = ProgressFile.for_benchmark(benchmark_id)
    recipe = entry["recipe"]
    # a pipeline has services, not one service: its progress line says "pipeline"
    pfile.update(phase="deploying", kind=(pipeline_run.KIND if pipeline_run.is_pipeline(recipe)
                                          else recipe["service"]["kind"]))
    live = LiveLoad(pfile) if pfile.enabled else None
    save_run(run_dir, run)
    log(f"{benchmark_id}: {entry['recipe']['name']} -> {run_dir}")
    (run_dir / "requests.jsonl").touch()
    try:
        os.link(run_dir / "requests.jsonl", run_dir / INFLIGHT)
    except OSError:
        pass  # a filesystem without hard links: keep_attempt copies what is there

    async def main():
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            def on_signal(sig=sig):
                # Only the first signal cancels. Further ones (Slurm's SIGTERM is often followed
                # by Snakemake's SIGINT, and users press Ctrl-C twice) must not cancel the
                # teardown that the first one started, or the service outlives the benchmark.
                # The teardown is bounded; SIGKILL remains the last resort.
                name = signal.Signals(sig).name
                if "_signal" in run:
                    log(f"{name} received while stopping after {run['_signal']}: "
                        "finishing the teardown first")
                    return
                run["_signal"] = name
                task.cancel()
            loop.add_signal_handler(sig, on_signal)
        await _benchmark(run, run_dir, clock, log, root, live)

    interrupted = None
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main())
    except (asyncio.CancelledError, KeyboardInterrupt):
        interrupted = run.get("_signal", "SIGINT")
    finally:
        run.pop("_signal", None)
        run["finished_at"] = process.wall_iso()
        if run["status"] == "running":
            run["status"], run["reason"] = "failed", run["reason"] or "the harness stopped unexpectedly"
        write_json(run_dir / "run.json", run)
        (run_dir / INFLIGHT_RUN).unlink(missing_ok=True)
        log(f"{benchmark_id}: {run['status']}" + (f" ({run['reason']})" if run["reason"] else ""))
        if interrupted or sys.exc_info()[0] is not None:
            kept = keep_attempt(run_dir)
            log(f"this attempt's files are kept in {kept}")
        (run_dir / INFLIGHT).unlink(missing_ok=True)
    if interrupted:
        raise KeyboardInterrupt(interrupted)
    return run


def read_run(run_dir: Path) -> dict:
    return read_json(Path(run_dir) / "run.json")
