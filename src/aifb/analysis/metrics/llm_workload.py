"""The shape of an LLM run beside its serving metrics (aifb.analysis.metrics.llm): the prefix-cache
state it measured (cold: salted with the run's salt; warm: shared prefixes sent before
measuring; see aifb.clients.llm.shapes), its shared prefixes, and for multi-turn
conversations TTFT and E2EL by turn index.

summary.json gets {"llm_workload": {"cache": {...}, "by_turn": [...]}}; the report a section.
Like the other metrics modules, this reads files only.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from aifb.analysis.summary import (is_open_loop, latency_sample, scan_records, sorted_values,
                       stats_sorted)
from aifb.units import format_seconds
from aifb.analysis.metrics import llm

TURN_SCHEMA = dict(llm.LLM_SCHEMA, turn=pl.Int64, inputs=pl.Int64)


def embeddings(run: dict, records_path: Path, window_s: float | None) -> dict | None:
    """api openai-embeddings / ollama-embed: inputs/s and prompt tokens/s over the requests
    that completed in the window, latency (t_end - t_start) percentiles over the latency
    sample; None for a run without embedding records."""
    sample = latency_sample(run, is_open_loop(run))

    def queries(lf: pl.LazyFrame) -> list[pl.LazyFrame]:
        lf = lf.filter(pl.col("ok").fill_null(False) & pl.col("inputs").is_not_null())
        return [lf.filter(pl.col("phase") == "measure"), lf.filter(sample)]

    (done, ok), _dropped, _note = scan_records(records_path, queries, schema=TURN_SCHEMA)
    if done.height == 0 and ok.height == 0:
        return None
    inputs, tokens = int(done["inputs"].sum()), done["prompt_tokens"].sum()
    per_s = (lambda v: v / window_s if window_s else None)  # noqa: E731
    return {"requests": done.height, "inputs": inputs, "prompt_tokens": int(tokens or 0),
            "inputs_per_s": per_s(inputs), "tokens_per_s": per_s(float(tokens or 0)),
            "batch_size_mean": inputs / done.height if done.height else None,
            "latency_s": stats_sorted(sorted_values(ok["t_end"] - ok["t_start"]))}


def embedding_rows(points: list[dict]) -> list[dict]:
    """One row per sweep point whose summary has llm_workload.embeddings (points as
    aifb.analysis.metrics.llm.sweep_rows takes them): inputs/s, prompt tokens/s, req/s and the
    latency percentiles, the figures that rank embedding runs (req/s alone hides the batch)."""
    rows = []
    for p in points:
        summary = p.get("summary") or {}
        emb = (summary.get("llm_workload") or {}).get("embeddings")
        if not emb:
            continue
        lat = emb.get("latency_s") or {}
        rows.append({"level": p.get("level"), "benchmark_id": p.get("benchmark_id"),
                     "inputs_per_s": emb.get("inputs_per_s"), "tokens_per_s": emb.get("tokens_per_s"),
                     "batch_size_mean": emb.get("batch_size_mean"),
                     "request_throughput": (summary.get("throughput") or {}).get("rps"),
                     "p50": lat.get("p50"), "p99": lat.get("p99")})
    return rows


def by_turn(run: dict, records_path: Path) -> list[dict]:
    """TTFT and E2EL (aifb.analysis.metrics.llm's definitions) of the latency sample's ok requests, per
    turn index of their conversation; [] for single-turn records."""
    sample = latency_sample(run, is_open_loop(run))

    def queries(lf: pl.LazyFrame) -> list[pl.LazyFrame]:
        return [lf.filter(sample & pl.col("ok").fill_null(False) & pl.col("turn").is_not_null())]

    (ok,), _dropped, _note = scan_records(records_path, queries, schema=TURN_SCHEMA)
    if ok.height == 0:
        return []
    per = llm.per_request_frame(ok)
    out = []
    for turn in sorted(per["turn"].unique().to_list()):
        t = per.filter(pl.col("turn") == turn)
        out.append({"turn": int(turn), "n": t.height,
                    "ttft_s": stats_sorted(sorted_values(t["ttft"])),
                    "e2el_s": stats_sorted(sorted_values(t["e2el"]))})
    return out


def applies(run: dict) -> bool:
    return llm.applies(run)


def summarize(run: dict, records_path: Path, window_s: float | None) -> dict:
    impl = (run.get("clients") or {}).get("implementation") or {}
    out: dict = {}
    if isinstance(impl.get("cache"), dict):
        out["cache"] = impl["cache"]
    emb = embeddings(run, records_path, window_s)
    if emb:
        out["embeddings"] = emb
    if isinstance(impl.get("conversations"), dict):
        out["conversations"] = impl["conversations"]
        out["by_turn"] = by_turn(run, records_path)
    return {"llm_workload": out} if out else {}


def _num(v) -> str:
    return "n/a" if v is None else f"{v:,.1f}"


def markdown(summary: dict) -> list[str]:
    wl = summary.get("llm_workload")
    if not wl:
        return []
    lines = ["## LLM workload: cache state, turns, embeddings", ""]
    cache = wl.get("cache")
    if cache:
        sp = cache.get("shared_prefix")
        lines.append(f"Prefix cache: **{cache.get('state')}** ({cache.get('how')}"
                     + (f"; salt `{cache['salt']}`" if cache.get("salt") else "") + ").")
        warmed = cache.get("warmed")
        if warmed:
            lines.append(f"Warmed before measuring: {warmed.get('prefixes_sent')} shared "
                         f"prefix(es) in {format_seconds(warmed.get('seconds'))}.")
        lines.append(("Shared prefixes: " + (f"{sp['fraction']:.0%} of the requests start with "
                      f"one of {sp['groups']} system prompt(s) of {sp['tokens']} tokens."
                      if sp else "none.")))
        lines.append("Runs in different cache states measure different things: compare TTFT "
                     "only between runs in the same state.")
    emb = wl.get("embeddings")
    if emb:
        lat = emb["latency_s"]
        lines += ["", f"Embeddings: {emb['requests']:,} requests of {emb['batch_size_mean']:.3g} "
                  f"inputs on average: {_num(emb['inputs_per_s'])} inputs/s, "
                  f"{_num(emb['tokens_per_s'])} prompt tokens/s; latency p50 "
                  f"{format_seconds(lat['p50'])}, p90 {format_seconds(lat['p90'])}, p99 "
                  f"{format_seconds(lat['p99'])}."]
    conv = wl.get("conversations")
    if conv:
        lo, hi = conv.get("turns") or [1, 1]
        lines += ["", f"Multi-turn conversations: {lo if lo == hi else f'{lo}-{hi}'} turns each, "
                  f"think time {format_seconds(conv.get('think_time_s'))}; each turn sends the "
                  "whole history (the assistant's actual replies), so later turns have longer "
                  "prompts.", "",
                  "| turn | n | TTFT p50 | TTFT p90 | E2EL p50 | E2EL p90 |",
                  "|---:|---:|---:|---:|---:|---:|"]
        for row in wl.get("by_turn") or []:
            a, b = row["ttft_s"], row["e2el_s"]
            lines.append(f"| {row['turn']} | {row['n']:,} | " + " | ".join(
                format_seconds(v) for v in (a["p50"], a["p90"], b["p50"], b["p90"])) + " |")
    lines.append("")
    return lines
