"""Snakemake shim: one run's files -> reports/<id>/ (aifb.report); a rerun is compared with its
original first (aifb.rerun), and the verdict goes into the report."""

import json
import sys
from pathlib import Path

from aifb.report import build_report
from aifb.rerun import compare_and_report

with open(snakemake.log[0], "w", encoding="utf-8") as log:
    sys.stderr = log
    run_dir = Path(snakemake.input.run).parent
    run = json.loads(Path(snakemake.input.run).read_text())
    comparison = None
    if run.get("rerun_of"):
        comparison = compare_and_report(run["benchmark_id"], root=Path.cwd())
        print(comparison["line"], file=log)
    build_report(run_dir, Path(snakemake.output.md).parent, comparison=comparison)
