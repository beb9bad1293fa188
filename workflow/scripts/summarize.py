"""Snakemake shim: results/<id>/requests.jsonl + run.json -> summary.json (aifb.analysis.summary)."""

from pathlib import Path

from aifb.progress import mark
from aifb.step import step_log
from aifb.analysis.summary import write_summary

with step_log(snakemake):
    mark(snakemake.wildcards.id, "summarising")
    write_summary(Path(snakemake.input.run).parent, Path(snakemake.output[0]))
