# Validation of config and recipes at parse time, and the input functions the rules share.
# No rules here.

import functools
import gc
import os
import shlex
import sys
from pathlib import Path

from snakemake.settings.types import DeploymentMethod
from snakemake.utils import validate

from aifb.workflow import registry

from aifb.workflow import sweep as aifb_sweep
from aifb.errors import AifbError
from aifb.slurm.targets import DEFAULT_QUEUE_TIMEOUT_S, load_targets_file, runtime_minutes
from aifb.units import parse_duration


# Snakemake keeps a few hundred objects per job until it exits, and Python's default threshold
# (a young collection every 700 allocations, a full one every 100 young) made a dry run of
# 1,000 IDs (3,001 jobs) scan its whole, growing heap eight times: ~12 % of its CPU
# (benchmarks/README.md). A young collection every 100,000 allocations leaves no full one in
# such a run, and still collects cycles, so a long run's memory stays bounded.
gc.set_threshold(100_000)

validate(config, schema="../schemas/config.schema.yaml")

WORKDIR = Path.cwd()


def step_python():
    """The interpreter running Snakemake, spelled one way: `<its bin>/python` when that is the
    same file. Snakemake reruns a shell: job whose command text changed, and one interpreter has
    several spellings (.venv/bin/python under `aifb run`, .venv/bin/python3 under the snakemake
    script), so a plain `snakemake -n` after `aifb run` planned the benchmark again."""
    exe = sys.executable
    plain = os.path.join(os.path.dirname(exe), "python")
    try:
        return plain if os.path.samefile(plain, exe) else exe
    except OSError:
        return exe


def step_command(step, *files):
    """The shell command of a per-benchmark rule: `python -m aifb.workflow.steps STEP ID LOG
    FILES...` (why shell: and not script: is in that module). The interpreter is the one running
    Snakemake, where aifb is installed, as a `script:` rule would use (step_python); with
    --use-conda (--sdm conda), the environment's own `python` (environment.yml installs aifb
    there). It is written into the command here, at parse time, so the rules name no variable
    from outside."""
    if DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method:
        python = "python"
    else:
        python = shlex.quote(step_python()).replace("{", "{{").replace("}", "}}")
    return " ".join([python, "-m aifb.workflow.steps", step, "{wildcards.id} {log:q}", *files])


def _load_targets():
    """config/targets.yaml (or the file config names), validated: clusters recipes may name."""
    try:  # against workflow/schemas/targets.schema.yaml, with messages that name the field
        return load_targets_file(WORKDIR / config.get("targets", "config/targets.yaml"))
    except AifbError as exc:
        raise WorkflowError(str(exc))


TARGETS = _load_targets()
# Same language as aifb.paths.ID_PATTERN, without {m,n} braces, which wildcard constraints can't hold.
ID_REGEX = r"BM-\d\d\d\d\d\d\d\d-\d\d\d+"


wildcard_constraints:
    id=ID_REGEX,
    first=ID_REGEX,
    last=ID_REGEX,


def _allocating():
    # A dry run, a lint or a job re-parsing the workflow must not mint IDs.
    return workflow.is_main_process and aifb_sweep.invocation_allocates()


REGISTRY_DIR = registry.registry_dir(WORKDIR).relative_to(WORKDIR).as_posix()


@functools.cache
def _entries_by_id():
    """Every registry entry by benchmark ID, each file read once per parse (entries never
    change once written; _allocate_sweeps reads again after it registers new ones). The input
    functions below look IDs up here rather than reading a file per job."""
    try:
        return {e["benchmark_id"]: e for e in registry.all_entries(WORKDIR)}
    except AifbError as exc:
        raise WorkflowError(str(exc))


def _resolve_sweeps():
    # Nothing is allocated at parse time: every invocation parses this, but only one whose
    # targets include the sweeps registers their IDs (all_sweep_reports).
    try:
        return aifb_sweep.resolve_all(
            config,
            root=WORKDIR,
            allocate=False,
            only=config.get("only"),
            log=lambda msg: print(msg, file=sys.stderr),
            entries=list(_entries_by_id().values()),
        )
    except AifbError as exc:
        raise WorkflowError(str(exc))


