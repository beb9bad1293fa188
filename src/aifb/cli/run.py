"""`aifb run`: register a benchmark ID for a recipe (or a rerun of one) and run it through
Snakemake to its report."""

from __future__ import annotations

from pathlib import Path

from aifb import services
from aifb.cli.common import err
from aifb.errors import AifbError
from aifb.jsonio import read_json
from aifb.paths import work_root
from aifb.slurm.commands import slurm_available
from aifb.slurm.targets import get_target
from aifb.workflow import registry, trust
from aifb.workflow.recipe import load_recipe, service_specs
from aifb.workflow.rerun import prepare_rerun
from aifb.workflow.console import Console
from aifb.workflow.snakemake import run_snakemake


def _finish(benchmark_ids: list[str], console: Console) -> int:
    """The result line of each benchmark (those the progress display has not shown yet); 1
    when one did not complete."""
    worst = 0
    for bid in benchmark_ids:
        console.result(bid)
        run_path = work_root() / "results" / bid / "run.json"
        if not run_path.is_file() or read_json(run_path).get("status") != "completed":
            worst = 1
    return worst


def cmd_run(args) -> int:
    if args.rerun:
        if args.set or args.recipe:
            err("run --rerun: runs the recorded recipe unchanged (what makes it comparable with "
                 "the original), so it takes no --set and no RECIPE; to vary the recipe, run it "
                 "as a recipe file: aifb run RECIPE --set PATH=VALUE")
            return 2
        bid, _ = prepare_rerun(args.rerun, strict=args.strict, root=work_root(), log=err,
                               dry_run=args.dry_run, trust_recipe=args.trust_recipe)
        if args.dry_run:
            print(f"dry run: would register {bid} as a rerun of {args.rerun}")
            return 0
    else:
        if not args.recipe:
            err("run: give a RECIPE file, or --rerun ID")
            return 2
        recipe = load_recipe(args.recipe, args.set)
        if not trust.is_project_recipe(args.recipe):
            trust.check(recipe, origin=args.recipe, trusted=args.trust_recipe, log=err)
        for spec in service_specs(recipe).values():  # not implemented -> clear error, nothing started
            services.get_service(spec["kind"])
        _check_target(recipe, args.profile)
        if args.dry_run:
            nxt = registry.predict_next(1, work_root())[0]
            print(f"dry run: would register {nxt} for {args.recipe}")
            return 0
        path = Path(args.recipe).resolve()
        rel = str(path.relative_to(work_root())) if path.is_relative_to(work_root()) else str(path)
        bid = registry.allocate(registry.make_entry(recipe, recipe_path=rel, overrides=args.set),
                                work_root())
    print(f"benchmark id: {bid}", flush=True)
    console = Console(work_root(), verbose=args.verbose)
    rc = run_snakemake([f"reports/{bid}/report.md"], args.profile, args.snakemake_args,
                       console=console)
    result = _finish([bid], console)
    comparison = work_root() / "reports" / bid / "comparison.json"
    if args.rerun and comparison.is_file():
        print(read_json(comparison)["line"])
    return rc or result


def _check_target(recipe: dict, profile: str) -> None:
    """An unknown target is an error before anything is registered; a Slurm target without a
    Slurm client here is one too."""
    target = get_target(recipe.get("target", "local"), work_root())
    managed = any(not s.get("endpoint") for s in service_specs(recipe).values())
    if target["executor"] == "slurm" and managed and not slurm_available():
        raise AifbError(f"target {target['name']!r} runs services as Slurm jobs, but sbatch/squeue/"
                        "scancel are not on PATH here")
    if profile == "slurm" and not slurm_available():
        raise AifbError("--profile slurm needs a Slurm client (sbatch, squeue) on PATH")
