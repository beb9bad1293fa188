"""The workflow's per-benchmark steps as one command: the rules run_benchmark, summarize and
report run `python -m aifb.workflow.steps STEP ID LOG [FILES]` (shell:), each step inside
aifb.step.step_log (its log, and one line on Snakemake's output when it fails).

Why shell: and not script: shims. Snakemake loads a `script:` rule's source for every job while
it plans, and these three rules have one job per registered benchmark: with 1,000 IDs that was
the largest part of a dry run that aifb's own code could avoid (benchmarks/README.md). The once-per-
workflow rules (sweep_report, index) keep their shims in workflow/scripts/: they take Python
objects as params.

Each step imports its own layer inside its function, so a benchmark job does not load the
report's plotting libraries, nor a summary job the runner.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from aifb.jsonio import read_json
from aifb.progress import mark
from aifb.step import step_log


def run_benchmark(bid: str, log_path: str) -> None:
    """Run one registered benchmark (aifb.workflow.runner) into results/<id>/. Progress goes to
    the step's log and to Snakemake's output (a local job's stderr: the terminal with `aifb
    --verbose` or plain snakemake; otherwise the command's Snakemake log, while the terminal
    shows the progress file, aifb.progress)."""
    from aifb.workflow.runner import run_benchmark as run

    with step_log(log_path, "run_benchmark", bid, "a") as (log, terminal):

        def say(msg):
            print(msg, file=log, flush=True)
            print(f"[{bid}] {msg}", file=terminal, flush=True)

        run(bid, root=Path.cwd(), log=say)


def summarize(bid: str, log_path: str, run_json: str, summary_json: str) -> None:
    """results/<id>/requests.jsonl + run.json -> summary.json (aifb.analysis.summary)."""
    from aifb.analysis.summary import write_summary

    with step_log(log_path, "summarize", bid):
        mark(bid, "summarising")
        write_summary(Path(run_json).parent, Path(summary_json))


def report(bid: str, log_path: str, run_json: str, report_md: str) -> None:
    """One run's files -> reports/<id>/ (aifb.reporting.report); a rerun is compared with its
    original first (aifb.workflow.rerun), and the verdict goes into the report."""
    from aifb.reporting.report import build_report
    from aifb.workflow.rerun import compare_and_report

    with step_log(log_path, "report", bid) as (log, _):
        mark(bid, "reporting")
        run = read_json(run_json)
        comparison = None
        if run.get("rerun_of"):
            comparison = compare_and_report(run["benchmark_id"], root=Path.cwd())
            print(comparison["line"], file=log)
        build_report(Path(run_json).parent, Path(report_md).parent, comparison=comparison)
        mark(bid, "done")


STEPS = {
    "run_benchmark": (run_benchmark, []),
    "summarize": (summarize, ["run_json", "summary_json"]),
    "report": (report, ["run_json", "report_md"]),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m aifb.workflow.steps",
                                 description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="step", required=True)
    for name, (func, files) in STEPS.items():
        p = sub.add_parser(name, help=(func.__doc__ or "").split("\n")[0])
        for arg in ["bid", "log_path", *files]:
            p.add_argument(arg)
    args = vars(ap.parse_args(argv))
    func, _ = STEPS[args.pop("step")]
    func(**args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
