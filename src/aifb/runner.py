"""One benchmark, start to finish: run.json first, deploy, load, teardown, run.json last.

run.json is written (atomically) before anything starts and rewritten at each step, so a crash
leaves a file that says how far the run got. The service is torn down on success, failure and
interruption (SIGINT/SIGTERM cancel the load; records written so far are kept). Benchmark-level
failures (service won't start, endpoint unreachable) are results, not crashes: run.json says
`failed` with the reason and the service's log tail, and the function returns normally.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import shutil
import signal
import socket
import sys
import traceback
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from . import provenance, registry
from .clock import RunClock
from .errors import AifbError, ServiceError
from .jsonio import read_json, write_json
from .paths import work_root
from .recipe import load_settings, recipe_hash

RUN_FILES = ("run.json", "requests.jsonl", "summary.json", "service.log")


def redact_url(url: str | None) -> str | None:
    """Drop any password from a URL (redis://:secret@host -> redis://:***@host)."""
    if not url or "@" not in url:
        return url
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit((parts.scheme, f"{user}:***@{netloc}", parts.path, parts.query, parts.fragment))


def load_secrets(service: dict) -> dict:
    """Secrets come from the environment or a file the recipe names, never from the recipe."""
    secrets = {}
    env = service.get("password_env")
    if env:
        if env not in os.environ:
            raise ServiceError(f"service.password_env names {env}, which is not set in the environment")
        secrets["password"] = os.environ[env]
    path = service.get("password_file")
    if path:
        try:
            secrets["password"] = Path(path).expanduser().read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ServiceError(f"service.password_file {path}: {exc.strerror}") from None
    return secrets


def _now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def _next_attempt_dir(run_dir: Path) -> Path:
    n = 1
    while (run_dir / "attempts" / str(n)).exists():
        n += 1
    return run_dir / "attempts" / str(n)


def keep_attempt(run_dir: Path) -> Path | None:
    """Hard-link this attempt's files into attempts/<n>/ so that Snakemake, which deletes the
    outputs of an interrupted job, cannot take the records with it."""
    present = [f for f in RUN_FILES if (run_dir / f).exists()]
    if not present:
        return None
    dest = _next_attempt_dir(run_dir)
    dest.mkdir(parents=True)
    for f in present:
        try:
            os.link(run_dir / f, dest / f)
        except OSError:
            shutil.copy2(run_dir / f, dest / f)
    return dest


def archive_previous_attempt(run_dir: Path) -> Path | None:
    """Files left by an earlier attempt are moved to attempts/<n>/, never overwritten (files
    that keep_attempt already linked there are just unlinked here)."""
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
    service = recipe["service"]
    return {
        "benchmark_id": benchmark_id,
        "created_at": _now_iso(),
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
        "service": {"kind": service["kind"], "name": recipe["name"],
                    "managed": not service.get("endpoint"),
                    "endpoint": redact_url(service.get("endpoint"))},
        "clients": {
            "count": load["clients"],
            "concurrency": load.get("concurrency", 1),
            "workers": load["clients"] * load.get("concurrency", 1),
            "mode": "open" if load.get("rate") else "closed",
            "job_ids": [os.environ["SLURM_JOB_ID"]] if os.environ.get("SLURM_JOB_ID") else [],
            "hosts": [socket.gethostname()],
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


async def _benchmark(run: dict, run_dir: Path, clock: RunClock, log) -> None:
    from .engine import run_load
    from .services import get_service

    recipe = run["recipe"]
    spec = dict(recipe["service"], name=recipe["name"])
    records_path = run_dir / "requests.jsonl"
    records_path.touch()
    run_json = run_dir / "run.json"
    service = None
    try:
        service_cls = get_service(spec["kind"])  # an unimplemented kind stops here, clearly
        secrets = load_secrets(spec)
        endpoint = spec.get("endpoint")
        if not endpoint:
            service = service_cls(spec, run_dir / "service", run_dir / "service.log")
            log(f"deploying {spec['kind']} ...")
            try:
                endpoint = await service.deploy()
            finally:
                run["service"].update(service.describe())
                write_json(run_json, run)
            log(f"{spec['kind']} ready at {endpoint} after {service.info.ready_s:.2f} s "
                f"(pid {service.info.pid}, version {service.info.version})")
        settings = load_settings(recipe)
        log(f"load: {settings['clients']} client(s) x {settings['concurrency']} in flight, "
            + (f"{settings['duration_s']:g} s" if settings["duration_s"] else f"{settings['requests']} requests")
            + f" after {settings['warmup_s']:g} s warmup")
        stats = await run_load(kind=spec["kind"], endpoint=endpoint, workload=recipe.get("workload") or {},
                               load=settings, seed=recipe.get("seed", 42), records_path=records_path,
                               clock=clock, secrets=secrets, log=log)
        run["load_stats"] = stats
        run["clients"]["implementation"] = stats.get("client")
        if service is not None and not service.alive():
            run["status"], run["reason"] = "partial", (
                f"the {spec['kind']} service died during the run (exit code "
                f"{service.proc.returncode}); records up to then are kept")
        elif stats.get("stopped_by") not in ("duration", "requests"):
            run["status"], run["reason"] = "partial", f"load stopped early: {stats.get('stopped_by')}"
        else:
            run["status"] = "completed"
    except asyncio.CancelledError:
        run["status"] = "partial" if records_path.stat().st_size else "failed"
        run["reason"] = f"interrupted by {run.get('_signal', 'cancellation')}; records up to then are kept"
        raise
    except AifbError as exc:
        run["status"], run["reason"] = "failed", str(exc)
        if getattr(exc, "log_tail", None):
            run["service"]["log_tail"] = exc.log_tail
        log(f"FAILED: {exc}")
    except Exception as exc:  # a bug in the harness: keep the traceback in the log, say so in run.json
        run["status"], run["reason"] = "failed", f"internal error: {type(exc).__name__}: {exc}"
        log(traceback.format_exc())
    finally:
        if service is not None:
            try:
                await asyncio.shield(service.teardown())
            finally:
                run["service"].update(service.describe())


def run_benchmark(benchmark_id: str, *, root: Path | None = None, log=None) -> dict:
    """Run a registered benchmark into results/<id>/; returns the final run.json."""
    import uvloop

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
    write_json(run_dir / "run.json", run)
    log(f"{benchmark_id}: {entry['recipe']['name']} -> {run_dir}")

    async def main():
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            def on_signal(sig=sig):
                run["_signal"] = signal.Signals(sig).name
                task.cancel()
            loop.add_signal_handler(sig, on_signal)
        await _benchmark(run, run_dir, clock, log)

    interrupted = None
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main())
    except (asyncio.CancelledError, KeyboardInterrupt):
        interrupted = run.get("_signal", "SIGINT")
    finally:
        run.pop("_signal", None)
        run["finished_at"] = _now_iso()
        if run["status"] == "running":
            run["status"], run["reason"] = "failed", run["reason"] or "the harness stopped unexpectedly"
        write_json(run_dir / "run.json", run)
        log(f"{benchmark_id}: {run['status']}" + (f" ({run['reason']})" if run["reason"] else ""))
        if interrupted or sys.exc_info()[0] is not None:
            kept = keep_attempt(run_dir)
            log(f"this attempt's files are kept in {kept}")
    if interrupted:
        raise KeyboardInterrupt(interrupted)
    return run


def read_run(run_dir: Path) -> dict:
    return read_json(Path(run_dir) / "run.json")
