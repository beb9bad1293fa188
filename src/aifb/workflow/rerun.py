"""Re-running a benchmark from its bundle (results/<id>/run.json) and saying whether it reproduced.

The embedded recipe is re-registered under a new ID with `rerun_of`; its hash is checked against
the recorded `recipe_hash`, and the recorded git commit against the checkout's (a mismatch is a
warning, or an error with --strict). After the rerun, compare_and_report() writes
reports/<new>/comparison.{json,md} with the verdict.
"""

from __future__ import annotations

from pathlib import Path

from aifb import provenance
from aifb.analysis.compare import compare_runs, write_comparison

from aifb.workflow import registry, trust
from aifb.errors import AifbError, RegistryError
from aifb.jsonio import read_json
from aifb.stats import relative_spread
from aifb.workflow.recipe import recipe_hash, validate


def prepare_rerun(original_id: str, *, strict: bool, root: Path, log,
                  dry_run: bool = False, trust_recipe: bool = False) -> tuple[str, dict]:
    """Check the bundle and register the rerun (dry_run: the ID it would get, nothing written).
    Every check comes before the allocation, so a refused rerun leaves no ID behind."""
    registry.check_id(original_id)
    run_path = root / "results" / original_id / "run.json"
    if not run_path.is_file():
        raise RegistryError(f"cannot rerun {original_id}: {run_path} does not exist")
    run = read_json(run_path)
    if not isinstance(run, dict) or not isinstance(run.get("recipe"), dict):
        raise RegistryError(f"cannot rerun {original_id}: {run_path} holds no recipe (not a run "
                            "bundle, or an edited one)")
    recipe = validate(run["recipe"], source=f"{original_id} run.json recipe")
    if not trust.same_as_project_recipe(run, recipe):  # someone else's bundle runs nothing unasked
        trust.check(recipe, origin=f"the recipe embedded in {run_path}", trusted=trust_recipe,
                    log=log)
    problems = []
    if recipe_hash(recipe) != run.get("recipe_hash"):
        problems.append(f"the embedded recipe hashes to {recipe_hash(recipe)}, but run.json records "
                        f"{run.get('recipe_hash')} (the bundle was edited)")
    here = provenance.git_state()
    if run.get("git_commit") and here["git_commit"] != run["git_commit"]:
        problems.append(f"{original_id} ran at git commit {run['git_commit'][:12]}, this checkout is at "
                        f"{(here['git_commit'] or 'unknown')[:12]} (check it out with "
                        f"`git checkout {run['git_commit'][:12]}` for an exact rerun)")
    if run.get("git_dirty"):
        problems.append(f"{original_id} ran from a checkout with uncommitted changes")
    for p in problems:
        if strict:
            raise AifbError(f"rerun {original_id} refused (--strict): {p}")
        log(f"warning: {p}")
    entry = registry.make_entry(recipe, recipe_path=run.get("recipe_path"),
                                overrides=run.get("overrides", []), rerun_of=original_id)
    entry["rerun_warnings"] = problems
    registry.all_entries(root)  # a corrupt registry: refused in a dry run too
    if dry_run:
        return registry.predict_next(1, root)[0], entry
    new_id = registry.allocate(entry, root)
    return new_id, entry


def compare_and_report(new_id: str, *, root: Path) -> dict:
    entry = registry.get(new_id, root)
    original_id = entry["rerun_of"]
    orig = read_json(root / "results" / original_id / "summary.json")
    new = read_json(root / "results" / new_id / "summary.json")
    comparison = compare_runs(orig, new, repeat_spread=repeat_spread_for(original_id, root))
    write_comparison(comparison, root / "reports" / new_id)
    return comparison


def repeat_spread_for(benchmark_id: str, root: Path) -> dict | None:
    """Relative spread of rps/p50/p99 over the repeats of the original's sweep level, if any."""
    entry = registry.get(benchmark_id, root)
    key = entry.get("sweep")
    if not key:
        return None
    sibling_ids = [e["benchmark_id"] for e in registry.all_entries(root)
                   if (s := e.get("sweep")) and all(s.get(k) == key.get(k)
                                                    for k in ("name", "version", "level", "epoch"))]
    summaries = []
    for bid in sibling_ids:
        path = root / "results" / bid / "summary.json"
        if path.is_file():
            s = read_json(path)
            if s.get("status") == "completed":
                summaries.append(s)
    if len(summaries) < 2:
        return None
    return {
        "n": len(summaries),
        "rps": relative_spread([s["throughput"]["rps"] for s in summaries]),
        "p50": relative_spread([s["latency_s"]["p50"] for s in summaries]),
        "p99": relative_spread([s["latency_s"]["p99"] for s in summaries]),
    }
