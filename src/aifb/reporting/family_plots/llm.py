"""The LLM family's plots (TTFT, TPOT and ITL distributions, output tokens/s over time) and its
sweep section (tokens/s and TTFT/TPOT percentiles against the level), drawn from what
aifb.analysis.metrics.llm computes."""

from __future__ import annotations

from pathlib import Path

import altair as alt
import numpy as np
import polars as pl

from aifb.analysis.metrics import llm as llm_metrics  # `llm` is the summary block below
from aifb.analysis.metrics import llm_workload
from aifb.analysis.summary import scan_records, sorted_values
from aifb.reporting.plots import HEIGHT, WIDTH, configure, no_data_chart, save_png, time_unit
from aifb.units import format_number, format_seconds


def _dist_chart(values: np.ndarray, title: str, subtitle: str, stats: dict, slo: float | None):
    unit, factor = time_unit(stats.get("p50"))
    df = pl.DataFrame({"v": values * factor})
    hist = (alt.Chart(df).mark_bar(opacity=0.8, color="#1f77b4")
            .encode(x=alt.X("v:Q", bin=alt.Bin(maxbins=60), title=f"{title} ({unit})"),
                    y=alt.Y("count():Q", title="samples")))
    marks = [(k.upper(), stats.get(k)) for k in ("p50", "p99") if stats.get(k) is not None]
    if slo is not None:
        marks.append(("SLO", slo))
    layers = [hist]
    if marks:
        mdf = pl.DataFrame({"v": [v * factor for _, v in marks],
                            "label": [f"{k} {format_seconds(v)}" for k, v in marks]})
        layers.append(alt.Chart(mdf).mark_rule(color="#b00020", strokeDash=[6, 4])
                      .encode(x="v:Q"))
        layers.append(alt.Chart(mdf).mark_text(align="left", dx=4, dy=-6, color="#b00020",
                                               fontSize=12, angle=0)
                      .encode(x="v:Q", y=alt.value(14), text="label:N"))
    chart = alt.layer(*layers).properties(title=alt.Title(f"{title} distribution", subtitle=subtitle),
                                          width=WIDTH, height=HEIGHT)
    return configure(chart)


def _tokens_chart(tok: pl.DataFrame, window, subtitle: str):
    layers = []
    if window:
        wdf = pl.DataFrame({"start": [window[0]], "end": [window[1]]})
        layers.append(alt.Chart(wdf).mark_rect(color="#2ca02c", opacity=0.15)
                      .encode(x="start:Q", x2="end:Q"))
    layers.append(alt.Chart(tok).mark_line(interpolate="step-after", strokeWidth=1.5)
                  .encode(x=alt.X("t:Q", title="time since run start (s)"),
                          y=alt.Y("tokens:Q", title="output tokens/s (per 1 s bin)")))
    chart = alt.layer(*layers).properties(title=alt.Title("Output tokens/s over time", subtitle=subtitle),
                                          width=WIDTH, height=HEIGHT)
    return configure(chart)


def plots(records_path: Path, run: dict, summary: dict, plots_dir: Path) -> list[dict]:
    (ok, tok), _d, _n = scan_records(records_path,
                                     llm_metrics.plot_queries(llm_metrics.request_sample(run)),
                                     schema=llm_metrics.LLM_SCHEMA)
    llm = summary.get("llm") or {}
    bid = summary.get("benchmark_id") or ""
    g = (llm.get("goodput") or {}).get("slos_s") or {}
    per = llm_metrics.per_request_frame(ok)
    rng = np.random.default_rng(20260109)
    items = []
    for key, name, values, slo in (
            ("ttft", "TTFT", sorted_values(per["ttft"]), g.get("ttft")),
            ("tpot", "TPOT", sorted_values(per["tpot"]), g.get("tpot")),
            ("itl", "ITL", sorted_values(llm_metrics.itl_values(ok)), None)):
        stats = llm.get(f"{key}_s") or {}
        fname = f"llm_{key}.png"
        if len(values):
            shown = values if len(values) <= llm_metrics.MAX_PLOT_SAMPLES else np.sort(
                rng.choice(values, llm_metrics.MAX_PLOT_SAMPLES, replace=False))
            note = (f"all {len(values):,} samples" if len(shown) == len(values)
                    else f"a uniform sample of {len(shown):,} of {len(values):,}")
            chart = _dist_chart(shown, name, f"{bid}: {note}, pooled over all clients", stats, slo)
            caption = (f"Histogram of {name} over the ok requests of the measurement window "
                       f"({note}); dashed lines mark p50, p99"
                       + (" and the goodput SLO" if slo is not None else "") + ".")
        else:
            chart = no_data_chart(f"{name} distribution", f"no {name} samples")
            caption = f"No {name} samples in the measurement window."
        save_png(chart, plots_dir / fname)
        items.append({"path": f"plots/{fname}", "title": f"{name} distribution", "caption": caption})

    ls = run.get("load_stats") or {}
    window = None
    if isinstance(ls.get("warmup_end"), (int, float)) and isinstance(ls.get("measure_end"), (int, float)):
        window = (float(ls["warmup_end"]), float(ls["measure_end"]))
    tok = tok.group_by("t").agg(pl.col("tokens").sum()).sort("t")
    if tok.height:
        grid = pl.DataFrame({"t": np.arange(float(tok["t"].min()), float(tok["t"].max()) + 2.0)})
        tok = grid.join(tok, on="t", how="left").with_columns(pl.col("tokens").fill_null(0.0))
        chart = _tokens_chart(tok, window, f"{bid}: output tokens of ok requests, spread over "
                                           "their chunk arrivals; shaded = measurement window")
        caption = ("Output tokens per one-second bin over the whole run (each ok request's "
                   "output_tokens spread evenly over its chunk arrival times; non-streamed "
                   "requests at t_end); the shaded band is the measurement window.")
    else:
        chart = no_data_chart("Output tokens/s over time", "no ok requests")
        caption = "No ok requests: nothing to plot."
    save_png(chart, plots_dir / "llm_tokens_over_time.png")
    items.append({"path": "plots/llm_tokens_over_time.png", "title": "Output tokens/s over time",
                  "caption": caption})
    return items


