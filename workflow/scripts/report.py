"""Snakemake shim: one run's files -> reports/<id>/ (aifb.reporting.report); a rerun is compared with its
original first (aifb.workflow.rerun), and the verdict goes into the report."""

from pathlib import Path

from aifb.jsonio import read_json
from aifb.progress import mark
from aifb.reporting.report import build_report
from aifb.workflow.rerun import compare_and_report
from aifb.step import step_log

with step_log(snakemake) as (log, _):
    mark(snakemake.wildcards.id, "reporting")
    run_dir = Path(snakemake.input.run).parent
    run = read_json(snakemake.input.run)
    comparison = None
    if run.get("rerun_of"):
        comparison = compare_and_report(run["benchmark_id"], root=Path.cwd())
        print(comparison["line"], file=log)
    build_report(run_dir, Path(snakemake.output.md).parent, comparison=comparison)
    mark(snakemake.wildcards.id, "done")
