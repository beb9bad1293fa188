"""A pipeline run's plots: the stage-latency breakdown at e2e p50/p90/p99 as stacked bars (from
summary.pipeline.breakdown) and each stage's latency CDF (from the records); in a sweep, each
stage's p99 by level, which shows the stage that breaks first (figures from
aifb.analysis.metrics.pipeline)."""

from __future__ import annotations

from pathlib import Path

import altair as alt
import polars as pl

from aifb.analysis.metrics import pipeline
from aifb.analysis.summary import scan_records
from aifb.reporting.plots import HEIGHT, WIDTH, configure, no_data_chart, save_png, time_unit
from aifb.units import format_seconds

BREAKDOWN_PLOT = "pipeline_breakdown.png"
CDF_PLOT = "pipeline_stage_cdf.png"
SWEEP_PLOT = "pipeline_stage_p99.png"
OUTSIDE = "outside_stages"


def plots(records_path: Path, run: dict, summary: dict, plots_dir: Path) -> list[dict]:
    names = (summary.get("pipeline") or {}).get("stage_order") or []
    if not names:
        return []
    return [_breakdown(summary, names, plots_dir), _cdf(records_path, run, names, plots_dir)]


def _breakdown(summary: dict, names: list[str], plots_dir: Path) -> dict:
    rows = (summary.get("pipeline") or {}).get("breakdown") or {}
    data = [{"at": f"e2e {p}", "stage": s, "order": i, "seconds": v}
            for p, row in rows.items()
            for i, (s, v) in enumerate(row["stages_s"].items())]
    if data:
        unit, factor = time_unit(max(row["e2e_s"] for row in rows.values()))
        df = pl.DataFrame(data).with_columns((pl.col("seconds") * factor).alias("t"))
        chart = (alt.Chart(df).mark_bar()
                 .encode(x=alt.X("at:N", title=None, sort=list(f"e2e {p}" for p in rows)),
                         y=alt.Y("t:Q", title=f"time ({unit})", stack="zero"),
                         color=alt.Color("stage:N", sort=[*names, OUTSIDE],
                                         title="stage"),
                         order=alt.Order("order:Q"),
                         tooltip=["stage:N", "seconds:Q"]))
    else:
        chart = None
    return _save(chart, "where the end-to-end time goes",
                 f"{summary.get('benchmark_id')}: mean stage times of the requests at each e2e "
                 "percentile",
                 "Stacked stage times of the ok requests ranked within 1% of the end-to-end p50, "
                 "p90 and p99 (aifb.analysis.metrics.pipeline); `outside_stages` is the client's "
                 "time between stages (and queueing, open loop).",
                 plots_dir / BREAKDOWN_PLOT, "Stage breakdown")


def _save(chart, title: str, subtitle: str, caption: str, path: Path, name: str) -> dict:
    """Save a run plot (or the no-data chart when `chart` is None); its entry for the report."""
    if chart is None:
        chart = no_data_chart(title, "no ok request")
        caption = "No ok request in the latency sample: nothing to plot."
    else:
        chart = configure(chart.properties(title=alt.Title(title, subtitle=subtitle),
                                           width=WIDTH, height=HEIGHT))
    save_png(chart, path)
    return {"path": f"plots/{path.name}", "title": name, "caption": caption}


def _cdf(records_path: Path, run: dict, names: list[str], plots_dir: Path) -> dict:
    specs = pipeline.stages_of(run)
    chat = {s["name"] for s in specs if s.get("op") == "chat"}
    (ok, _failed), _d, _n = scan_records(records_path, pipeline.stage_queries(run, names, chat),
                                         schema=pipeline.record_schema(names))
    frames = []
    for n in [*names, "e2e"]:
        col = f"{n}.latency" if n != "e2e" else "e2e"
        v = ok[col].drop_nulls().sort()
        if v.len():
            frames.append(pl.DataFrame({"stage": n, "seconds": v,
                                        "fraction": [(i + 1) / v.len() for i in range(v.len())]}))
    if frames:
        df = pl.concat(frames)
        chart = (alt.Chart(df).mark_line(interpolate="step-after")
                 .encode(x=alt.X("seconds:Q", title="latency (s, log scale)",
                                 scale=alt.Scale(type="log")),
                         y=alt.Y("fraction:Q", title="fraction of requests",
                                 axis=alt.Axis(format="%")),
                         color=alt.Color("stage:N", sort=[*names, "e2e"])))
    else:
        chart = None
    return _save(chart, "latency CDF per stage", f"{ok.height:,} ok requests of the latency sample",
                 "Empirical CDF of each stage's latency and of the end-to-end latency (e2e), "
                 "over the ok requests of the latency sample; log time axis.",
                 plots_dir / CDF_PLOT, "Stage latency CDFs")


def sweep_section(points: list[dict], param: str, out_dir: Path) -> dict:
    """Each stage's p99 and share by level, and a plot of the stages' p99 against the level."""
    rows = []
    for p in points:
        s = p.get("summary") or {}
        for name, b in (s.get("stages") or {}).items():
            rows.append({"level": p.get("level"), "benchmark_id": p.get("benchmark_id"),
                         "stage": name, "p99": (b.get("latency_s") or {}).get("p99"),
                         "share": b.get("share_of_e2e")})
    if not rows:
        return {"lines": [], "plots": [], "rows": []}
    lines = ["## Pipeline stages by level", "",
             f"| {param} | Benchmark ID | Stage | p99 | Share of e2e |", "|---|---|---|---:|---:|"]
    for r in rows:
        share = "—" if r["share"] is None else f"{r['share'] * 100:.1f}%"
        lines.append(f"| {r['level']} | {r['benchmark_id']} | {r['stage']} | "
                     f"{format_seconds(r['p99'])} | {share} |")
    pts = [r for r in rows if r["p99"] is not None]
    plots_out = []
    if pts:
        df = pl.DataFrame({"level": [float(r["level"]) for r in pts], "stage": [r["stage"] for r in pts],
                           "p99": [r["p99"] for r in pts]})
        chart = (alt.Chart(df).mark_line(point=True)
                 .encode(x=alt.X("level:Q", title=param),
                         y=alt.Y("p99:Q", title="stage p99 (s, log scale)", scale=alt.Scale(type="log")),
                         color="stage:N"))
        save_png(configure(chart.properties(title="stage p99 by level", width=WIDTH, height=HEIGHT)),
                 Path(out_dir) / "plots" / SWEEP_PLOT)
        lines += ["", f"![stage p99 by level](plots/{SWEEP_PLOT})", ""]
        plots_out.append(f"plots/{SWEEP_PLOT}")
    return {"lines": lines, "plots": plots_out, "rows": rows}
