"""Snakemake shim: the summaries of a sweep's points -> reports/sweep_<first>_<last>/."""

from pathlib import Path

from aifb.step import step_log
from aifb.reporting.sweep_report import build_sweep_report

with step_log(snakemake.log[0], snakemake.rule, "/".join(snakemake.wildcards)):
    build_sweep_report(
        snakemake.params.sweep,
        [Path(p).parent for p in snakemake.input.summaries],
        Path(snakemake.output.md).parent,
    )
