"""`aifb repair`: rebuild a corrupt registry entry from run.json, or retire it."""

from __future__ import annotations

from aifb.paths import work_root
from aifb.workflow import registry


def cmd_repair(args) -> int:
    print(registry.repair(args.benchmark_id, work_root()))
    return 0
