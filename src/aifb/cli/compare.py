"""`aifb compare`: runs side by side, with deltas, noise and what differs; prints a summary and
the paths of the report (aifb.workflow.compare)."""

from __future__ import annotations

from aifb.analysis.compare_runs import NO_REPEATS
from aifb.paths import work_root
from aifb.units import format_metric


def _line(metric: dict) -> str:
    cells = metric["cells"]
    parts = [f"{cells[0]['label']} {format_metric(metric['metric'], cells[0]['value'])}"]
    for c in cells[1:]:
        delta = "n/a" if c["rel_delta"] is None else f"{c['rel_delta'] * 100:+.1f}%"
        noise = f", {c['noise']}" if c["noise"] in ("beyond noise", "within noise") else ""
        parts.append(f"{c['label']} {format_metric(metric['metric'], c['value'])} ({delta}{noise})")
    return f"  {metric['label']:<13} " + " | ".join(parts)


def cmd_compare(args) -> int:
    # Here, not at the top: the report's plots load altair, vl-convert and polars (about two
    # seconds), which every other command (and `aifb --help`) would pay.
    from aifb.workflow.compare import compare

    root = work_root()
    for result in compare(args.names, root):
        c = result["comparison"]
        print(f"compare: {' vs '.join(s['label'] for s in c['subjects'])}")
        for m in c["metrics"]:
            print(_line(m))
        if all(n["source"] == NO_REPEATS for n in c["noise"]):
            print(f"  noise: {NO_REPEATS}")
        for what in ("recipe_diff", "environment_diff"):
            if c[what]:
                keys = ", ".join(r["key"] for r in c[what][:8])
                more = f" (+{len(c[what]) - 8})" if len(c[what]) > 8 else ""
                print(f"  {what.replace('_', ' ')}: {keys}{more}")
        for note in c["notes"]:
            print(f"  note: {note}")
        for key in ("markdown", "json", "plots"):
            path = result[key]
            print(f"  {key}: {path.relative_to(root) if path.is_relative_to(root) else path}")
    return 0
