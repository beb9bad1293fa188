"""The server-side telemetry extension (every kind): summary.json's `server` block, its report
table and the time-aligned panel, for a run that recorded telemetry (run.json `telemetry`,
results/<id>/telemetry.jsonl written by aifb.telemetry.sampler).

The block itself is aifb.telemetry.server (pure Python); here are the client's counts it is
cross-checked against (from requests.jsonl: the requests that completed in the measurement
window, as throughput counts them) and the report's rendering.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from aifb.analysis.summary import CONNECT_OP, latency_window, scan_records
from aifb.telemetry import TELEMETRY_FILE
from aifb.telemetry import window as tw
from aifb.telemetry.server import PROCESS_CPU, SERVER_DEFINITIONS, declared, server_block

CLIENT_SCHEMA = {"op": pl.String, "t_start": pl.Float64, "t_first": pl.Float64,
                 "t_end": pl.Float64, "ok": pl.Boolean, "phase": pl.String,
                 "output_tokens": pl.Int64}
PANEL_FILE = "server_over_time.png"


def applies(run: dict) -> bool:
    return bool(run.get("telemetry"))


def client_counts(records_path: Path) -> dict:
    def queries(lf: pl.LazyFrame):
        m = lf.filter((pl.col("phase") == "measure") & (pl.col("op").fill_null("") != CONNECT_OP))
        ok = m.filter(pl.col("ok").fill_null(False))
        return [m.select(pl.len().alias("requests")),
                ok.select(pl.len().alias("ok"), pl.col("output_tokens").sum().alias("tokens"),
                          pl.col("output_tokens").is_not_null().sum().alias("with_tokens"),
                          (pl.col("t_first") - pl.col("t_start")).mean().alias("ttft"))]
    (req, ok), _dropped, _note = scan_records(records_path, queries, schema=CLIENT_SCHEMA)
    n_ok = int(ok["ok"].sum())
    with_tokens = int(ok["with_tokens"].sum())
    ttft = None
    if ok.height and ok["ttft"].drop_nulls().len():   # chunk means weighted by chunk size
        w = ok.filter(pl.col("ttft").is_not_null())
        ttft = float((w["ttft"] * w["ok"]).sum() / w["ok"].sum())
    return {"requests": int(req["requests"].sum()), "ok": n_ok,
            "output_tokens": int(ok["tokens"].sum()) if with_tokens else None, "ttft_mean_s": ttft}


def summarize(run: dict, records_path: Path, window_s: float | None) -> dict:
    tele = run.get("telemetry") or {}
    path = Path(records_path).parent / (tele.get("file") or TELEMETRY_FILE)
    win = latency_window(run)
    if win is None:
        return {"server": {"warnings": ["run.json has no measurement window (load_stats): the "
                                        "server telemetry was not summarised."]}}
    tel = tw.load(path)
    if not tel.samples:
        return {"server": {"warnings": [f"{path.name} holds no sample: the sampler recorded "
                                        "nothing (see run.json telemetry)."]}}
    block = server_block(tel, win[0], win[1], float(tele.get("interval_s") or 1.0),
                         client_counts(records_path), tele)
    return {"server": block}


def definitions() -> dict:
    return dict(SERVER_DEFINITIONS)


def figure_text(v, fmt="{:.4g}") -> str:
    return "–" if v is None else fmt.format(v)


def markdown(summary: dict) -> list[str]:
    srv = summary.get("server")
    if not srv:
        return []
    lines = ["## Server side", "",
             "What the service's own interfaces said over the measurement window (sampler "
             f"every {figure_text(srv.get('interval_s'), '{:g}')} s; see the panel *Client and server over "
             "time*).", ""]
    for w in srv.get("warnings") or []:
        lines.append(f"- **Warning:** {w}")
    if srv.get("warnings"):
        lines.append("")
    rows = [("figure", "value", "definition")]
    r = srv.get("requests_ratio")
    if r:
        rows.append(("server.requests_ratio", f"{r['value']:.4f} (server {r['server']:.0f} / "
                     f"client {r['client']:.0f}; tolerance ±{r['tolerance']:.3f})", r["basis"]))
    eff = srv.get("efficiency") or {}
    if eff.get("service_cpu_s") is not None:
        rows.append(("service CPU", f"{eff['service_cpu_s']:.3f} s ({eff['service_cpu_cores']:.3f} cores)",
                     "user + system CPU of the service's process tree in the window"))
        rows.append(("CPU-s per 1k requests", figure_text(eff.get("cpu_s_per_1k_requests")),
                     "service CPU seconds x 1000 / requests completed in the window"))
    if eff.get("node_cpu_busy_ratio") is not None:
        rows.append(("node CPU busy", f"{eff['node_cpu_busy_ratio']:.1%}", "1 - (idle + iowait) share of all CPU time"))
    if eff.get("cpu_energy_j") is not None:
        rows.append(("CPU package energy", f"{eff['cpu_energy_j']:.1f} J", "RAPL counters, increase in the window"))
    gpu = eff.get("gpu")
    if gpu:
        rows += [("GPUs", str(gpu["count"]), "NVML devices"),
                 ("GPU utilisation (mean)", figure_text(gpu.get("util_mean"), "{:.1%}"), "NVML utilization.gpu, mean over GPUs"),
                 ("GPU energy", f"{gpu['energy_j']:.1f} J", SERVER_DEFINITIONS["server.efficiency.gpu"]),
                 ("J per request", figure_text(gpu.get("j_per_request")), "GPU energy / ok requests"),
                 ("J per output token", figure_text(gpu.get("j_per_output_token")), "GPU energy / output tokens"),
                 ("output tokens/s per GPU", figure_text(gpu.get("output_tokens_per_s_per_gpu")), "")]
    llm = srv.get("llm") or {}
    for key, label in (("kv_cache_usage_p95", "KV cache usage p95"), ("kv_cache_usage_max", "KV cache usage max"),
                       ("waiting_max", "queue (waiting) max"), ("running_mean", "running (mean)"),
                       ("prefix_cache_hit_rate", "prefix-cache hit rate"), ("preemptions", "preemptions"),
                       ("server_ttft_mean_s", "server TTFT mean (s)"), ("client_ttft_mean_s", "client TTFT mean (s)"),
                       ("network_client_share_s", "network + client share of TTFT (s)")):
        if llm.get(key) is not None:
            rows.append((label, figure_text(llm[key]), "server's /metrics over the window"))
    smp = srv.get("sampler") or {}
    if smp.get("sampler_cpu_s") is not None:
        rows.append(("sampler CPU", f"{smp['sampler_cpu_s']:.3f} s over {smp['sampler_wall_s']:.1f} s "
                     f"({smp['sampler_cpu_util']:.2%} of a core)", "the sampler's own cost (wait4 rusage)"))
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows[:1]] + ["| --- | --- | --- |"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows[1:]]
    lines += ["", "| source | samples | gaps | coverage | errors |", "| --- | --- | --- | --- | --- |"]
    for src, cov in (srv.get("sources") or {}).items():
        lines.append(f"| {src} | {cov['samples']} | {cov['gaps']} | {figure_text(cov.get('coverage'), '{:.0%}')} "
                     f"| {'; '.join(cov.get('errors') or []) or '–'} |")
    for src, err in (srv.get("unavailable") or {}).items():
        lines.append(f"| {src} | unavailable | | | {err or ''} |")
    lines.append("")
    return lines


# ----------------------------------------------------------------------------- the panel

def _rate_points(tel: tw.Telemetry, series: list) -> list[tuple[float, float]]:
    """Summed per-second increase of counters, between consecutive samples (at their midpoint)."""
    pts: dict = {}
    for s in series:
        adj = s.adjusted()
        for k in range(1, len(s.t)):
            dt = s.t[k] - s.t[k - 1]
            if dt > 0:
                key = round(s.t[k], 1)
                pts[key] = pts.get(key, 0.0) + (adj[k] - adj[k - 1]) / dt
    return sorted(pts.items())


def panel_frame(tel: tw.Telemetry, records_path: Path, sources: list[dict]) -> pl.DataFrame:
    """Long format (panel, series, t, value) of every row of the panel; the queue and KV-cache
    series are the ones the sources declare (run.json telemetry.sources, their `figures`)."""
    rows = []

    def add(panel, name, pts):
        rows.extend({"panel": panel, "series": name, "t": float(t), "value": float(v)} for t, v in pts)

    req = pl.DataFrame(schema=CLIENT_SCHEMA)
    if Path(records_path).is_file():
        (req,), _, _ = scan_records(records_path, lambda lf: [lf.filter(pl.col("ok").fill_null(False))
                                    .select("t_start", "t_end")], schema=CLIENT_SCHEMA)
    if req.height:
        per_s = (req.with_columns(sec=pl.col("t_end").floor(), lat=pl.col("t_end") - pl.col("t_start"))
                 .group_by("sec").agg(pl.len().alias("n"), pl.col("lat").quantile(0.99, "linear").alias("p99"))
                 .sort("sec"))
        add("client req/s", "completed ok/s", zip((per_s["sec"] + 0.5).to_list(), per_s["n"].to_list()))
        add("client p99 (s)", "p99 latency per second", zip((per_s["sec"] + 0.5).to_list(), per_s["p99"].to_list()))
    cpu = tel.find(*PROCESS_CPU)
    if cpu:
        add("service CPU (cores)", "process tree", _rate_points(tel, cpu))
    for src, names in declared(sources, "queue"):
        for name in names:
            for s in tel.find(src, name):
                label = f"{src} {name}" + (f" {s.labels}" if s.labels else "")
                add("server queue / in flight", label, zip(s.t, s.v))
    for src, llm in declared(sources, "llm"):
        for name in llm.get("kv_cache_usage", []):
            for s in tel.find(src, name):
                add("KV cache usage", f"{src} {name}", zip(s.t, s.v))
    for s in tel.find("gpu", "power_watts"):
        add("GPU power (W)", f"GPU {s.labels.get('gpu')}", zip(s.t, s.v))
    return pl.DataFrame(rows, schema={"panel": pl.String, "series": pl.String, "t": pl.Float64,
                                      "value": pl.Float64})


# ----------------------------------------------------------------------------- sweeps

SWEEP_PLOT = "server_efficiency_vs_level.png"


def sweep_rows(points: list[dict]) -> list[dict]:
    """One row per sweep point with a server block (points: {"level", "benchmark_id", "summary"})."""
    rows = []
    for p in points:
        srv = (p.get("summary") or {}).get("server")
        if not srv or "efficiency" not in srv:
            continue
        eff, gpu, llm = srv["efficiency"], srv["efficiency"].get("gpu") or {}, srv.get("llm") or {}
        rows.append({"level": p.get("level"), "benchmark_id": p.get("benchmark_id"),
                     "requests_ratio": (srv.get("requests_ratio") or {}).get("value"),
                     "service_cpu_cores": eff.get("service_cpu_cores"),
                     "cpu_s_per_1k_requests": eff.get("cpu_s_per_1k_requests"),
                     "node_cpu_busy_ratio": eff.get("node_cpu_busy_ratio"),
                     "gpu_util_mean": gpu.get("util_mean"), "j_per_request": gpu.get("j_per_request"),
                     "j_per_output_token": gpu.get("j_per_output_token"),
                     "kv_cache_usage_p95": llm.get("kv_cache_usage_p95"), "waiting_max": llm.get("waiting_max"),
                     "gaps": sum(c.get("gaps", 0) for c in (srv.get("sources") or {}).values())})
    return rows


