"""Sweeps: a recipe varied over one parameter (load.clients first), one benchmark ID per point.

A sweep in config/config.yaml gives either one recipe file per level (`points:`, as the seed
does) or a base recipe with `levels:`; `repeats` measures each level several times. Each point
(sweep name, version, level, repeat) maps to a registered benchmark ID that is stable: asking
again returns the same ID. Re-measuring is explicit: bump the sweep's `version`, or pass
`--config remeasure=true` (a new epoch of IDs for every point).

Why NON_EXEC_FLAGS sniffs Snakemake's argv: a sweep point's benchmark ID is registered while
Snakemake builds its DAG (workflow/rules/common.smk, the input function of the sweep targets),
because the IDs are the sweep's file names and Snakemake needs every file name before it
plans. A dry run, a lint or a listing builds the DAG too, and Snakemake does not tell the
Snakefile which mode it runs in, so the command line is the only way to know that nothing will
be executed. Alternatives considered: registering in `aifb sweep` only would break
`snakemake sweep_all` run directly; a checkpoint would hide the points from a dry run, which
must predict their IDs (resolve_all(allocate=False)). So the list stays, and
invocation_allocates() is its only reader.
"""

from __future__ import annotations

import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from aifb.analysis.sweep_verdict import judged_rules
from aifb.errors import AifbError, ConfigError, RecipeError
from aifb import services  # a module, so tests can stand in for its registry of kinds
from aifb.workflow import registry
from aifb.workflow.recipe import apply_overrides, read_yaml, service_specs, validate

# Invocations that must not write anything: dry runs, lint, reports, listings (Snakemake parses
# the workflow before it tells the Snakefile which mode it runs in, so argv is what we have).
NON_EXEC_FLAGS = {"--dry-run", "--dryrun", "--lint", "--touch", "--report", "--summary",
                  "--detailed-summary", "--list-rules", "--list", "--list-target-rules",
                  "--list-changes", "--lc", "--li", "--lp", "--list-code-changes",
                  "--list-input-changes", "--list-params-changes", "--dag", "--rulegraph",
                  "--filegraph", "--d3dag", "--unlock", "--cleanup-metadata", "--print-compilation",
                  "--export-cwl", "--containerize", "--archive", "--delete-all-output",
                  "--delete-temp-output", "--version", "--help"}


def invocation_allocates(argv: list[str] | None = None) -> bool:
    argv = sys.argv if argv is None else argv
    for arg in argv[1:]:
        if arg.split("=", 1)[0] in NON_EXEC_FLAGS:
            return False
        m = re.fullmatch(r"-([A-Za-z]+)\d*", arg)
        if m and ({"n", "t", "l", "h", "D"} & set(m.group(1))):
            return False
    return True


def get_path(recipe: dict, dotted: str):
    node = recipe
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


@dataclass
class SweepPoint:
    level: object
    repeat: int
    recipe: dict
    recipe_path: str
    overrides: list[str]
    benchmark_id: str | None = None
    predicted: bool = False


@dataclass
class Sweep:
    name: str
    spec: dict
    points: list[SweepPoint] = field(default_factory=list)
    runnable: bool = True
    skip_reason: str | None = None

    @property
    def ids(self) -> list[str]:
        return [p.benchmark_id for p in self.points]

    @property
    def first_id(self) -> str:
        return self.points[0].benchmark_id

    @property
    def last_id(self) -> str:
        return self.points[-1].benchmark_id

    @property
    def report_dir(self) -> str:
        return f"reports/sweep_{self.first_id}_{self.last_id}"

    @property
    def levels(self) -> list:
        seen = []
        for p in self.points:
            if p.level not in seen:
                seen.append(p.level)
        return seen

    @property
    def slo(self) -> list[str]:
        return self.spec.get("slo") or self.points[0].recipe.get("slo", [])

    def describe(self) -> dict:
        return {"name": self.name, "param": self.spec["param"], "levels": self.levels,
                "repeats": self.spec.get("repeats", 1), "version": self.spec.get("version", 1),
                "slo": self.slo, "error_budget": self.spec.get("error_budget"),
                "confidence": self.spec.get("confidence"), "service": self.spec.get("service"),
                "purpose": self.spec.get("purpose"), "mode": self.spec.get("mode", "grid"),
                "points": [{"level": p.level, "repeat": p.repeat, "benchmark_id": p.benchmark_id,
                            "recipe_path": p.recipe_path} for p in self.points]}


def expand(name: str, spec: dict, root: Path) -> Sweep:
    """The sweep's points with their resolved, validated recipes (no IDs yet)."""
    param = spec["param"]
    common = list(spec.get("set", []))
    repeats = int(spec.get("repeats", 1))
    try:  # the verdict settings, checked when the config is read rather than at report time
        _, confidence = judged_rules(spec)
    except ValueError as exc:
        raise ConfigError(f"sweep {name}: {exc}") from None
    if confidence is not None and repeats < 2:
        raise ConfigError(f"sweep {name}: confidence: {confidence:g} judges a bound on the mean "
                          "over the repeats, which needs repeats: 2 or more")
    bases: list[tuple[str, dict, list[str]]] = []
    if "points" in spec:
        for rel in spec["points"]:
            bases.append((rel, read_yaml(root / rel), common))
    else:
        base = read_yaml(root / spec["recipe"])
        for level in spec["levels"]:
            bases.append((spec["recipe"], base, [*common, f"{param}={level}"]))
    sweep = Sweep(name=name, spec=spec)
    for rel, raw, overrides in bases:
        try:
            recipe = validate(apply_overrides(raw, overrides), source=f"sweep {name}: {rel}")
        except RecipeError as exc:
            raise ConfigError(str(exc)) from None
        level = get_path(recipe, param)
        if level is None:
            raise ConfigError(f"sweep {name}: {rel} has no value at {param}")
        for r in range(repeats):
            sweep.points.append(SweepPoint(level=level, repeat=r, recipe=recipe, recipe_path=rel,
                                           overrides=overrides))
    levels = [p.level for p in sweep.points if p.repeat == 0]
    if len(set(map(str, levels))) != len(levels):
        raise ConfigError(f"sweep {name}: two points have the same {param} ({levels})")
    return sweep


