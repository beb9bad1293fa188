"""`aifb rerun`: `aifb run --rerun ID`, the recorded recipe unchanged under a new ID."""

from __future__ import annotations

from aifb.cli.run import cmd_run


def cmd_rerun(args) -> int:
    args.rerun, args.recipe, args.set, args.dry_run = args.benchmark_id, None, [], False
    return cmd_run(args)
