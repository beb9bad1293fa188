"""Vector-search metrics (the vector family of kinds): recall@k measured under load, and QPS.

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

from aifb.analysis.metrics import run_family
from aifb.analysis.summary import PERCENTILE_METHOD, quantiles_sorted, scan_records
from aifb.units import format_rate

PLOT_FILE = "vector_recall.png"
SWEEP_PLOT = "vector_recall_vs_qps.png"

VECTOR_SCHEMA = {"op": pl.String, "ok": pl.Boolean, "phase": pl.String, "recall": pl.Float64,
                 "returned_inserted": pl.Int64}


def applies(run: dict) -> bool:
    return run_family(run) == "vector"


def recall_queries(lf: pl.LazyFrame) -> list[pl.LazyFrame]:
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
    (rec, counts), _dropped, _note = scan_records(records_path, recall_queries, schema=VECTOR_SCHEMA)
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

def recall_text(v, fmt="{:.4f}") -> str:
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
             f"| all queries | {r.get('n', 0):,} | {recall_text(r.get('mean'))} | {recall_text(r.get('p5'))} | "
             f"{recall_text(r.get('p50'))} | {recall_text(r.get('min'))} | "
             f"{recall_text(r.get('perfect_fraction'), '{:.1%}')} |", "",
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


