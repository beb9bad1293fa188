"""Pipeline runs (recipe category: pipeline): each stage's latency, its share of the end-to-end
time, the chat stage's TTFT and TPOT, the query stage's recall@k, and which stage failed.

Read from the records' `stages` (aifb.clients.pipeline), over the ok requests of the latency
sample (aifb.analysis.summary.latency_sample), where every stage ran:

    stages.<name>.latency_s      stage t_end - t_start
    stages.<name>.share_of_e2e   mean stage latency / mean end-to-end latency (latency_s: from
                                 t_sched in open loop, so queueing is outside every stage)
    stages.<name>.ttft_s/tpot_s  a chat stage: t_first - t_start; (t_end - t_first) / (tokens - 1)
    stages.<name>.recall         a query stage: recall@k against the exact top-k
    pipeline.outside_stages_share  1 - the shares' sum: the client's own time between stages
                                 (and queueing, open loop)
    pipeline.breakdown           at p50/p90/p99 of the end-to-end latency: the mean stage times
                                 of the requests ranked within 1% (at least 1 request) of it;
                                 what a slow request spends its time on
    pipeline.stage_sum_exceeds_e2e  requests whose stage times add up to more than their own
                                 end-to-end time (stages run in sequence: must be 0)
    pipeline.failed_by_stage     failed requests of the sample by the stage that failed (a
                                 timeout of the whole request: "(request timeout)")
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from aifb.analysis.metrics import run_kind
from aifb.analysis.summary import (is_open_loop, latency_expr, latency_sample, scan_records,
                                   stats_of)
from aifb.units import format_seconds

STAGE_FIELDS = {"t_start": pl.Float64, "t_end": pl.Float64, "t_first": pl.Float64,
                "ok": pl.Boolean, "tokens": pl.Int64, "recall": pl.Float64, "hits": pl.Int64}
BREAKDOWN_AT = (("p50", 0.50), ("p90", 0.90), ("p99", 0.99))
EPS_S = 1e-6   # the records' times have 9 decimals; sums of 3-4 differences round within this


def applies(run: dict) -> bool:
    return run_kind(run) == "pipeline"


def stages_of(run: dict) -> list[dict]:
    return list((((run.get("recipe") or {}).get("workload") or {}).get("stages")) or [])


def record_schema(names: list[str]) -> dict:
    return {"op": pl.String, "t_sched": pl.Float64, "t_start": pl.Float64, "t_end": pl.Float64,
            "ok": pl.Boolean, "phase": pl.String, "failed_stage": pl.String,
            "stages": pl.Struct({n: pl.Struct(STAGE_FIELDS) for n in names})}


def stage_queries(run: dict, names: list[str], chat: set):
    sample = latency_sample(run, is_open_loop(run))
    e2e = latency_expr(is_open_loop(run))

    def stage(n: str, field: str) -> pl.Expr:
        return pl.col("stages").struct.field(n).struct.field(field)

    def queries(lf: pl.LazyFrame) -> list[pl.LazyFrame]:
        lf = lf.with_columns(pl.col("ok").fill_null(False)).filter(sample)
        cols = [e2e.alias("e2e")]
        for n in names:
            cols.append((stage(n, "t_end") - stage(n, "t_start")).alias(f"{n}.latency"))
            cols.append(stage(n, "recall").alias(f"{n}.recall"))
            if n in chat:
                cols.append((stage(n, "t_first") - stage(n, "t_start")).alias(f"{n}.ttft"))
                cols.append(((stage(n, "t_end") - stage(n, "t_first"))
                             / (stage(n, "tokens") - 1)).alias(f"{n}.tpot"))
        ok = lf.filter(pl.col("ok")).select(cols)
        failed = (lf.filter(~pl.col("ok"))
                  .select(pl.col("failed_stage").fill_null("(request timeout)"))
                  .group_by("failed_stage").len())
        return [ok, failed]
    return queries


def summarize(run: dict, records_path: Path, window_s: float | None) -> dict:
    specs = stages_of(run)
    names = [s["name"] for s in specs]
    if not names:
        return {}
    chat = {s["name"] for s in specs if s.get("op") == "chat"}
    (ok, failed), _dropped, _note = scan_records(records_path, stage_queries(run, names, chat),
                                                 schema=record_schema(names))
    failed = failed.group_by("failed_stage").agg(pl.col("len").sum()).sort("failed_stage")
    e2e_mean = float(ok["e2e"].mean()) if ok.height else None
    stages: dict = {}
    for s in specs:
        n = s["name"]
        lat = stats_of(ok[f"{n}.latency"])
        block = {"op": s.get("op"), "service": s.get("service"), "latency_s": lat,
                 "share_of_e2e": (lat["mean"] / e2e_mean if lat["mean"] is not None
                                  and e2e_mean else None)}
        if n in chat:
            block["ttft_s"] = stats_of(ok[f"{n}.ttft"])
            block["tpot_s"] = stats_of(ok[f"{n}.tpot"])
        if s.get("op") == "query":
            r = ok[f"{n}.recall"].drop_nulls()
            block["recall"] = {"k": s.get("k"), "n": r.len(),
                               "mean": float(r.mean()) if r.len() else None,
                               "min": float(r.min()) if r.len() else None}
        stages[n] = block
    shares = [b["share_of_e2e"] for b in stages.values()]
    lat_cols = [f"{n}.latency" for n in names]
    total = ok.select(pl.sum_horizontal(lat_cols)).to_series() if ok.height else pl.Series([])
    over = int((total > ok["e2e"] + EPS_S).sum()) if ok.height else 0
    return {"stages": stages, "pipeline": {
        "stage_order": names,
        "outside_stages_share": (1 - sum(shares) if None not in shares and shares else None),
        "breakdown": _breakdown(ok, names),
        "stage_sum_exceeds_e2e": over,
        "failed_by_stage": {k: int(v) for k, v in failed.iter_rows()},
    }}


def _breakdown(ok: pl.DataFrame, names: list[str]) -> dict:
    """At each of BREAKDOWN_AT: the e2e percentile's neighbourhood's mean stage times."""
    if ok.height == 0:
        return {}
    frame = ok.sort("e2e")
    n = frame.height
    half = max(1, round(0.01 * n))
    out = {}
    for label, q in BREAKDOWN_AT:
        i = min(n - 1, int(round(q * (n - 1))))
        part = frame.slice(max(0, i - half + 1), min(n, 2 * half - 1))
        row = {name: float(part[f"{name}.latency"].mean()) for name in names}
        e2e = float(part["e2e"].mean())
        row["outside_stages"] = max(0.0, e2e - float(np.sum(list(row.values()))))
        out[label] = {"e2e_s": e2e, "requests": part.height, "stages_s": row}
    return out


def definitions() -> dict:
    return {
        "stages.<name>.latency_s": ("A pipeline stage's time, t_end - t_start of the stage, over "
                                    "the ok requests of the latency sample (every stage ran)."),
        "stages.<name>.share_of_e2e": ("Mean stage latency / mean end-to-end latency (latency_s) "
                                       "of the same requests."),
        "stages.<name>.ttft_s": "A chat stage's time to first token, t_first - t_start of the stage.",
        "stages.<name>.tpot_s": ("A chat stage's time per output token after the first, "
                                 "(t_end - t_first) / (tokens - 1)."),
        "pipeline.breakdown": ("At p50/p90/p99 of the end-to-end latency: the mean stage times of "
                               "the requests ranked within 1% of that percentile."),
    }


def markdown(summary: dict) -> list[str]:
    stages = summary.get("stages") or {}
    pipe = summary.get("pipeline") or {}
    if not stages:
        return []
    out = ["## Pipeline stages", "",
           "| Stage | Op | p50 | p90 | p99 | Mean | Share of e2e |", "|---|---|---|---|---|---|---|"]
    for name, b in stages.items():
        lat = b["latency_s"]
        share = b.get("share_of_e2e")
        out.append(f"| {name} | {b.get('op')} | {format_seconds(lat.get('p50'))} | "
                   f"{format_seconds(lat.get('p90'))} | {format_seconds(lat.get('p99'))} | "
                   f"{format_seconds(lat.get('mean'))} | "
                   f"{'—' if share is None else f'{share * 100:.1f}%'} |")
    other = pipe.get("outside_stages_share")
    if other is not None:
        out.append(f"| (between stages) | | | | | | {other * 100:.1f}% |")
    out.append("")
    for name, b in stages.items():
        if "ttft_s" in b:
            out.append(f"- {name}: TTFT p50 {format_seconds(b['ttft_s'].get('p50'))}, p99 "
                       f"{format_seconds(b['ttft_s'].get('p99'))}; TPOT p50 "
                       f"{format_seconds(b['tpot_s'].get('p50'))}")
        if b.get("recall"):
            r = b["recall"]
            mean = "—" if r["mean"] is None else f"{r['mean']:.3f}"
            out.append(f"- {name}: recall@{r['k']} mean {mean} over {r['n']} queries")
    for label, row in (pipe.get("breakdown") or {}).items():
        parts = ", ".join(f"{n} {format_seconds(v)}" for n, v in row["stages_s"].items())
        out.append(f"- at e2e {label} ({format_seconds(row['e2e_s'])}): {parts}")
    if pipe.get("failed_by_stage"):
        out.append("- failed requests by stage: " + ", ".join(
            f"{k} {v}" for k, v in pipe["failed_by_stage"].items()))
    if pipe.get("stage_sum_exceeds_e2e"):
        out.append(f"- WARNING: {pipe['stage_sum_exceeds_e2e']} request(s) whose stage times add "
                   "up to more than their end-to-end time")
    return out + [""]
