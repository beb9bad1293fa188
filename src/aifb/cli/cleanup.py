"""`aifb cleanup`: cancel the Slurm jobs this work root's benchmarks left behind."""

from __future__ import annotations

from aifb.paths import work_root
from aifb.slurm.cleanup import cleanup


def cmd_cleanup(args) -> int:
    n = cleanup(root=work_root(), dry_run=args.dry_run, everything=args.all,
                snakemake_root=work_root() if args.snakemake else None, named=args.jobs)
    if n and args.dry_run:
        print(f"{n} job(s) would be cancelled (run without --dry-run to cancel them)")
    return 0
