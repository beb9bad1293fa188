"""`aifb summarize`: (re)compute summary.json from a run directory's files."""

from __future__ import annotations

from pathlib import Path


def cmd_summarize(args) -> int:
    # Here, not at the top: polars takes about a second to load, which every other command
    # (and `aifb --help`) would pay.
    from aifb.analysis.summary import write_summary

    run_dir = Path(args.run_dir)
    out = Path(args.output) if args.output else run_dir / "summary.json"
    write_summary(run_dir, out)
    print(out)
    return 0