SWEEPS = _resolve_sweeps()
for _sweep in SWEEPS:
    for _point in _sweep.points:
        _name = _point.recipe.get("target", "local")
        if _name not in TARGETS:
            raise WorkflowError(
                f"sweep {_sweep.name}: {_point.recipe_path} names target {_name!r}, which "
                f"config/targets.yaml does not define (defined: {', '.join(sorted(TARGETS))})"
            )


def _predicted(bid):
    """An ID a dry run shows for a sweep point that a real run would register (nothing is
    written); none is left once the sweeps are allocated."""
    return any(p.predicted and p.benchmark_id == bid for s in SWEEPS for p in s.points)


def _entry(bid):
    """A registered benchmark's entry; None when it is not registered."""
    return _entries_by_id().get(bid)


def registered_entry(wildcards):
    """The registry file of a benchmark ID (a clear error when it is not registered)."""
    bid = wildcards.id
    if bid in _entries_by_id():
        return f"{REGISTRY_DIR}/{bid}.json"
    if _predicted(bid):
        return []
    raise WorkflowError(
        f"{bid} is not registered: create it with `aifb run RECIPE` "
        "(or build a sweep from config/config.yaml)"
    )


def all_run_reports(wildcards):
    return [f"reports/{bid}/report.md" for bid in _entries_by_id()]


@functools.cache
def _allocate_sweeps():
    """Register the IDs of the configured (or --config only=) sweeps, once: called when the
    DAG asks for the sweep targets, so an invocation for anything else registers nothing."""
    if not _allocating():
        return
    try:
        aifb_sweep.allocate_points(
            SWEEPS, root=WORKDIR, remeasure=config.get("remeasure", False)
        )
    except AifbError as exc:
        raise WorkflowError(str(exc))
    _entries_by_id.cache_clear()


def all_sweep_reports(wildcards):
    _allocate_sweeps()
    return [f"{s.report_dir}/report.md" for s in SWEEPS if s.runnable]


def index_sweeps(wildcards):
    """The configured sweeps as the index shows them: one not built yet has no IDs and no
    report (the IDs a dry run predicts are not registered)."""
    out = []
    for s in SWEEPS:
        built = s.runnable and not any(p.predicted for p in s.points)
        d = s.describe()
        for point, described in zip(s.points, d["points"]):
            if point.predicted:
                described["benchmark_id"] = None
        out.append(d | {"report_dir": s.report_dir if built else None, "skip_reason": s.skip_reason})
    return out


def sweep_of(wildcards):
    for s in SWEEPS:
        if s.first_id == wildcards.first and s.last_id == wildcards.last:
            return s
    raise WorkflowError(
        f"no sweep in the configuration spans {wildcards.first} .. {wildcards.last}"
    )


def sweep_summaries(wildcards):
    return [f"results/{bid}/summary.json" for bid in sweep_of(wildcards).ids]


def sweep_point_reports(wildcards):
    return [f"reports/{bid}/report.md" for bid in sweep_of(wildcards).ids]


def rerun_original_summary(wildcards):
    """A rerun's report compares it with the original, so it needs the original's summary."""
    original = (_entry(wildcards.id) or {}).get("rerun_of")
    return [f"results/{original}/summary.json"] if original else []


def benchmark_threads(wildcards):
    """Cores for one benchmark job: 2, or load.processes + 1 (capped by --cores / Slurm)."""
    entry = _entry(wildcards.id)
    if entry is None:
        return 2
    load = entry["recipe"]["load"]
    return max(2, int(load.get("processes", 1)) + 1)


def benchmark_runtime_min(wildcards):
    """Wall-time limit for one benchmark job (Slurm): load time plus deploy/preload margin,
    plus, when the service is a Slurm job of its own, the time it may wait in the queue."""
    entry = _entry(wildcards.id)
    if entry is None:
        return 30
    recipe = entry["recipe"]
    minutes = runtime_minutes(recipe)
    target = TARGETS.get(recipe.get("target", "local")) or {}
    if target.get("executor") == "slurm":
        queue_s = parse_duration(target.get("queue_timeout", DEFAULT_QUEUE_TIMEOUT_S))
        minutes += int(-(-queue_s // 60))
    return minutes


def existing_run_files(wildcards):
    """run.json and summary.json of every run on disk: the index is rebuilt when any changes."""
    files = []
    for bid in _entries_by_id():
        for name in ("run.json", "summary.json"):
            if (WORKDIR / "results" / bid / name).is_file():
                files.append(f"results/{bid}/{name}")
    return files
