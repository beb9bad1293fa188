"""The vector family's plots: the recall@k distribution of a run and, in a sweep, QPS against
recall@k per level (figures from aifb.analysis.metrics.vector)."""

from __future__ import annotations

from pathlib import Path

import altair as alt
import numpy as np
import polars as pl

from aifb.analysis.metrics import vector
from aifb.analysis.summary import scan_records
from aifb.reporting.plots import HEIGHT, WIDTH, configure, no_data_chart, save_png
from aifb.units import format_number, format_rate


def plots(records_path: Path, run: dict, summary: dict, plots_dir: Path) -> list[dict]:
    (rec, _counts), _d, _n = scan_records(records_path, vector.recall_queries, schema=vector.VECTOR_SCHEMA)
    v = summary.get("vector") or {}
    k = v.get("k")
    r = v.get("recall_at_k") or {}
    bid = summary.get("benchmark_id") or ""
    if rec.height:
        # recall takes few distinct values (multiples of 1/k): count them exactly.
        df = (rec.with_columns(pl.col("recall").round(6))
              .group_by("recall").len().sort("recall")
              .with_columns((pl.col("len") / rec.height).alias("fraction")))
        width = max(3, min(40, int(WIDTH * 0.7 / max(df.height, (k or 10) + 1))))
        bars = (alt.Chart(df).mark_bar(color="#1f77b4", size=width)
                .encode(x=alt.X("recall:Q", title=f"recall@{k} of one query",
                                scale=alt.Scale(domain=[-0.03, 1.03], nice=False)),
                        y=alt.Y("fraction:Q", title="fraction of queries", axis=alt.Axis(format="%")),
                        tooltip=["recall:Q", "len:Q"]))
        layers = [bars]
        if r.get("mean") is not None:
            mdf = pl.DataFrame({"x": [r["mean"]], "label": [f"mean {r['mean']:.3f}"]})
            layers.append(alt.Chart(mdf).mark_rule(color="#b00020", strokeDash=[6, 4]).encode(x="x:Q"))
            layers.append(alt.Chart(mdf).mark_text(align="right", dx=-4, color="#b00020",
                                                   fontSize=12)
                          .encode(x="x:Q", y=alt.value(14), text="label:N"))
        chart = configure(alt.layer(*layers).properties(
            title=alt.Title(f"recall@{k} distribution under load",
                            subtitle=f"{bid}: {rec.height:,} ok queries of the measurement "
                                     f"window at {format_rate(v.get('qps') or 0, 'queries/s')}"),
            width=WIDTH, height=HEIGHT))
        caption = (f"Distribution of per-query recall@{k} (against the exact brute-force top-{k}) "
                   f"over the {rec.height:,} ok queries of the measurement window, measured under "
                   "load; the dashed line is the mean.")
    else:
        chart = no_data_chart(f"recall@{k} distribution", "no query carried a recall value")
        caption = "No query in the measurement window carried a recall value: nothing to plot."
    save_png(chart, plots_dir / vector.PLOT_FILE)
    return [{"path": f"plots/{vector.PLOT_FILE}", "title": f"recall@{k} distribution", "caption": caption}]


def sweep_section(points: list[dict], param: str, out_dir: Path) -> dict:
    """For the sweep report: recall@k and QPS per level, and a QPS-vs-recall plot under
    out_dir/plots/. Returns {"lines", "plots", "rows"}; empty when no point has a vector block."""
    rows = vector.sweep_rows(points)
    if not rows:
        return {"lines": [], "plots": [], "rows": []}
    k = rows[0]["k"]
    lines = [f"## Vector search: recall@{k} and QPS by level", "",
             f"| {param} | Benchmark ID | QPS | recall@{k} mean | p5 | min | queries |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['level']} | {r['benchmark_id']} | {format_number(r['qps'])} | "
                     f"{vector.recall_text(r['recall_mean'])} | {vector.recall_text(r['recall_p5'])} | {vector.recall_text(r['recall_min'])} | "
                     f"{r['n'] or 0:,} |")
    lines += ["", f"![QPS vs recall@{k}](plots/{vector.SWEEP_PLOT})", ""]
    return {"lines": lines, "plots": [f"plots/{vector.SWEEP_PLOT}"] if _sweep_plot(rows, param, Path(out_dir)) else [],
            "rows": rows}


def _sweep_plot(rows: list[dict], param: str, out_dir: Path) -> bool:
    pts = [r for r in rows if r["qps"] is not None and r["recall_mean"] is not None]
    if not pts:
        return False
    k = pts[0]["k"]
    df = pl.DataFrame({"qps": [r["qps"] for r in pts], "recall": [r["recall_mean"] for r in pts],
                       "level": [str(r["level"]) for r in pts],
                       "order": list(range(len(pts)))})
    # recall on an honest scale (up to 1, not zoomed into the noise); points joined in level order
    lo = max(0.0, min(0.9, np.floor((min(df["recall"]) - 0.05) * 20) / 20))
    base = alt.Chart(df).encode(x=alt.X("recall:Q", title=f"mean recall@{k}",
                                        scale=alt.Scale(domain=[lo, 1.0], nice=False)),
                                y=alt.Y("qps:Q", title="queries per second"),
                                order="order:Q")
    chart = alt.layer(base.mark_line(point=True, color="#1f77b4"),
                      base.mark_text(align="left", dx=6, dy=-8, fontSize=13).encode(text="level:N"))
    title = alt.Title(f"QPS vs recall@{k} across the sweep",
                      subtitle=f"one point per level, labelled with {param}")
    save_png(configure(chart.properties(title=title, width=WIDTH, height=HEIGHT)),
             out_dir / "plots" / vector.SWEEP_PLOT)
    return True
