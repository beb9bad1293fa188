"""Object-storage metrics (the kinds of the object family, aifb.kinds: s3, minio): data rate per
operation and per object size, GET time to first byte by size. Reads requests.jsonl only (the
`size` field the S3 client records).

Not the index's "storage" category, which also holds the kv and sql families (redis, postgres):
this module applies to the object family only (aifb.kinds). Its summary block keeps the name
`storage` because summary.json's format is fixed.

summary.json gains
    "storage": {
      "per_op":  {op: {ok, ops_s, mib_s, bytes}},
      "by_size": [{op, size, ok, ops_s, mib_s, latency_p50_s, latency_p99_s,
                   ttfb_p50_s, ttfb_p99_s}, ...],         # sorted by op, then size
      "window_s", "percentile_method"}
and the report a section with both tables and two plots: MiB/s vs object size per operation,
and the GET time-to-first-byte CDF per object size.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from aifb.analysis.metrics import run_family
from aifb.analysis.summary import (PERCENTILE_METHOD, is_open_loop, latency_expr, latency_sample,
                                   quantiles_sorted, scan_records, sorted_values)
from aifb.units import format_number, format_seconds

MIB = 2 ** 20
CDF_POINTS = 500
SCHEMA = {"op": pl.String, "ok": pl.Boolean, "phase": pl.String, "t_sched": pl.Float64,
          "t_start": pl.Float64, "t_first": pl.Float64, "t_end": pl.Float64,
          "bytes_in": pl.Int64, "bytes_out": pl.Int64, "size": pl.Int64}


def applies(run: dict) -> bool:
    return run_family(run) == "object"


def measured_ok(run: dict, records_path: Path) -> pl.DataFrame:
    open_loop = is_open_loop(run)
    sample = latency_sample(run, open_loop)

    def queries(lf: pl.LazyFrame) -> list[pl.LazyFrame]:
        # counts and rates: completed in the window; latencies: started in it (the sample)
        done = pl.col("phase") == "measure"
        ok = lf.filter((sample | done) & pl.col("ok").fill_null(False))
        return [ok.select(
            done.alias("done"), sample.alias("in_sample"),
            pl.col("op").fill_null("unknown"),
            pl.col("size"),
            (pl.col("bytes_in").fill_null(0) + pl.col("bytes_out").fill_null(0)).alias("bytes"),
            latency_expr(open_loop).alias("latency"),
            (pl.col("t_first") - pl.col("t_start")).alias("ttfb"))]

    (frame,), _, _ = scan_records(records_path, queries, schema=SCHEMA)
    return frame


def _q(values, q: float):
    return quantiles_sorted(values, [q])[0] if len(values) else None


def summarize(run: dict, records_path: Path, window_s: float | None) -> dict:

    df = measured_ok(run, records_path)

    def rate(x: float):
        return x / window_s if window_s else None

    per_op = {}
    done = df.filter(pl.col("done"))
    for op, n, nbytes in done.group_by("op").agg(pl.len(), pl.col("bytes").sum()).sort("op").iter_rows():
        per_op[op] = {"ok": int(n), "ops_s": rate(n), "mib_s": rate(nbytes / MIB), "bytes": int(nbytes)}
    by_size = []
    sized = df.filter(pl.col("size").is_not_null())
    for (op, size), part in sorted(sized.group_by("op", "size"), key=lambda kv: kv[0]):
        sample = part.filter(pl.col("in_sample"))
        lat = sorted_values(sample["latency"])
        ttfb = sorted_values(sample["ttfb"])
        part = part.filter(pl.col("done"))
        nbytes = int(part["bytes"].sum())
        by_size.append({
            "op": op, "size": int(size), "ok": part.height, "ops_s": rate(part.height),
            "mib_s": rate(nbytes / MIB),
            "latency_p50_s": _q(lat, 0.5), "latency_p99_s": _q(lat, 0.99),
            "ttfb_p50_s": _q(ttfb, 0.5), "ttfb_p99_s": _q(ttfb, 0.99),
        })
    return {"storage": {"window_s": window_s, "per_op": per_op, "by_size": by_size,
                        "percentile_method": PERCENTILE_METHOD}}


def definitions() -> dict:
    return {
        "storage.per_op": ("Per operation over the measurement window: ops_s = ok operations / "
                           "window_s; mib_s = payload bytes of the ok operations (PUT body out, "
                           "GET body in; headers and framing excluded) / 2^20 / window_s."),
        "storage.by_size": ("The same per operation and object size (the `size` recorded with "
                            "each request; for list requests there is none), with latency and "
                            "GET time-to-first-byte p50/p99 of that size (over the requests that "
                            "started in the window, as latency_s; counts and rates over those "
                            "that completed in it)."),
        "storage.ttfb": ("GET time to first byte = t_first - t_start, t_first being when the "
                         "response status and headers had arrived (the body not yet read)."),
    }


def size_text(n: int) -> str:
    for unit, f in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if n >= f:
            v = n / f
            return f"{v:g} {unit}" if v == int(v) else f"{v:.3g} {unit}"
    return f"{n} B"


def markdown(summary: dict) -> list[str]:
    st = summary.get("storage")
    if not st:
        return []

    def secs(v):
        return format_seconds(v) if v is not None else "n/a"

    lines = ["## Storage", "",
             "Payload data rate (MiB = 2^20 bytes) of the ok operations in the measurement window.",
             "", "| op | ok | ops/s | MiB/s |", "|---|---:|---:|---:|"]
    for op, o in st["per_op"].items():
        lines.append(f"| {op} | {o['ok']:,} | {format_number(o['ops_s'])} | {format_number(o['mib_s'])} |")
    lines.append("")
    if st["by_size"]:
        lines += ["By object size:", "",
                  "| op | size | ok | ops/s | MiB/s | p50 | p99 | TTFB p50 | TTFB p99 |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in st["by_size"]:
            lines.append(f"| {r['op']} | {size_text(r['size'])} | {r['ok']:,} | "
                         f"{format_number(r['ops_s'])} | {format_number(r['mib_s'])} | {secs(r['latency_p50_s'])} | "
                         f"{secs(r['latency_p99_s'])} | "
                         + (f"{secs(r['ttfb_p50_s'])} | {secs(r['ttfb_p99_s'])} |"
                            if r["ttfb_p50_s"] is not None else "– | – |"))
        lines.append("")
    return lines


