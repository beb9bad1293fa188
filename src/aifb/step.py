"""The frame of one workflow step (aifb.workflow.steps, and the workflow/scripts/*.py shims):
the step's log file is its stderr, a failure's traceback goes into that log, and the terminal
gets one line saying why the step failed and where the details are. Snakemake then reports the
failed job as usual."""

from __future__ import annotations

import contextlib
import sys
import traceback

from aifb.errors import AifbError


@contextlib.contextmanager
def step_log(path, step: str, where: str = "", mode: str = "w"):
    """`with step_log(log_path, "summarize", bid) as (log, terminal):` - log is the open log
    file (also sys.stderr inside the block), terminal the stderr Snakemake gave the job; `step`
    (the rule) and `where` (its wildcards, e.g. the benchmark ID) name it in the failure line."""
    terminal = sys.stderr
    with open(path, mode, encoding="utf-8") as log:
        sys.stderr = log
        try:
            yield log, terminal
        except SystemExit:
            raise
        except BaseException as exc:
            traceback.print_exc(file=log)
            log.flush()
            if isinstance(exc, KeyboardInterrupt):
                reason, code = "interrupted", 130
            else:
                first = (str(exc).strip().splitlines() or [""])[0]
                reason = first if isinstance(exc, AifbError) else f"{type(exc).__name__}: {first}"
                code = 1
            print(f"aifb: {step}{' ' + where if where else ''} failed: {reason} (traceback in {path})",
                  file=terminal, flush=True)
            raise SystemExit(code) from None
        finally:
            sys.stderr = terminal
