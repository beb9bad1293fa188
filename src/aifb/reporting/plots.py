"""The three plots of a run report, as Altair charts rendered to PNG with vl-convert (offline).

plot_data() reads requests.jsonl in chunks (aifb.analysis.summary.scan_records) and keeps only what the
plots draw: a uniform sample of at most MAX_POINTS requests (bottom-k of a hash of client, seq
and t_start, so the sample is deterministic), exact per-second completion counts, and per-op
CDF points taken at evenly spaced ranks of the sorted measure-phase latencies. Percentiles are
never computed from the sample: the numbers come from summary.json.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import altair as alt
import numpy as np
import polars as pl
import vl_convert as vlc

from aifb.jsonio import write_bytes, write_text
from aifb.reporting import family_plots
from aifb.analysis.slo import LATENCY_STATS
from aifb.analysis.summary import SCAN_SCHEMA, latency_expr, latency_sample, scan_records

MAX_POINTS = 50_000          # scatter points in latency over time
CDF_POINTS_PER_OP = 1_000    # ranks per operation on the CDF curve
MAX_BINS = 2_000             # throughput bins (1 s, widened for long runs)
SCALE = 1.5                  # PNG scale factor
WIDTH, HEIGHT = 640, 320
PHASE_COLORS = {"warmup": "#9e9e9e", "measure": "#1f77b4", "cooldown": "#ff7f0e"}
NO_DATA = "no measured requests"

PLOT_SCHEMA = {k: v for k, v in SCAN_SCHEMA.items()
               if k in ("client", "seq", "op", "t_sched", "t_start", "t_end", "ok", "phase")}
CHART_SCRIPT_SUFFIX = ".vl.js"     # the chart's spec beside its PNG, for the site
PLOT_FILES = ("latency_cdf.png", "latency_over_time.png", "throughput_over_time.png")


@dataclass
class PlotData:
    sample: pl.DataFrame                 # t_end, latency, phase, op, outcome (<= MAX_POINTS)
    sampled: bool                        # True when sample holds fewer rows than the file
    n_records: int
    bins: pl.DataFrame                   # t (bin start, s), outcome, rate (req/s)
    bin_s: float
    cdf: pl.DataFrame                    # op, latency, fraction
    window: tuple[float, float] | None   # measurement window on the run clock
    n_measure_ok: int = 0
    slo_lines: list[dict] = field(default_factory=list)


def time_unit(seconds: float | None) -> tuple[str, float]:
    """(unit label, factor from seconds) for displaying latencies of about this size."""
    if seconds is None or seconds >= 1:
        return "s", 1.0
    if seconds >= 1e-3:
        return "ms", 1e3
    return "µs", 1e6


def _sample_key() -> pl.Expr:
    return pl.struct("client", "seq", "t_start").hash(seed=20260109)


def plot_data(records: Path, run: dict, summary: dict) -> PlotData:
    load = (run.get("recipe") or {}).get("load")
    open_loop = None if not isinstance(load, dict) else load.get("rate") is not None
    if summary.get("load", {}).get("loop") in ("open", "closed"):
        open_loop = summary["load"]["loop"] == "open"

    in_sample = latency_sample(run, open_loop)

    def queries(lf: pl.LazyFrame) -> list[pl.LazyFrame]:
        lf = lf.with_columns(pl.col("ok").fill_null(False), pl.col("op").fill_null("unknown"),
                             latency_expr(open_loop).alias("latency"))
        sample = (lf.with_columns(_sample_key().alias("_k"))
                  .bottom_k(MAX_POINTS, by="_k")
                  .select("_k", "t_end", "latency", "phase", "op", "ok"))
        bins = (lf.group_by(pl.col("t_end").floor().alias("t"), "ok").len())
        meas = (lf.filter(in_sample & pl.col("ok"))
                .select("op", "latency"))
        ext = (lf.filter(pl.col("phase") == "measure")
               .select(pl.len().alias("n"), pl.col("t_start").min().alias("lo"),
                       pl.col("t_end").max().alias("hi")))
        total = lf.select(pl.len().alias("n"))
        return [sample, bins, meas, ext, total]

    (sample, bins, meas, ext, total), _dropped, _note = scan_records(records, queries,
                                                                     schema=PLOT_SCHEMA)
    n_records = int(total["n"].sum())
    sample = sample.sort("_k").head(MAX_POINTS).drop("_k")
    sample = sample.with_columns(
        pl.when(pl.col("ok")).then(pl.lit("ok")).otherwise(pl.lit("error")).alias("outcome")
    ).drop("ok")

    # Throughput: exact completions per 1 s bin, widened for long runs.
    bins = bins.group_by("t", "ok").agg(pl.col("len").sum())
    bin_s = 1.0
    if bins.height:
        t_lo, t_hi = float(bins["t"].min()), float(bins["t"].max())
        span = t_hi - t_lo + 1
        if span > MAX_BINS:
            bin_s = float(math.ceil(span / MAX_BINS))
            bins = (bins.with_columns((pl.col("t") / bin_s).floor() * bin_s)
                    .group_by("t", "ok").agg(pl.col("len").sum()))
        grid = pl.DataFrame({"t": np.arange(t_lo - t_lo % bin_s, t_hi + bin_s, bin_s)})
        full = []
        for ok_value, outcome in ((True, "ok"), (False, "error")):
            part = bins.filter(pl.col("ok") == ok_value).select("t", "len")
            if ok_value is False and part.height == 0:
                continue
            full.append(grid.join(part, on="t", how="left")
                        .with_columns(pl.col("len").fill_null(0),
                                      pl.lit(outcome).alias("outcome")))
        bins = (pl.concat(full).with_columns((pl.col("len") / bin_s).alias("rate"))
                .select("t", "outcome", "rate"))
        # close the last step: the last bin's value holds until the bin's end
        last = bins.filter(pl.col("t") == pl.col("t").max()).with_columns(pl.col("t") + bin_s)
        bins = pl.concat([bins, last])
    else:
        bins = pl.DataFrame(schema={"t": pl.Float64, "outcome": pl.String, "rate": pl.Float64})

    # CDF: evenly spaced ranks of the sorted latencies of each op (first and last included).
    cdf_parts = []
    meas = meas.drop_nulls("latency").sort("latency")
    for op in sorted(meas["op"].unique().to_list()) if meas.height else []:
        x = meas.filter(pl.col("op") == op)["latency"].to_numpy()
        n = len(x)
        idx = np.unique(np.linspace(0, n - 1, min(n, CDF_POINTS_PER_OP)).round().astype(np.int64))
        cdf_parts.append(pl.DataFrame({"op": [str(op)] * len(idx), "latency": x[idx],
                                       "fraction": (idx + 1) / n}))
    cdf = (pl.concat(cdf_parts) if cdf_parts else
           pl.DataFrame(schema={"op": pl.String, "latency": pl.Float64, "fraction": pl.Float64}))

    ls = run.get("load_stats") or {}
    window = None
    if isinstance(ls.get("warmup_end"), (int, float)) and isinstance(ls.get("measure_end"), (int, float)):
        window = (float(ls["warmup_end"]), float(ls["measure_end"]))
    elif ext.height and int(ext["n"].sum()):
        window = (float(ext["lo"].min()), float(ext["hi"].max()))

    slo_lines = []
    for rule in (summary.get("slo") or {}).get("rules", []):
        if rule.get("metric") in LATENCY_STATS and rule.get("threshold") is not None:
            slo_lines.append({"threshold": float(rule["threshold"]), "label": f"SLO {rule['rule']}"})

    return PlotData(sample=sample, sampled=n_records > sample.height, n_records=n_records,
                    bins=bins, bin_s=bin_s, cdf=cdf, window=window,
                    n_measure_ok=meas.height, slo_lines=slo_lines)


# ----------------------------------------------------------------------------- charts

def configure(chart):
    return (chart.configure_title(fontSize=16, anchor="start", subtitleFontSize=12)
            .configure_axis(labelFontSize=12, titleFontSize=13)
            .configure_legend(labelFontSize=12, titleFontSize=12)
            .configure_view(stroke="#cccccc"))


def no_data_chart(title: str, message: str = NO_DATA):
    text = (alt.Chart(pl.DataFrame({"x": [0.5], "y": [0.5], "msg": [message]}))
            .mark_text(fontSize=22, color="#b00020")
            .encode(x=alt.X("x:Q", scale=alt.Scale(domain=[0, 1]), axis=None),
                    y=alt.Y("y:Q", scale=alt.Scale(domain=[0, 1]), axis=None),
                    text="msg:N"))
    return configure(text.properties(title=title, width=WIDTH, height=HEIGHT))


def _scaled_latency(frame: pl.DataFrame, factor: float) -> pl.DataFrame:
    """The rows with a latency, with `lat` = latency in the chart's unit (log axes need > 0)."""
    return frame.filter(pl.col("latency") > 0).with_columns((pl.col("latency") * factor).alias("lat"))


