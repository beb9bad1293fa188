"""A pipeline rerun's stages beside its original's: each stage's latency p50/p99 and share of
the end-to-end latency (summary.json `stages`), with the deltas.

The verdict of a pipeline rerun stays on its end-to-end figures (aifb.analysis.compare): the
stages add up to less than the whole and are not independent of it. A stage's p99 that moved
by more than the end-to-end p99 tolerance is a warning naming that stage, so a rerun that
reproduced overall still says where it did not, and one that did not says which stage moved.
"""

from __future__ import annotations

from aifb.units import format_seconds

STATS = ("p50", "p99")


def _figures(block: dict) -> dict:
    lat = block.get("latency_s") or {}
    return {**{k: lat.get(k) for k in STATS}, "share_of_e2e": block.get("share_of_e2e")}


def _rel(a, b):
    return None if a is None or b is None or a == 0 else (b - a) / abs(a)


def compare_stages(original: dict, rerun: dict, p99_tolerance: float) -> dict | None:
    """{"compared": [{stage, original, rerun, rel_delta: {p50, p99}, within}], "warnings"}
    over the stages of either summary (in the original's order); None for runs that are not
    pipelines."""
    a, b = original.get("stages") or {}, rerun.get("stages") or {}
    if not a and not b:
        return None
    rows, warnings = [], []
    for name in [*a, *(n for n in b if n not in a)]:
        if name not in a or name not in b:
            warnings.append(f"stage {name} is only in the {'original' if name in a else 'rerun'}")
            continue
        fa, fb = _figures(a[name]), _figures(b[name])
        rel = {k: _rel(fa[k], fb[k]) for k in STATS}
        within = None if rel["p99"] is None else abs(rel["p99"]) <= p99_tolerance + 1e-12
        if within is False:
            warnings.append(f"stage {name} p99 {format_seconds(fa['p99'])} -> "
                            f"{format_seconds(fb['p99'])} ({rel['p99'] * 100:+.0f}%, outside "
                            f"±{p99_tolerance * 100:.0f}%)")
        rows.append({"stage": name, "original": fa, "rerun": fb, "rel_delta": rel,
                     "within": within})
    return {"compared": rows, "warnings": warnings}


def line(stages: dict) -> str:
    """'retrieve +3%, fetch -1%, generate +12% (outside ±30%)' for the verdict line."""
    parts = []
    for r in stages["compared"]:
        rel = r["rel_delta"]["p99"]
        parts.append(f"{r['stage']} {'n/a' if rel is None else f'{rel * 100:+.0f}%'}"
                     + (" (outside the p99 tolerance)" if r["within"] is False else ""))
    return ", ".join(parts)


def markdown(stages: dict | None) -> list[str]:
    """The comparison's '### Pipeline stages' lines (none for a run without stages)."""
    if not stages:
        return []
    rows, warnings = stages["compared"], stages["warnings"]
    out = ["### Pipeline stages", "",
           "Each stage's latency (its ok requests); the verdict above is on the end-to-end "
           "figures, a stage outside the p99 tolerance is a warning.", "",
           "| Stage | p50 original | p50 rerun | p99 original | p99 rerun | p99 Δ % | "
           "Share of e2e (original → rerun) | Within |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        pct = "n/a" if r["rel_delta"]["p99"] is None else f"{r['rel_delta']['p99'] * 100:+.1f}%"
        share = " → ".join("n/a" if x is None else f"{x * 100:.1f}%"
                           for x in (r["original"]["share_of_e2e"], r["rerun"]["share_of_e2e"]))
        mark = {True: "✅", False: "⚠️", None: "—"}[r["within"]]
        out.append(f"| {r['stage']} | {format_seconds(r['original']['p50'])} | "
                   f"{format_seconds(r['rerun']['p50'])} | {format_seconds(r['original']['p99'])} | "
                   f"{format_seconds(r['rerun']['p99'])} | {pct} | {share} | "
                   f"{mark} |")
    out.append("")
    out += [f"- **Warning:** {w}." for w in warnings]
    return out + ([""] if warnings else [])
