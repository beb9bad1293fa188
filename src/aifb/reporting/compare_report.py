"""Writing a comparison of runs (aifb.analysis.compare_runs): compare_<A>_<B>.md and .json, and
its plots (the runs' latency CDFs overlaid, their throughput over time overlaid), drawn with the
run report's plot helpers (aifb.reporting.plots)."""

from __future__ import annotations

from pathlib import Path

import altair as alt
import polars as pl

from aifb.analysis.compare_runs import NOT_MEASURED
from aifb.jsonio import write_json, write_text
from aifb.reporting.plots import (HEIGHT, WIDTH, configure, no_data_chart, plot_data, save_png,
                                  time_unit)
from aifb.units import format_metric

PLOT_FILES = ("latency_cdf.png", "throughput_over_time.png")


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 100:+.1f}%"


def _cell(metric: str, cell: dict, first: bool) -> str:
    text = format_metric(metric, cell["value"])
    if first:
        return text
    text += f" ({_pct(cell['rel_delta'])})"
    if cell["beyond_noise"] is not None:
        mark = "beyond noise" if cell["beyond_noise"] else "within noise"
        text += f" {mark} (±{cell['tolerance'] * 100:.3g}%)"
    return text


def _short(value) -> str:
    text = "—" if value is None else str(value)
    return text if len(text) <= 60 else text[:59] + "…"


def _diff_table(title: str, rows: list[dict], labels: list[str], none: str) -> list[str]:
    out = [f"## {title}", ""]
    if not rows:
        return out + [none, ""]
    out += ["| key | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
    for r in rows:
        out.append(f"| `{r['key']}` | " + " | ".join(_short(v) for v in r["values"]) + " |")
    return out + [""]


def render_markdown(c: dict, plots: list[dict]) -> str:
    labels = [s["label"] for s in c["subjects"]]
    out = [f"# Comparison: {' vs '.join(labels)}", "",
           f"Deltas are relative to the first, {c['baseline']}. A column of a sweep level with "
           "repeats shows the mean over its repeats.", ""]
    out += ["| subject | benchmark IDs | runs |", "|---|---|---|"]
    out += [f"| {s['label']} | {', '.join(s['ids'])} | {s['n']} |" for s in c["subjects"]]
    out += ["", "## Headline metrics", "",
            "| metric | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
    for m in c["metrics"]:
        cells = [_cell(m["metric"], cell, i == 0) for i, cell in enumerate(m["cells"])]
        out.append(f"| {m['label']} | " + " | ".join(cells) + " |")
    out += ["", "## Noise", ""]
    out += [f"- {n['label']} vs {c['baseline']}: {n['source']}." for n in c["noise"]]
    if any(cell["noise"] == NOT_MEASURED for m in c["metrics"] for cell in m["cells"]):
        out.append(f"- latency p95, error rate and the family figures: {NOT_MEASURED} (the "
                   "repeats' spread is kept for throughput, p50 and p99).")
    out.append("")
    if c["notes"]:
        out += ["## Notes", ""] + [f"- {n}." for n in c["notes"]] + [""]
    out += _diff_table("Recipe differences", c["recipe_diff"], labels,
                       "The recipes are the same.")
    out += _diff_table("Environment differences", c["environment_diff"], labels,
                       "The same environment (aifb version, git commit, host, CPU, GPU).")
    if c["cache"]:
        out += ["## Cache state (workload.cache)", "",
                ", ".join(f"{lab}: {st or 'unknown'}" for lab, st in zip(labels, c["cache"])), ""]
    out += ["## Plots", ""]
    for p in plots:
        out += [f"### {p['title']}", "", f"![{p['title']}]({p['path']})", "", p["caption"], ""]
    return "\n".join(out)


def overlay_plots(runs: list[tuple[str, Path, dict, dict]], plots_dir: Path) -> list[dict]:
    """The runs' latency CDFs and throughput over time, one colour per run; runs are (label,
    requests.jsonl, run.json, summary.json) of one run per subject."""
    cdfs, bins = [], []
    p50s = []
    for label, records, run, summary in runs:
        data = plot_data(records, run, summary)
        cdfs.append(data.cdf.filter(pl.col("latency") > 0).with_columns(pl.lit(label).alias("run")))
        bins.append(data.bins.filter(pl.col("outcome") == "ok").with_columns(pl.lit(label).alias("run")))
        p50s.append((summary.get("latency_s") or {}).get("p50"))
    label, factor = time_unit(min((p for p in p50s if p is not None), default=None))
    cdf = pl.concat(cdfs).with_columns((pl.col("latency") * factor).alias("lat"))
    if cdf.height:
        chart = (alt.Chart(cdf).mark_line(interpolate="step-after", strokeWidth=2)
                 .encode(x=alt.X("lat:Q", scale=alt.Scale(type="log"),
                                 title=f"latency ({label}, log scale)"),
                         y=alt.Y("fraction:Q", scale=alt.Scale(domain=[0, 1]),
                                 title="fraction of requests ≤ latency"),
                         color=alt.Color("run:N", title="run"),
                         strokeDash=alt.StrokeDash("op:N", title="operation"))
                 .properties(title="Latency CDF (measurement window, ok requests)",
                             width=WIDTH, height=HEIGHT))
        cdf_chart = configure(chart)
    else:
        cdf_chart = no_data_chart("Latency CDF (measurement window)")
    thr = pl.concat(bins)
    if thr.height:
        chart = (alt.Chart(thr).mark_line(interpolate="step-after", strokeWidth=1.5)
                 .encode(x=alt.X("t:Q", title="completion time since run start (s)"),
                         y=alt.Y("rate:Q", title="completed ok requests/s"),
                         color=alt.Color("run:N", title="run"))
                 .properties(title="Throughput over time", width=WIDTH, height=HEIGHT))
        thr_chart = configure(chart)
    else:
        thr_chart = no_data_chart("Throughput over time")
    items = [
        ("latency_cdf.png", "Latency CDF", cdf_chart,
         "Latency CDF of each run's successful requests in its measurement window (one colour "
         "per run, one dash per operation, log time axis); a sweep level is drawn from its "
         "first repeat."),
        ("throughput_over_time.png", "Throughput over time", thr_chart,
         "Successful requests completed per bin over each whole run, by completion time since "
         "the run's start; a sweep level is drawn from its first repeat."),
    ]
    out = []
    for name, title, chart, caption in items:
        save_png(chart, plots_dir / name)
        out.append({"path": f"{plots_dir.name}/{name}", "title": title, "caption": caption})
    return out


def write_comparison_report(comparison: dict, runs: list[tuple[str, Path, dict, dict]],
                            out_base: Path) -> dict:
    """out_base.md, out_base.json and out_base_plots/; returns their paths."""
    out_base = Path(out_base)
    plots_dir = out_base.parent / f"{out_base.name}_plots"
    plots = overlay_plots(runs, plots_dir)
    comparison = dict(comparison, plots=plots)
    md, js = (out_base.parent / f"{out_base.name}.{ext}" for ext in ("md", "json"))
    write_text(md, render_markdown(comparison, plots))
    write_json(js, comparison)
    return {"markdown": md, "json": js, "plots": plots_dir}
