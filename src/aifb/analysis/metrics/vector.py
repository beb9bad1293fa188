"""Vector-search metrics (kinds chroma, qdrant): recall@k measured under load, and QPS.

Per ok query record of the measurement window the client wrote `recall` = |returned top-k ∩
exact top-k| / min(k, vectors matching the filter), the exact top-k computed by the harness
by brute force on the same data (aifb.clients.vector.common). This module pools those values:

    vector.recall_at_k = {n, mean, p5, p50, min, ...}   over ok measure-phase query records
    vector.k           = the recipe's workload.k
    vector.qps         = ok query records in the window / window_s
    vector.insert_ps   = ok insert records in the window / window_s (when the mix has inserts)

Percentiles as in aifb.analysis.summary (pooled, Hyndman-Fan 7). Reads files only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from aifb.analysis.summary import PERCENTILE_METHOD, quantiles_sorted, scan_records
from aifb.units import format_number, format_rate

KINDS = ("chroma", "qdrant")
PLOT_FILE = "vector_recall.png"
SWEEP_PLOT = "vector_recall_vs_qps.png"

VECTOR_SCHEMA = {"op": pl.String, "ok": pl.Boolean, "phase": pl.String, "recall": pl.Float64,
                 "returned_inserted": pl.Int64}


def _kind(run: dict) -> str | None:
    return ((run.get("service") or {}).get("kind")
            or ((run.get("recipe") or {}).get("service") or {}).get("kind"))


def applies(run: dict) -> bool:
    return _kind(run) in KINDS


def _queries(lf: pl.LazyFrame) -> list[pl.LazyFrame]:
    m = lf.filter((pl.col("phase") == "measure") & pl.col("ok").fill_null(False))
    recall = m.filter((pl.col("op") == "query") & pl.col("recall").is_not_null()).select("recall")
    counts = m.group_by("op").agg(pl.len().alias("len"),
                                  (pl.col("returned_inserted").fill_null(0) > 0).sum().alias("ins"))
    return [recall, counts]


def recall_stats(values: np.ndarray) -> dict:
    """n, mean, min, p5, p50, p95, max (and the fraction of perfect queries) of recall values."""
    x = np.sort(np.asarray(values, dtype=np.float64))
    n = int(len(x))
    if n == 0:
        return {"n": 0, "mean": None, "p5": None, "p50": None, "p95": None, "min": None,
                "max": None, "perfect_fraction": None}
    p5, p50, p95 = quantiles_sorted(x, [0.05, 0.5, 0.95])
    return {"n": n, "mean": float(x.mean()), "p5": p5, "p50": p50, "p95": p95,
            "min": float(x[0]), "max": float(x[-1]),
            "perfect_fraction": float((x >= 1.0 - 1e-12).mean())}


def summarize(run: dict, records_path: Path, window_s: float | None) -> dict:
    (rec, counts), _dropped, _note = scan_records(records_path, _queries, schema=VECTOR_SCHEMA)
    by_op, with_inserted = {}, 0
    if counts.height:
        agg = counts.group_by("op").agg(pl.col("len").sum(), pl.col("ins").sum())
        by_op = {op: int(n) for op, n, _ in agg.iter_rows()}
        with_inserted = int(agg.filter(pl.col("op") == "query")["ins"].sum())
    workload = (run.get("recipe") or {}).get("workload") or {}
    impl = (run.get("clients") or {}).get("implementation") or {}
    n_query = by_op.get("query", 0)
    n_insert = by_op.get("insert", 0)

    def rate(n):
        return n / window_s if window_s else (0.0 if n == 0 else None)

    block = {
        "recall_at_k": {**recall_stats(rec["recall"].to_numpy()), "method": PERCENTILE_METHOD},
        "k": workload.get("k", impl.get("k", 10)),
        "qps": rate(n_query),
        "queries_ok": n_query,
        "inserts_ok": n_insert,
        "insert_ps": rate(n_insert) if n_insert else None,
        "queries_returning_inserted": with_inserted if n_insert or with_inserted else None,
        "vectors": workload.get("vectors", impl.get("vectors")),
        "dimension": workload.get("dimension", impl.get("dimension")),
        "space": impl.get("space") or (workload.get("index") or {}).get("space"),
        "filter": workload.get("filter"),
        "index_reported": {k: v for k, v in (impl.get("index_reported") or {}).items() if k != "raw"}
        or None,
    }
    return {"vector": block}


def definitions() -> dict:
    return {
        "vector.recall_at_k": (
            "recall@k of one query = |returned top-k ∩ exact top-k| / min(k, vectors matching the "
            "query's filter), where the exact top-k is computed by the harness by brute force "
            "(numpy, float64) on the same seeded data, with the same metric and filter; measured "
            "on every ok query of the measurement window, under load. mean, p5, p50, min are "
            "over those queries (pooled over all clients). With inserts in the mix, a returned "
            "vector inserted during the run counts when its distance is within the exact k-th "
            "distance of the preloaded data (it then belongs to the true top-k)."),
        "vector.qps": "Ok query requests in the measurement window / window_s.",
        "vector.insert_ps": "Ok insert requests in the measurement window / window_s.",
        "vector.queries_returning_inserted": (
            "Ok queries of the measurement window whose reply held at least one vector inserted "
            "during the run (only with inserts in the mix)."),
    }


# ----------------------------------------------------------------------------- report

def _f(v, fmt="{:.4f}") -> str:
    return "n/a" if v is None else fmt.format(v)


def markdown(summary: dict) -> list[str]:
    v = summary.get("vector")
    if not v:
        return []
    r = v.get("recall_at_k") or {}
    k = v.get("k")
    lines = [f"## Vector search: recall@{k} under load", "",
             f"Recall of {r.get('n', 0):,} ok queries of the measurement window against the exact "
             f"top-{k} (brute force on the same data; definition under Metric definitions).", "",
             f"| recall@{k} | n | mean | p5 | p50 | min | perfect queries |",
             "|---|---:|---:|---:|---:|---:|---:|",
             f"| all queries | {r.get('n', 0):,} | {_f(r.get('mean'))} | {_f(r.get('p5'))} | "
             f"{_f(r.get('p50'))} | {_f(r.get('min'))} | "
             f"{_f(r.get('perfect_fraction'), '{:.1%}')} |", "",
             "| throughput | value |", "|---|---:|",
             f"| queries | {format_rate(v.get('qps'), 'queries/s')} |"]
    if v.get("insert_ps") is not None:
        lines.append(f"| inserts | {format_rate(v.get('insert_ps'), 'ops/s')} |")
    lines.append("")
    facts = [f"{v.get('vectors'):,} vectors" if isinstance(v.get("vectors"), int) else None,
             f"dimension {v['dimension']}" if v.get("dimension") else None,
             f"space {v['space']}" if v.get("space") else None,
             (f"filter on `{v['filter'].get('field', 'category')}` "
              f"({v['filter'].get('values', 4)} values)") if isinstance(v.get("filter"), dict) else None]
    idx = v.get("index_reported") or {}
    shown = ", ".join(f"{key} {val}" for key, val in idx.items() if val is not None)
    lines.append("Data: " + ", ".join(f for f in facts if f) + "."
                 + (f" Index as reported by the server: {shown}." if shown else ""))
    if v.get("queries_returning_inserted"):
        lines.append(f"{v['queries_returning_inserted']:,} queries returned vectors inserted during "
                     "the run (counted as correct when within the exact k-th distance).")
    if r.get("n") == 0:
        lines.append("⚠️ No query carried a recall value: recall could not be measured.")
    lines.append("")
    return lines


# ----------------------------------------------------------------------------- plots

def plots(records_path: Path, run: dict, summary: dict, plots_dir: Path) -> list[dict]:
    import altair as alt

    from aifb.reporting.plots import HEIGHT, WIDTH, _configure, no_data_chart, save_png

    (rec, _counts), _d, _n = scan_records(records_path, _queries, schema=VECTOR_SCHEMA)
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
        chart = _configure(alt.layer(*layers).properties(
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
    save_png(chart, plots_dir / PLOT_FILE)
    return [{"path": f"plots/{PLOT_FILE}", "title": f"recall@{k} distribution", "caption": caption}]


# ----------------------------------------------------------------------------- sweeps

def sweep_rows(points: list[dict]) -> list[dict]:
    """One row per sweep point with a vector block: points are {"level", "benchmark_id",
    "summary"} (summary.json as a dict, or None)."""
    rows = []
    for p in points:
        v = (p.get("summary") or {}).get("vector")
        if not v:
            continue
        r = v.get("recall_at_k") or {}
        lat = (p.get("summary") or {}).get("latency_s") or {}
        rows.append({"level": p.get("level"), "benchmark_id": p.get("benchmark_id"),
                     "qps": v.get("qps"), "recall_mean": r.get("mean"), "recall_p5": r.get("p5"),
                     "recall_min": r.get("min"), "n": r.get("n"), "k": v.get("k"),
                     "p99_s": lat.get("p99")})
    return rows


def sweep_section(points: list[dict], param: str, out_dir: Path) -> dict:
    """For the sweep report: recall@k and QPS per level, and a QPS-vs-recall plot under
    out_dir/plots/. Returns {"lines", "plots", "rows"}; empty when no point has a vector block."""
    rows = sweep_rows(points)
    if not rows:
        return {"lines": [], "plots": [], "rows": []}
    k = rows[0]["k"]
    lines = [f"## Vector search: recall@{k} and QPS by level", "",
             f"| {param} | Benchmark ID | QPS | recall@{k} mean | p5 | min | queries |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['level']} | {r['benchmark_id']} | {format_number(r['qps'])} | "
                     f"{_f(r['recall_mean'])} | {_f(r['recall_p5'])} | {_f(r['recall_min'])} | "
                     f"{r['n'] or 0:,} |")
    lines += ["", f"![QPS vs recall@{k}](plots/{SWEEP_PLOT})", ""]
    return {"lines": lines, "plots": [f"plots/{SWEEP_PLOT}"] if _sweep_plot(rows, param, Path(out_dir)) else [],
            "rows": rows}


def _sweep_plot(rows: list[dict], param: str, out_dir: Path) -> bool:
    import altair as alt

    from aifb.reporting.plots import HEIGHT, WIDTH, _configure, save_png
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
    save_png(_configure(chart.properties(title=title, width=WIDTH, height=HEIGHT)),
             out_dir / "plots" / SWEEP_PLOT)
    return True
