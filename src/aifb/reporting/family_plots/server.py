"""The server family's plots: client and server over time on one clock (a run), and efficiency
against the level (a sweep); figures from aifb.analysis.metrics.server."""

from __future__ import annotations

from pathlib import Path

import altair as alt
import polars as pl

from aifb.analysis.metrics import server
from aifb.reporting.plots import HEIGHT, WIDTH, configure, save_png
from aifb.telemetry import TELEMETRY_FILE
from aifb.telemetry import window as tw


def plots(records_path: Path, run: dict, summary: dict, plots_dir: Path) -> list[dict]:
    tele = run.get("telemetry") or {}
    tel = tw.load(Path(records_path).parent / (tele.get("file") or TELEMETRY_FILE))
    df = server.panel_frame(tel, records_path, tele.get("sources") or [])
    if df.height == 0:
        return []
    xmax = float(df["t"].max())
    x = alt.X("t:Q", title="time since run start (s)", scale=alt.Scale(domain=[0, xmax]))
    win = (summary.get("server") or {}).get("window")
    charts = []
    for panel in [p for p in ("client req/s", "client p99 (s)", "service CPU (cores)",
                              "server queue / in flight", "KV cache usage", "GPU power (W)")
                  if p in set(df["panel"].to_list())]:
        sub = df.filter(pl.col("panel") == panel)
        line = (alt.Chart(sub).mark_line(interpolate="step-after", strokeWidth=1.5)
                .encode(x=x, y=alt.Y("value:Q", title=panel), color=alt.Color("series:N", title=None)))
        layers = [line]
        if win:
            band = pl.DataFrame({"start": [win[0]], "end": [win[1]]})
            layers.insert(0, alt.Chart(band).mark_rect(color="#2ca02c", opacity=0.12)
                          .encode(x="start:Q", x2="end:Q"))
        charts.append(alt.layer(*layers).properties(width=WIDTH, height=110))
    chart = configure(alt.vconcat(*charts).resolve_scale(color="independent").properties(
        title=alt.Title("Client and server over time",
                        subtitle=f"{summary.get('benchmark_id') or ''}: one time base (seconds "
                                 "since the run's t0); shaded = measurement window")))
    save_png(chart, Path(plots_dir) / server.PANEL_FILE)
    return [{"path": f"plots/{server.PANEL_FILE}", "title": "Client and server over time",
             "caption": ("Client throughput (ok requests completed per second) and p99 latency per "
                         "second above the server's own view on the same clock: the service's "
                         "CPU (cores, from its process tree), its queue or requests in flight, "
                         "KV-cache usage and GPU power where the service exposes them.")}]


def sweep_section(points: list[dict], param: str, out_dir: Path) -> dict:
    """The sweep report's server-side columns per level and an efficiency plot (J/output token
    where GPUs were sampled, else service CPU-seconds per 1,000 requests, against the level)."""
    rows = server.sweep_rows(points)
    if not rows:
        return {"lines": [], "plots": [], "rows": []}
    cols = [("requests_ratio", "server/client requests"), ("service_cpu_cores", "service CPU (cores)"),
            ("cpu_s_per_1k_requests", "CPU-s / 1k req"), ("node_cpu_busy_ratio", "node CPU busy"),
            ("gpu_util_mean", "GPU util"), ("j_per_request", "J / req"),
            ("j_per_output_token", "J / output token"), ("kv_cache_usage_p95", "KV cache p95"),
            ("waiting_max", "queue max"), ("gaps", "telemetry gaps")]
    cols = [(k, t) for k, t in cols if any(r[k] is not None for r in rows)]
    lines = ["## Server side by level", "",
             "From each run's `server` block (summary.json; definitions in each run's report).", "",
             f"| {param} | Benchmark ID | " + " | ".join(t for _, t in cols) + " |",
             "|---|---|" + "---:|" * len(cols)]
    for r in rows:
        lines.append(f"| {r['level']} | {r['benchmark_id']} | "
                     + " | ".join(server.figure_text(r[k]) for k, _ in cols) + " |")
    key, title = (("j_per_output_token", "GPU energy per output token (J)")
                  if any(r["j_per_output_token"] is not None for r in rows) else
                  ("cpu_s_per_1k_requests", "service CPU-seconds per 1,000 requests"))
    pts = [r for r in rows if r[key] is not None]
    plots = []
    if pts:
        levels = [str(r["level"]) for r in pts]
        df = pl.DataFrame({"level": levels, "y": [float(r[key]) for r in pts]})
        chart = (alt.Chart(df).mark_line(point=True)
                 .encode(x=alt.X("level:O", sort=levels, title=param), y=alt.Y("y:Q", title=title))
                 .properties(title=f"Efficiency vs {param}", width=WIDTH, height=HEIGHT))
        save_png(configure(chart), Path(out_dir) / "plots" / server.SWEEP_PLOT)
        plots.append(f"plots/{server.SWEEP_PLOT}")
        lines += ["", f"![Efficiency vs level](plots/{server.SWEEP_PLOT})", ""]
    return {"lines": lines, "plots": plots, "rows": rows}
