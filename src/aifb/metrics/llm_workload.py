"""The shape of an LLM run beside its serving metrics (aifb.metrics.llm): the prefix-cache
state it measured (cold: salted with the run's salt; warm: shared prefixes sent before
measuring; see aifb.clients.llm_shapes), its shared prefixes, and for multi-turn
conversations TTFT and E2EL by turn index.

summary.json gets {"llm_workload": {"cache": {...}, "by_turn": [...]}}; the report a section.
Like the other metrics modules, this reads files only.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from ..summary import (is_open_loop, latency_sample, scan_records, sorted_values,
                       stats_sorted)
from ..units import format_seconds
from . import llm

TURN_SCHEMA = dict(llm.LLM_SCHEMA, turn=pl.Int64)


def by_turn(run: dict, records_path: Path) -> list[dict]:
    """TTFT and E2EL (aifb.metrics.llm's definitions) of the latency sample's ok requests, per
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
    if isinstance(impl.get("conversations"), dict):
        out["conversations"] = impl["conversations"]
        out["by_turn"] = by_turn(run, records_path)
    return {"llm_workload": out} if out else {}


def markdown(summary: dict) -> list[str]:
    wl = summary.get("llm_workload")
    if not wl:
        return []
    lines = ["## LLM workload: cache state and turns", ""]
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