def sweep_section(points: list[dict], param: str, out_dir: Path) -> dict:
    """For the sweep report: a Markdown section (tokens/s, TTFT/TPOT percentiles vs the swept
    parameter) and two plots under out_dir/plots/. Returns {"lines", "plots", "rows"}; empty
    when no point has an llm block."""
    lines = embeddings_sweep_lines(points, param)
    rows = llm_metrics.sweep_rows(points)
    if not rows:
        return {"lines": lines, "plots": [], "rows": []}
    lines += ["## LLM metrics by level", "",
             f"| {param} | Benchmark ID | output tok/s | req/s | goodput req/s | TTFT p50 | "
             "TTFT p99 | TPOT p50 | TPOT p99 | ITL p99 | E2EL p99 |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['level']} | {r['benchmark_id']} | {format_number(r['output_token_throughput'])} | "
                     f"{format_number(r['request_throughput'])} | {format_number(r['goodput'])} | "
                     + " | ".join(format_seconds(r[k]) for k in
                                  ("ttft_p50", "ttft_p99", "tpot_p50", "tpot_p99", "itl_p99", "e2el_p99"))
                     + " |")
    lines += ["", "![Output tokens/s vs level](plots/llm_tokens_vs_level.png)", "",
              "![TTFT and TPOT vs level](plots/llm_latency_vs_level.png)", ""]
    plots = _sweep_plots(rows, param, Path(out_dir))
    return {"lines": lines, "plots": plots, "rows": rows}


def embeddings_sweep_lines(points: list[dict], param: str) -> list[str]:
    """The sweep report's table of embedding points: inputs/s ranks them (a level that doubles
    the batch halves req/s at the same inputs/s)."""
    rows = llm_workload.embedding_rows(points)
    if not rows:
        return []
    lines = ["## Embeddings by level", "",
             "Embedding requests carry a batch of inputs each: compare levels by inputs/s "
             "(the sweep's optimum is chosen by req/s, the same order while the batch size "
             "is fixed).", "",
             f"| {param} | Benchmark ID | inputs/s | prompt tokens/s | req/s | inputs per request "
             "| latency p50 | latency p99 |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['level']} | {r['benchmark_id']} | {format_number(r['inputs_per_s'])} | "
                     f"{format_number(r['tokens_per_s'])} | {format_number(r['request_throughput'])} | "
                     f"{format_number(r['batch_size_mean'])} | {format_seconds(r['p50'])} | "
                     f"{format_seconds(r['p99'])} |")
    return lines + [""]


def _sweep_plots(rows: list[dict], param: str, out_dir: Path) -> list[str]:
    levels = [str(r["level"]) for r in rows]
    tdf = pl.DataFrame({"level": levels,
                        "tokens": [r["output_token_throughput"] for r in rows]}, strict=False)
    thr = (alt.Chart(tdf).mark_line(point=True)
           .encode(x=alt.X("level:O", sort=levels, title=param),
                   y=alt.Y("tokens:Q", title="output tokens/s")))
    save_png(configure(thr.properties(title="Output tokens/s vs level", width=WIDTH,
                                       height=HEIGHT)), out_dir / "plots" / "llm_tokens_vs_level.png")
    recs = []
    for r in rows:
        for m in ("ttft", "tpot"):
            for k in ("p50", "p99"):
                if r[f"{m}_{k}"] is not None:
                    recs.append({"level": str(r["level"]), "series": f"{m.upper()} {k}",
                                 "ms": r[f"{m}_{k}"] * 1e3})
    ldf = pl.DataFrame(recs, schema={"level": pl.String, "series": pl.String, "ms": pl.Float64})
    lat = (alt.Chart(ldf).mark_line(point=True)
           .encode(x=alt.X("level:O", sort=levels, title=param),
                   y=alt.Y("ms:Q", title="milliseconds", scale=alt.Scale(type="log")),
                   color=alt.Color("series:N", title="percentile")))
    save_png(configure(lat.properties(title="TTFT and TPOT percentiles vs level", width=WIDTH,
                                       height=HEIGHT)), out_dir / "plots" / "llm_latency_vs_level.png")
    return ["plots/llm_tokens_vs_level.png", "plots/llm_latency_vs_level.png"]