def hover_points(df: pl.DataFrame, x: str, y: str, tooltip: list):
    """Invisible points on a line, so that the site's interactive copy shows the numbers on
    hover (a line is one mark: its tooltip would show its first point only)."""
    return alt.Chart(df).mark_point(size=40, opacity=0.001, filled=True).encode(
        x=x, y=y, tooltip=tooltip)


def latency_cdf_chart(data: PlotData, unit: tuple[str, float], subtitle: str):
    label, factor = unit
    df = _scaled_latency(data.cdf, factor)
    if df.height == 0:
        return no_data_chart("Latency CDF (measurement window)")
    lines = (alt.Chart(df).mark_line(interpolate="step-after", strokeWidth=2)
             .encode(x=alt.X("lat:Q", scale=alt.Scale(type="log"),
                             title=f"latency ({label}, log scale)"),
                     y=alt.Y("fraction:Q", scale=alt.Scale(domain=[0, 1]),
                             title="fraction of requests ≤ latency"),
                     color=alt.Color("op:N", title="operation")))
    layers = [lines, hover_points(df, "lat:Q", "fraction:Q", [
        alt.Tooltip("op:N", title="operation"), alt.Tooltip("lat:Q", title=f"latency ({label})",
                                                            format=".4~g"),
        alt.Tooltip("fraction:Q", title="fraction ≤", format=".4f")])]
    lo, hi = float(df["lat"].min()), float(df["lat"].max())
    rules = [r for r in data.slo_lines if lo / 10 <= r["threshold"] * factor <= hi * 10]
    if rules:
        rdf = pl.DataFrame({"lat": [r["threshold"] * factor for r in rules],
                            "label": [r["label"] for r in rules]})
        layers.append(alt.Chart(rdf).mark_rule(color="#b00020", strokeDash=[6, 4])
                      .encode(x="lat:Q"))
        layers.append(alt.Chart(rdf).mark_text(align="left", dx=4, dy=-6, color="#b00020",
                                               fontSize=12)
                      .encode(x="lat:Q", y=alt.value(HEIGHT - 14), text="label:N"))
    chart = alt.layer(*layers).properties(
        title=alt.Title("Latency CDF (measurement window, ok requests)", subtitle=subtitle),
        width=WIDTH, height=HEIGHT)
    return configure(chart)


