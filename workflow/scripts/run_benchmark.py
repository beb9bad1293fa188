"""Snakemake shim: run one registered benchmark (aifb.workflow.runner) into results/<id>/.

Progress goes to the job's log and to Snakemake's output (a local job's stderr: the terminal with
`aifb --verbose` or plain snakemake; otherwise the command's Snakemake log, while the terminal shows
the progress file, aifb.progress)."""

from pathlib import Path

from aifb.workflow.runner import run_benchmark
from aifb.step import step_log

with step_log(snakemake, "a") as (log, terminal):

    def say(msg):
        print(msg, file=log, flush=True)
        print(f"[{snakemake.wildcards.id}] {msg}", file=terminal, flush=True)

    run_benchmark(snakemake.wildcards.id, root=Path.cwd(), log=say)