def _key(sweep: Sweep, point: SweepPoint, epoch: int) -> dict:
    return {"name": sweep.name, "version": sweep.spec.get("version", 1), "level": point.level,
            "repeat": point.repeat, "epoch": epoch}


def latest_point(key_wo_epoch: dict, entries: list[dict]) -> tuple[str | None, int]:
    """(benchmark ID, epoch) of the newest registered point matching the key without its epoch
    ((None, -1) when none): what a sweep or a capacity search reuses unless it remeasures."""
    best, epoch = None, -1
    for e in entries:
        s = e.get("sweep") or {}
        if all(s.get(k) == v for k, v in key_wo_epoch.items()) and s.get("epoch", 0) > epoch:
            best, epoch = e["benchmark_id"], s.get("epoch", 0)
    return best, epoch


def resolve_all(config: dict, *, root: Path, allocate: bool, only=None, remeasure: bool = False,
                log=lambda m: None, entries: list[dict] | None = None) -> list[Sweep]:
    """Expand every configured sweep and map its points to benchmark IDs.

    allocate=False (dry runs, and the workflow until a sweep target asks; see allocate_points):
    unregistered points get the IDs they would get, marked `predicted`, and nothing is written.
    `entries`: the registry's entries when the caller has read them already (the workflow reads
    them once per parse), else they are read here.
    """
    wanted = [only] if isinstance(only, str) else only
    unknown = set(wanted or []) - set(config.get("sweeps", {}))
    if unknown:
        raise ConfigError(f"--config only=: no sweep named {', '.join(sorted(unknown))} "
                          f"(configured: {', '.join(config.get('sweeps', {}))})")
    sweeps = []
    if entries is None:
        entries = registry.all_entries(root)
    pending: list[SweepPoint] = []
    for name, spec in config.get("sweeps", {}).items():
        if wanted and name not in wanted:
            continue
        if spec.get("mode") == "capacity":
            continue  # a search, run step by step by `aifb sweep NAME` (aifb.workflow.capacity)
        sweep = expand(name, spec, root)
        # Importing every service module (services.available_kinds) costs ~0.4 s of each
        # Snakemake parse (aiohttp among them): only a configuration with sweeps pays it.
        available = services.available_kinds()
        missing = [s["kind"] for s in service_specs(sweep.points[0].recipe).values()
                   if s["kind"] not in available]
        if missing:
            sweep.runnable = False
            sweep.skip_reason = f"service kind {missing[0]!r} is not implemented yet"
        else:
            sweep.skip_reason = missing_locally(sweep.points[0].recipe)
            sweep.runnable = sweep.skip_reason is None
        if not sweep.runnable:
            log(f"aifb: sweep {name} will not be built: {sweep.skip_reason}")
        for point in sweep.points:
            existing, _ = latest_point(_point_key(sweep, point), entries)
            if existing:
                point.benchmark_id = existing
            elif sweep.runnable:
                pending.append(point)
        sweeps.append(sweep)
    for point, bid in zip(pending, registry.predict_next(len(pending), root)):
        point.benchmark_id, point.predicted = bid, True
    if allocate:
        allocate_points(sweeps, root=root, remeasure=remeasure)
    # A sweep not yet runnable and never measured has no IDs; keep it for the index only.
    return [s for s in sweeps if all(p.benchmark_id for p in s.points) or not s.runnable]


def _point_key(sweep: Sweep, point: SweepPoint) -> dict:
    key = _key(sweep, point, 0)
    key.pop("epoch")
    return key


def allocate_points(sweeps: list[Sweep], *, root: Path, remeasure: bool = False) -> None:
    """Register the points of runnable sweeps that have no ID yet (every point: a new epoch,
    with remeasure). Only an invocation that builds these sweeps calls this: the workflow does
    it from the input function of its sweep targets, so `aifb run`, `aifb index` or a sweep
    other than the one asked for never allocates."""
    entries = registry.all_entries(root)
    for sweep in sweeps:
        if not sweep.runnable:
            continue
        for point in sweep.points:
            if point.benchmark_id and not point.predicted and not remeasure:
                continue
            _, epoch = latest_point(_point_key(sweep, point), entries)
            entry = registry.make_entry(point.recipe, recipe_path=point.recipe_path,
                                        overrides=point.overrides)
            point.benchmark_id = registry.allocate_sweep_point(_key(sweep, point, epoch + 1),
                                                               entry, root)
            point.predicted = False


def missing_locally(recipe: dict) -> str | None:
    """Why a recipe's service cannot be deployed on this machine (its server is not installed
    here), or None. Only for the local target without an endpoint: on a cluster the service runs
    from the target's images or modules, and an endpoint needs nothing deployed."""
    if recipe.get("target", "local") != "local":
        return None
    for service in service_specs(recipe).values():
        if service.get("endpoint"):
            continue
        try:
            with tempfile.TemporaryDirectory() as tmp:
                cls = services.get_service(service["kind"])
                cls(dict(service, name=recipe["name"]), Path(tmp), Path(tmp) / "log").resolve_binary()
        except AifbError as exc:
            return f"its server is not available on this machine ({str(exc).split(':')[0]})"
    return None
