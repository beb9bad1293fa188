"""One pipeline run (recipe category: pipeline): deploy every service, all or nothing, drive the
pipeline client (aifb.clients.pipeline) with the load engine, tear every service down.

All or nothing: the services are deployed side by side; when one fails, the ones that started
are torn down and the run fails naming each service that did not start (and its log tail). Each
service's files are results/<id>/service-<name>/ (and locally its log results/<id>/service-<name>.log);
run.json's service.services.<name> is that service's describe(). On a Slurm target each service
is its own Slurm job (aifb.slurm.service_launcher, its files under service-<name>/; a service's
`partition: gpu` puts it on the target's gpu partition), the load runs here, in the benchmark's
process (no client jobs yet). Server telemetry is off for pipelines (run.json says so).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from aifb.credentials import service_secrets, with_run_password
from aifb.endpoints import redact
from aifb.errors import ServiceError
from aifb.load.engine import run_load
from aifb.load.settings import LoadSettings
from aifb.services import get_service
from aifb.slurm.service_launcher import SlurmServiceLauncher
from aifb.workflow.recipe import load_settings

KIND = "pipeline"


def is_pipeline(recipe: dict) -> bool:
    return recipe.get("category") == KIND


def service_record(recipe: dict) -> dict:
    """run.json's `service` block of a pipeline before anything starts."""
    services = recipe["services"]
    return {"kind": KIND, "name": recipe["name"],
            "managed": any(not s.get("endpoint") for s in services.values()),
            "endpoint": None,
            "services": {n: {"kind": s["kind"], "managed": not s.get("endpoint"),
                             "endpoint": redact(s.get("endpoint"))} for n, s in services.items()}}


class Deployed:
    """The pipeline's services: specs and secrets by name, the started ones, their endpoints."""

    def __init__(self, recipe: dict, run_dir: Path, target: dict, benchmark_id: str, log):
        self.run_dir, self.target, self.recipe = run_dir, target, recipe
        self.benchmark_id, self.log = benchmark_id, log
        self.specs, self.secrets, self.services, self.endpoints = {}, {}, {}, {}
        for name, svc in recipe["services"].items():
            cls = get_service(svc["kind"])
            spec = with_run_password(dict(svc, name=f"{recipe['name']}-{name}"), cls)
            self.specs[name] = (spec, cls)
            self.secrets[name] = service_secrets(spec, cls)
            if spec.get("endpoint"):
                self.endpoints[name] = spec["endpoint"]

    async def deploy(self, log) -> None:
        """Deploy every managed service side by side; on any failure tear the started ones
        down and raise ServiceError naming the ones that failed."""
        todo = {n: sc for n, sc in self.specs.items() if not sc[0].get("endpoint")}
        for name, (spec, cls) in todo.items():
            if self.target["executor"] == "slurm":   # each service its own Slurm job
                self.services[name] = SlurmServiceLauncher(
                    spec, self.run_dir, self.target, benchmark_id=self.benchmark_id,
                    recipe=self.recipe, log=self.log, service_dir=self.run_dir / f"service-{name}")
            else:
                self.services[name] = cls(spec, self.run_dir / f"service-{name}",
                                          self.run_dir / f"service-{name}.log")
        listing = ", ".join(f"{n} ({sc[0]['kind']})" for n, sc in todo.items())
        log(f"deploying {listing} ...")
        names = list(todo)
        results = await asyncio.gather(*(self.services[n].deploy() for n in names),
                                       return_exceptions=True)
        failed = {}
        for name, res in zip(names, results):
            if isinstance(res, BaseException):
                failed[name] = res
            else:
                self.endpoints[name] = res
                info = self.services[name].info
                where = f"Slurm job {info.job_id} on {info.node}, " if info.job_id else ""
                log(f"{name}: {info.kind} ready at {res} after {info.ready_s:.2f} s "
                    f"({where}pid {info.pid}, version {info.version})")
        if failed:
            await self.teardown()
            for exc in failed.values():
                if not isinstance(exc, Exception):
                    raise exc  # a cancellation: after the teardown above
            err = ServiceError("pipeline: " + "; ".join(
                f"service {n!r} ({todo[n][0]['kind']}) failed to start: {e}"
                for n, e in failed.items()) + "; the other services were torn down")
            err.log_tail = "\n".join(f"[{n}] {getattr(e, 'log_tail', '') or ''}"
                                     for n, e in failed.items())
            raise err

    def describe(self) -> dict:
        return {n: svc.describe() for n, svc in self.services.items()}

    def dead(self) -> list[str]:
        return [f"service {n!r}: {svc.death_reason()}" for n, svc in self.services.items()
                if not svc.alive()]

    async def teardown(self) -> None:
        await asyncio.gather(*(asyncio.shield(s.teardown()) for s in self.services.values()),
                             return_exceptions=True)

    def workload(self, recipe: dict) -> dict:
        """The pipeline client's workload: the recipe's, with each service's kind and endpoint."""
        return {**recipe["workload"], "endpoints": dict(self.endpoints),
                "kinds": {n: sc[0]["kind"] for n, sc in self.specs.items()}}


async def benchmark(run: dict, run_dir: Path, clock, log, target: dict, *, save, identity,
                    stats_out: dict, live=None) -> tuple[dict, list[str]]:
    """Deploy, load, tear down; returns (load_stats, the services that died during the load);
    raises ServiceError on a failed start.
    `save(run_dir, run)` checkpoints run.json; `identity` is the run's for its clients; `live`
    (aifb.load.live.LiveLoad or None) the progress file's figures."""
    recipe = run["recipe"]
    run["telemetry"] = None  # not yet for pipelines (docs/pipelines.md)
    deployed = Deployed(recipe, run_dir, target, run["benchmark_id"], log)
    try:
        try:
            await deployed.deploy(log)
        finally:
            for name, desc in deployed.describe().items():
                run["service"]["services"][name].update(desc)
            save(run_dir, run)
        settings = load_settings(recipe)
        if live is not None:
            live.plan(LoadSettings.of(settings))
        stats = await run_load(kind=KIND, endpoint="pipeline", workload=deployed.workload(recipe),
                               load=settings, seed=recipe.get("seed", 42),
                               records_path=run_dir / "requests.jsonl", clock=clock,
                               secrets=deployed.secrets, log=log, stats_out=stats_out,
                               identity=identity, live=live)
        return stats, deployed.dead()
    finally:
        await deployed.teardown()
        for name, desc in deployed.describe().items():
            run["service"]["services"][name].update(desc)
