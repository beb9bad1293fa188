"""Snakemake shim: every run on disk + the configured sweeps -> the dataset index and the site."""

from pathlib import Path

from aifb.workflow.index import write_index
from aifb.step import step_log

with step_log(snakemake.log[0], snakemake.rule):
    write_index(
        Path.cwd(),
        snakemake.params.sweeps,
        Path(snakemake.output.md),
        Path(snakemake.output.json),
        site=Path(snakemake.output.site),
    )
