"""Snakemake shim: the summaries of a sweep's points -> reports/sweep_<first>_<last>/."""

import sys
from pathlib import Path

from aifb.sweep_report import build_sweep_report

with open(snakemake.log[0], "w", encoding="utf-8") as log:
    sys.stderr = log
    build_sweep_report(
        snakemake.params.sweep,
        [Path(p).parent for p in snakemake.input.summaries],
        Path(snakemake.output.md).parent,
    )