def latency_over_time_chart(data: PlotData, unit: tuple[str, float], subtitle: str):
    label, factor = unit
    df = _scaled_latency(data.sample, factor)
    if df.height == 0:
        return no_data_chart("Latency over time")
    layers = []
    if data.window:
        wdf = pl.DataFrame({"start": [data.window[0]], "end": [data.window[1]]})
        layers.append(alt.Chart(wdf).mark_rect(color="#2ca02c", opacity=0.08)
                      .encode(x="start:Q", x2="end:Q"))
    phases = [p for p in PHASE_COLORS if p in set(df["phase"].to_list())]
    points = (alt.Chart(df).mark_point(size=12, opacity=0.5, filled=True)
              .encode(x=alt.X("t_end:Q", title="completion time since run start (s)"),
                      y=alt.Y("lat:Q", scale=alt.Scale(type="log"),
                              title=f"latency ({label}, log scale)"),
                      color=alt.Color("phase:N", title="phase",
                                      scale=alt.Scale(domain=phases,
                                                      range=[PHASE_COLORS[p] for p in phases])),
                      shape=alt.Shape("outcome:N", title="outcome",
                                      scale=alt.Scale(domain=["ok", "error"],
                                                      range=["circle", "cross"])),
                      tooltip=[alt.Tooltip("t_end:Q", title="completed at (s)", format=".3f"),
                               alt.Tooltip("lat:Q", title=f"latency ({label})", format=".4~g"),
                               "op:N", "phase:N", "outcome:N"]))
    layers.append(points)
    chart = alt.layer(*layers).properties(
        title=alt.Title("Latency over time (only the measure phase counts)", subtitle=subtitle),
        width=WIDTH, height=HEIGHT)
    return configure(chart)


def throughput_over_time_chart(data: PlotData, subtitle: str):
    df = data.bins
    if df.height == 0:
        return no_data_chart("Throughput over time")
    layers = []
    if data.window:
        wdf = pl.DataFrame({"start": [data.window[0]], "end": [data.window[1]],
                            "label": ["measurement window"]})
        layers.append(alt.Chart(wdf).mark_rect(color="#2ca02c", opacity=0.15)
                      .encode(x="start:Q", x2="end:Q"))
        layers.append(alt.Chart(wdf).mark_text(align="left", dx=4, dy=10, color="#2ca02c",
                                               fontSize=12)
                      .encode(x="start:Q", y=alt.value(0), text="label:N"))
    bin_s = data.bin_s
    width_label = "1 s" if bin_s == 1 else f"{bin_s:g} s"
    outcomes = [o for o in ("ok", "error") if o in set(df["outcome"].to_list())]
    layers.append(
        alt.Chart(df).mark_line(interpolate="step-after", strokeWidth=1.5)
        .encode(x=alt.X("t:Q", title="completion time since run start (s)",
                        axis=alt.Axis(labelOverlap="greedy", tickMinStep=bin_s)),
                y=alt.Y("rate:Q", title=f"completed requests/s (per {width_label} bin)"),
                color=alt.Color("outcome:N", title="outcome",
                                scale=alt.Scale(domain=outcomes,
                                                range=["#1f77b4", "#d62728"][:len(outcomes)]))))
    layers.append(hover_points(df, "t:Q", "rate:Q", [
        alt.Tooltip("t:Q", title="bin start (s)"), alt.Tooltip("rate:Q", title="requests/s",
                                                               format=".4~g"), "outcome:N"]))
    chart = alt.layer(*layers).properties(
        title=alt.Title("Throughput over time", subtitle=subtitle), width=WIDTH, height=HEIGHT)
    return configure(chart)


