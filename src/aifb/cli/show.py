"""`aifb show`: what a benchmark ID is and where it stands."""

from __future__ import annotations

from aifb.errors import AifbError
from aifb.jsonio import read_json
from aifb.paths import work_root
from aifb.workflow import registry


def cmd_show(args) -> int:
    entry = registry.get(args.benchmark_id, work_root())
    run_path = work_root() / "results" / args.benchmark_id / "run.json"
    print(f"{args.benchmark_id}: {entry['recipe'].get('name')} ({entry.get('recipe_path')})")
    if run_path.is_file():
        run = read_json(run_path)
        if not isinstance(run, dict):
            raise AifbError(f"{run_path}: not a run record (a JSON object); corrupt?")
        print(f"status: {run.get('status')}" + (f" - {run['reason']}" if run.get("reason") else ""))
    else:
        print("status: registered, not run")
    return 0
