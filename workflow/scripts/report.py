"""Snakemake shim: one run's files -> reports/<id>/ (aifb.report)."""

import sys
from pathlib import Path

from aifb.report import build_report

with open(snakemake.log[0], "w", encoding="utf-8") as log:
    sys.stderr = log
    build_report(Path(snakemake.input.run).parent, Path(snakemake.output.md).parent)
