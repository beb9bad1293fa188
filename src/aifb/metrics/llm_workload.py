"""The shape of an LLM run beside its serving metrics (aifb.metrics.llm): the prefix-cache
state it measured (cold: salted with the run's salt; warm: shared prefixes sent before
measuring; see aifb.clients.llm_shapes), its shared prefixes, and for multi-turn
conversations TTFT and E2EL by turn index.

summary.json gets {"llm_workload": {"cache": {...}, "by_turn": [...]}}; the report a section.
Like the other metrics modules, this reads files only.
"""

from __future__ import annotations

from pathlib import Path

from ..units import format_seconds
from . import llm


def applies(run: dict) -> bool:
    return llm.applies(run)


def summarize(run: dict, records_path: Path, window_s: float | None) -> dict:
    impl = (run.get("clients") or {}).get("implementation") or {}
    out: dict = {}
    if isinstance(impl.get("cache"), dict):
        out["cache"] = impl["cache"]
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
    lines.append("")
    return lines
