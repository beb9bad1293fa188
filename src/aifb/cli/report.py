"""`aifb report`: (re)build a run's report (report.md, report.json, plots/) from its files."""

from __future__ import annotations

from pathlib import Path


def cmd_report(args) -> int:
    # Here, not at the top: altair, vl-convert and polars take about two seconds to load, which
    # every other command (and `aifb --help`) would pay.
    from aifb.reporting.report import build_report

    build_report(Path(args.run_dir), Path(args.report_dir))
    print(Path(args.report_dir) / "report.md")
    return 0