def chart_script_path(png: Path) -> Path:
    """Where a PNG's chart is kept as a script for the offline site: plots/x.png -> x.vl.js."""
    return Path(png).with_suffix(CHART_SCRIPT_SUFFIX)


def save_png(chart, path: Path) -> None:
    """Render with vl-convert (offline) and write atomically; keep the Vega-Lite spec beside it
    as a script (chart_script_path) that the site's pages draw interactively. A script, not a
    .json: a page opened from file:// may load <script src> but not fetch() a file."""
    with alt.data_transformers.enable("default", max_rows=None):  # we cap rows ourselves
        spec = chart.to_dict()
    write_bytes(path, vlc.vegalite_to_png(spec, scale=SCALE))
    text = json.dumps(spec, separators=(",", ":"), ensure_ascii=False).replace("<", "\\u003c")
    write_text(chart_script_path(path), "(window.aifbCharts = window.aifbCharts || {})"
               f"[{json.dumps(Path(path).name)}] = {text};\n")


def write_plots(records: Path, run: dict, summary: dict, plots_dir: Path) -> list[dict]:
    """Write the three PNGs (always, with a 'no measured requests' panel when there is nothing
    to draw) and return [{path, title, caption}] with paths relative to the report directory."""
    data = plot_data(records, run, summary)
    p50 = (summary.get("latency_s") or {}).get("p50")
    unit = time_unit(p50 if p50 is not None else
                     (float(data.cdf["latency"].median()) if data.cdf.height else None))
    lat_def = (summary.get("latency_s") or {}).get("definition", "t_end - t_start")
    bid = summary.get("benchmark_id") or ""
    n = data.n_measure_ok
    sample_note = (f"a uniform sample of {data.sample.height:,} of {data.n_records:,} requests"
                   if data.sampled else f"all {data.n_records:,} requests")

    items = []
    if n:
        cdf = latency_cdf_chart(data, unit, f"{bid}: latency = {lat_def}; n = {n:,} pooled over "
                                f"all clients; one curve per operation")
        cdf_caption = (f"Cumulative distribution of latency ({lat_def}) of the {n:,} successful "
                       "requests in the measurement window, pooled over all clients, one curve "
                       "per operation, on a log time axis (drawn through "
                       f"{CDF_POINTS_PER_OP:,} evenly spaced ranks per operation; the "
                       "percentiles in the tables use every sample)"
                       + ("; dashed lines are latency SLO thresholds." if data.slo_lines else "."))
    else:
        cdf = no_data_chart("Latency CDF (measurement window)")
        cdf_caption = "No successful requests in the measurement window: nothing to plot."
    items.append(("latency_cdf.png", "Latency CDF", cdf, cdf_caption))

    if data.sample.height:
        lot = latency_over_time_chart(data, unit, f"{bid}: {sample_note}; shaded band = "
                                      "measurement window")
        lot_caption = (f"Latency of each request against its completion time ({sample_note}), "
                       "coloured by phase: warmup and cooldown are shown but excluded from the "
                       "statistics; errors are crosses.")
    else:
        lot = no_data_chart("Latency over time")
        lot_caption = "No request records: nothing to plot."
    items.append(("latency_over_time.png", "Latency over time", lot, lot_caption))

    if data.bins.height:
        thr = throughput_over_time_chart(data, f"{bid}: all {data.n_records:,} requests counted, "
                                         "by completion time")
        bin_label = "one-second" if data.bin_s == 1 else f"{data.bin_s:g}-second"
        thr_caption = (f"Requests completed per {bin_label} bin over the whole run (successes "
                       "and errors separately, exact counts); the shaded band is the measurement "
                       "window.")
    else:
        thr = no_data_chart("Throughput over time")
        thr_caption = "No request records: nothing to plot."
    items.append(("throughput_over_time.png", "Throughput over time", thr, thr_caption))

    out = []
    for name, title, chart, caption in items:
        save_png(chart, plots_dir / name)
        out.append({"path": f"plots/{name}", "title": title, "caption": caption})
    for family in family_plots.plotters(run):  # service-specific plots (TTFT/TPOT, recall, ...)
        if hasattr(family, "plots"):
            out += family.plots(records, run, summary, plots_dir)
    return out
