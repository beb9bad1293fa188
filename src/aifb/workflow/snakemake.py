"""Running the workflow: the Snakemake command line for a work root and the child process that
runs it (used by the `aifb` commands and by the capacity search, one step at a time).

Given a Console (aifb.workflow.console) that is not verbose, Snakemake's own output goes to a
log file, results/logs/snakemake-<UTC time>-<pid>.log (one per command, its path printed once),
and the terminal
shows one line per benchmark from the progress files the jobs write into a folder named by
AIFB_PROGRESS_DIR (aifb.progress); when Snakemake fails, the failed steps' logs are quoted."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from aifb import progress
from aifb.paths import code_root, work_root
from aifb.workflow.console import Console, Monitor, failures, shown_path


def snakemake_argv(targets: list[str], profile: str, extra: list[str] | None = None,
                   root: Path | None = None) -> list[str]:
    return [sys.executable, "-m", "snakemake", "--snakefile", str(code_root() / "Snakefile"),
            "--directory", str(root or work_root()), "--profile",
            str(code_root() / "profiles" / profile), *targets, *(extra or [])]


def snakemake_log_path(root: Path) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return root / "results" / "logs" / f"snakemake-{stamp}-{os.getpid()}.log"


def run_snakemake(targets: list[str], profile: str, extra: list[str] | None = None,
                  dry_run: bool = False, root: Path | None = None,
                  console: Console | None = None) -> int:
    """Run Snakemake on `targets` in `root` (default: the work root) and wait for it.

    With `root`, the child also gets AIFB_ROOT=root, so the Snakefile and its scripts read and
    write the same work root as the caller (the capacity search runs its steps under its own).
    Without a `console`, or with a verbose one, or for a dry run (whose output is the answer),
    Snakemake writes to this terminal."""
    env = dict(os.environ, AIFB_INVOCATION=shlex.join(sys.argv))
    if root is not None:
        env["AIFB_ROOT"] = str(root)
        root = Path(root).resolve()  # what work_root() makes of AIFB_ROOT
    where = root or work_root()
    argv = snakemake_argv(targets, profile, [*(extra or []), *(["--dry-run"] if dry_run else [])],
                          root)
    command = "aifb: " + shlex.join(argv[2:])
    if console is None or console.verbose or dry_run:
        print(command, file=sys.stderr)
        return _wait(subprocess.Popen(argv, cwd=where, env=env))
    log_path = console.log_path
    if log_path is None:   # the command's first Snakemake
        log_path = console.log_path = snakemake_log_path(where)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        print(f"aifb: Snakemake's output goes to {shown_path(log_path)} (--verbose shows it here)",
              file=sys.stderr, flush=True)
    live = Path(tempfile.mkdtemp(prefix=".progress-", dir=log_path.parent))
    env[progress.ENV] = str(live)
    with open(log_path, "a", encoding="utf-8") as log, Monitor(console, live):
        start = log.tell()   # this call's part of the log
        print(command, file=log, flush=True)
        rc = _wait(subprocess.Popen(argv, cwd=where, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL))
    if rc != 0:
        for line in failures(log_path, where, start):
            print(f"aifb: {line}" if not line.startswith("  ") else line, file=sys.stderr)
    return rc


def _interrupted(signum, frame):
    raise KeyboardInterrupt


def _wait(proc: subprocess.Popen) -> int:
    # SIGTERM (a batch system, `timeout`, killpg) is handled as SIGINT: this process must not
    # exit while Snakemake still stops its jobs and their services - with Snakemake's output in
    # a log file, nothing else would keep the caller waiting for that teardown.
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupted) if main else None
    try:
        try:
            return proc.wait()
        except KeyboardInterrupt:
            # The signal reached Snakemake too (the process group); let it stop its jobs.
            try:
                return proc.wait(timeout=60)
            except (subprocess.TimeoutExpired, KeyboardInterrupt):
                proc.send_signal(signal.SIGTERM)
                return proc.wait()
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
