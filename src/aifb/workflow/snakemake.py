"""Running the workflow: the Snakemake command line for a work root and the child process that
runs it (used by the `aifb` commands and by the capacity search, one step at a time)."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

from aifb.paths import code_root, work_root


def snakemake_argv(targets: list[str], profile: str, extra: list[str] | None = None,
                   root: Path | None = None) -> list[str]:
    return [sys.executable, "-m", "snakemake", "--snakefile", str(code_root() / "Snakefile"),
            "--directory", str(root or work_root()), "--profile",
            str(code_root() / "profiles" / profile), *targets, *(extra or [])]


def run_snakemake(targets: list[str], profile: str, extra: list[str] | None = None,
                  dry_run: bool = False, root: Path | None = None) -> int:
    """Run Snakemake on `targets` in `root` (default: the work root) and wait for it.

    With `root`, the child also gets AIFB_ROOT=root, so the Snakefile and its scripts read and
    write the same work root as the caller (the capacity search runs its steps under its own)."""
    env = dict(os.environ, AIFB_INVOCATION=shlex.join(sys.argv))
    if root is not None:
        env["AIFB_ROOT"] = str(root)
        root = Path(root).resolve()  # what work_root() makes of AIFB_ROOT
    argv = snakemake_argv(targets, profile, [*(extra or []), *(["--dry-run"] if dry_run else [])],
                          root)
    print("aifb: " + shlex.join(argv[2:]), file=sys.stderr)
    proc = subprocess.Popen(argv, cwd=root or work_root(), env=env)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        # The terminal sent SIGINT to Snakemake too; let it stop its jobs (and their services).
        try:
            return proc.wait(timeout=60)
        except (subprocess.TimeoutExpired, KeyboardInterrupt):
            proc.send_signal(signal.SIGTERM)
            return proc.wait()
