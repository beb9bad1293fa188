"""`aifb index`: rebuild the dataset index (reports/dataset_index.md, reports/index.json) and
the offline HTML site (reports/site/, docs/site.md) through Snakemake."""

from __future__ import annotations

from aifb.paths import work_root
from aifb.workflow.console import Console
from aifb.workflow.snakemake import run_snakemake


def cmd_index(args) -> int:
    return run_snakemake(["index"], args.profile, ["--forcerun", "index", *(args.snakemake_args or [])],
                         console=Console(work_root(), verbose=args.verbose))
