"""Snakemake shim: run one registered benchmark (aifb.runner) into results/<id>/."""

import sys
from pathlib import Path

from aifb.runner import run_benchmark

with open(snakemake.log[0], "a", encoding="utf-8") as log:
    sys.stderr = log
    run_benchmark(
        snakemake.wildcards.id,
        root=Path.cwd(),
        log=lambda msg: print(msg, file=log, flush=True),
    )
