"""Snakemake shim: every run on disk + the configured sweeps -> the dataset index."""

import sys
from pathlib import Path

from aifb.index import write_index

with open(snakemake.log[0], "w", encoding="utf-8") as log:
    sys.stderr = log
    write_index(
        Path.cwd(),
        snakemake.params.sweeps,
        Path(snakemake.output.md),
        Path(snakemake.output.json),
    )
