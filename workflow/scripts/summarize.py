"""Snakemake shim: results/<id>/requests.jsonl + run.json -> summary.json (aifb.summary)."""

import sys
from pathlib import Path

from aifb.summary import write_summary

with open(snakemake.log[0], "w", encoding="utf-8") as log:
    sys.stderr = log
    write_summary(Path(snakemake.input.run).parent, Path(snakemake.output[0]))
