"""Did a rerun reproduce its original? Throughput and latency of two summary.json files compared
against a stated tolerance.

For each metric (throughput rps, latency p50, latency p99): delta = rerun - original and
rel_delta = delta / original. The rerun reproduced the original when every |rel_delta| is within
that metric's tolerance. The tolerance comes, in order of preference, from

1. `tolerance=` given by the caller (per metric, overriding the rest);
2. `repeat_spread=`: the relative spread CV (std/mean, aifb.stats.relative_spread) measured
   across the n repeats of the original's sweep level, turned into a 95 % prediction interval
   for the difference of two runs (see rerun_tolerance), at least TOLERANCE_FLOOR;
3. DEFAULT_TOLERANCE (see its comment).

A run that did not complete (failed, partial, running) cannot be compared: the verdict is then
"not comparable" with the reason. Nor can two LLM runs that measured different prefix-cache
states (workload.cache: cold | warm; `cache_state`): the index and sweep reports flag such
pairs with `cache_states_note`.

A pipeline's verdict is on its end-to-end figures (summary.json latency_s); its stages are
compared beside them by aifb.analysis.compare_stages (under `stages`; a stage's p99 outside the
p99 tolerance is a warning, never the verdict).

The server block (server telemetry) is compared too, by aifb.analysis.compare_server: its key
figures with their deltas under `server`; one outside its tolerance is a warning, never the
verdict.
"""

from __future__ import annotations

import math
from pathlib import Path

from aifb.analysis import compare_server, compare_stages
from aifb.jsonio import write_json, write_text
from aifb.stats import t_quantile
from aifb.units import format_metric

# Run-to-run noise of short (10-30 s) closed-loop benchmarks on shared 2-core machines (laptops,
# CI runners, login-node-class VMs): the client and the service share the cores with whatever
# else runs, so throughput moves by several percent between identical runs, the median latency a
# little more, and p99 - which rests on the slowest 1 % of a few thousand requests and on
# scheduler hiccups - by tens of percent. These are deliberately generous defaults, used only
# when no repeats of the same point were measured; measure the noise with `repeats:` in a sweep
# and the tolerance comes from the measured spread instead. Adjust them here, by name.
DEFAULT_TOLERANCE = {"rps": 0.10, "p50": 0.15, "p99": 0.30}
DEFAULT_TOLERANCE_SOURCE = (
    "default tolerances (rps ±10%, p50 ±15%, p99 ±30%): the run-to-run noise of short "
    "benchmarks on shared 2-core machines (aifb.analysis.compare.DEFAULT_TOLERANCE); measure repeats of "
    "the point to replace them with its own noise")
PREDICTION_LEVEL = 0.95  # a rerun from the same distribution is judged reproduced 95 % of the time
TOLERANCE_FLOOR = 0.02   # ... but the tolerance is never tighter than 2 %
METRICS = (
    ("rps", ("throughput", "rps"), "throughput"),
    ("p50", ("latency_s", "p50"), "latency p50"),
    ("p99", ("latency_s", "p99"), "latency p99"),
)


def get_path(summary: dict, path: tuple[str, ...]):
    """The value at a key path of nested dicts, None where it stops."""
    node = summary
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def _pct(x: float) -> str:
    return f"{x * 100:.3g}%"


def _signed_pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 100:+.1f}%"


def rerun_tolerance(spread: float, n: int) -> float:
    """Relative tolerance for |rerun - original| / original from the CV of n repeats:
    t(n-1, 95 %) x CV x sqrt(2), at least TOLERANCE_FLOOR.

    This is the two-sample form of the prediction interval: the rerun and the original are each
    one run, so their difference has twice a run's variance (sqrt(2)); the one-sample form
    t(n-1) x CV x sqrt(1 + 1/n) bounds a new run against the *mean* of the n repeats, and
    against the single original it covers only 88 % at n = 10 (simulated; 3 x CV, the old rule,
    covered 74 % at n = 2). tests/unit/analysis/test_compare.py simulates the coverage.
    """
    if n < 2:
        raise ValueError(f"a prediction interval needs at least 2 repeats, got {n}")
    return max(t_quantile(n - 1, PREDICTION_LEVEL) * spread * math.sqrt(2.0), TOLERANCE_FLOOR)


def tolerances(*, tolerance: dict | None = None, repeat_spread: dict | None = None) -> tuple[dict, str]:
    """The per-metric tolerances and a sentence saying where they come from."""
    tol = dict(DEFAULT_TOLERANCE)
    source = DEFAULT_TOLERANCE_SOURCE
    n = (repeat_spread or {}).get("n")
    if repeat_spread and isinstance(n, int) and n >= 2:
        used = []
        for metric in DEFAULT_TOLERANCE:
            spread = repeat_spread.get(metric)
            if spread is not None and math.isfinite(spread):
                tol[metric] = rerun_tolerance(spread, n)
                used.append(metric)
        if used:
            t = t_quantile(n - 1, PREDICTION_LEVEL)
            source = (f"from the spread of {n} repeats of the original's sweep level: a "
                      f"{PREDICTION_LEVEL:.0%} prediction interval for the difference of two runs, "
                      f"t({n - 1}) × CV × √2 = {t * math.sqrt(2):.3g} × relative spread "
                      f"(CV = std/mean; t({n - 1}) = {t:.4g}, the two-sample form), at least "
                      f"{_pct(TOLERANCE_FLOOR)}")
            rest = [m for m in DEFAULT_TOLERANCE if m not in used]
            if rest:
                source += f" (defaults for {', '.join(rest)}: no spread measured)"
    if tolerance:
        unknown = set(tolerance) - set(DEFAULT_TOLERANCE)
        if unknown:
            raise ValueError(f"tolerance for unknown metric(s) {sorted(unknown)}; "
                             f"known: {list(DEFAULT_TOLERANCE)}")
        tol.update({k: float(v) for k, v in tolerance.items()})
        given = ", ".join(f"{k} ±{_pct(v)}" for k, v in tolerance.items())
        source = f"given by the caller ({given})" + (
            "" if set(tolerance) == set(DEFAULT_TOLERANCE) else f"; otherwise {source}")
    return tol, source


def cache_state(summary: dict | None, run: dict | None = None) -> str | None:
    """The prefix-cache state an LLM run measured (workload.cache: "cold" | "warm"), from
    summary.json's llm_workload.cache, else run.json's clients.implementation.cache; None for
    a run without one (not an LLM generation run, or not run yet)."""
    for cache in (((summary or {}).get("llm_workload") or {}).get("cache"),
                  (((run or {}).get("clients") or {}).get("implementation") or {}).get("cache")):
        if isinstance(cache, dict) and cache.get("state"):
            return str(cache["state"])
    return None


def cache_states_note(states: dict) -> str | None:
    """{benchmark id: cache state or None} -> a warning when the runs measured more than one
    prefix-cache state (their TTFT and latencies measure different things), else None."""
    by_state: dict = {}
    for bid, state in states.items():
        if state:
            by_state.setdefault(state, []).append(bid)
    if len(by_state) < 2:
        return None
    parts = "; ".join(f"{st}: {', '.join(ids)}" for st, ids in sorted(by_state.items()))
    return (f"runs with different prefix-cache states (workload.cache) side by side ({parts}): "
            "their TTFT and latencies are not comparable")


def compare_runs(original: dict, rerun: dict, *, tolerance: dict | None = None,
                 repeat_spread: dict | None = None) -> dict:
    """Compare two summary.json dicts (original, rerun); see the module docstring.

    repeat_spread: {"n": repeats, "rps": spread, "p50": spread, "p99": spread} (relative spreads).
    Returns {original, rerun, metrics: [{metric, original, rerun, delta, rel_delta, tolerance,
    within}], verdict ("reproduced" | "not reproduced" | "not comparable"), reason,
    out_of_tolerance, tolerance_source, line, server (aifb.analysis.compare_server), stages
    (aifb.analysis.compare_stages), warnings}.
    """
    oid = original.get("benchmark_id") or "original"
    rid = rerun.get("benchmark_id") or "rerun"
    tol, source = tolerances(tolerance=tolerance, repeat_spread=repeat_spread)
    problems = []
    for label, s in ((oid, original), (rid, rerun)):
        status = s.get("status")
        if status not in ("completed", None):
            reason = f": {s['reason']}" if s.get("reason") else ""
            problems.append(f"{label} is {status}{reason}")
    states = [cache_state(s) for s in (original, rerun)]
    if states[0] and states[1] and states[0] != states[1]:
        problems.append(f"{oid} measured a {states[0]} prefix cache and {rid} a {states[1]} "
                        "one (workload.cache): their latencies measure different things")
    metrics = []
    for key, path, _ in METRICS:
        a, b = get_path(original, path), get_path(rerun, path)
        item = {"metric": key, "original": a, "rerun": b, "delta": None, "rel_delta": None,
                "tolerance": tol[key], "within": None}
        if a is None or b is None:
            missing = oid if a is None else rid
            problems.append(f"{missing} has no {key}")
        else:
            a, b = float(a), float(b)
            item["delta"] = b - a
            if a != 0:
                item["rel_delta"] = (b - a) / abs(a)
            elif b == 0:
                item["rel_delta"] = 0.0
            else:
                problems.append(f"{oid} has {key} = 0, so a relative change is undefined")
            if item["rel_delta"] is not None:
                item["within"] = abs(item["rel_delta"]) <= tol[key] + 1e-12
        metrics.append(item)

    server = compare_server.compare_server(original, rerun, oid, rid)
    stages = compare_stages.compare_stages(original, rerun, tol["p99"])
    parts = [f"{m['metric']} {_signed_pct(m['rel_delta'])} "
             f"{'within' if m['within'] else 'outside'} ±{_pct(m['tolerance'])}"
             for m in metrics if m["within"] is not None]
    detail = f" ({', '.join(parts)})" if parts else ""
    out_of = [m["metric"] for m in metrics if m["within"] is False]
    if problems:
        verdict, reason = "not comparable", "; ".join(dict.fromkeys(problems))
        line = f"{rid} vs {oid}: not comparable ({reason})"
    elif out_of:
        verdict = "not reproduced"
        reason = f"{', '.join(out_of)} out of tolerance"
        line = f"{rid} vs {oid}: not reproduced, {reason}{detail}"
    else:
        verdict, reason = "reproduced", None
        line = f"{rid} vs {oid}: reproduced{detail}"
    if stages and stages["compared"]:
        line += "; stage p99: " + compare_stages.line(stages)
    return {"original": oid, "rerun": rid,
            "original_status": original.get("status"), "rerun_status": rerun.get("status"),
            "metrics": metrics, "verdict": verdict, "reason": reason,
            "out_of_tolerance": out_of, "tolerance_source": source,
            "repeat_spread": repeat_spread, "line": line,
            "server": server, "stages": stages,
            "warnings": server["warnings"] + (stages or {}).get("warnings", [])}


def render_markdown(comparison: dict) -> str:
    """A '## Reproducibility' section: the verdict line, a table of the metrics, the tolerance."""
    c = comparison
    mark = {"reproduced": "✅", "not reproduced": "❌", "not comparable": "⚠️"}.get(c["verdict"], "")
    out = ["## Reproducibility", "",
           f"{mark} **{c['verdict']}**: {c['rerun']} re-ran {c['original']}.", "",
           f"`{c['line']}`", "",
           f"| Metric | {c['original']} (original) | {c['rerun']} (rerun) | Δ | Δ % | Tolerance | Within |",
           "|---|---|---|---|---|---|---|"]
    names = {k: label for k, _, label in METRICS}
    for m in c["metrics"]:
        delta = "n/a" if m["delta"] is None else (
            ("+" if m["delta"] >= 0 else "") + format_metric(m["metric"], m["delta"]))
        within = {True: "✅", False: "❌", None: "—"}[m["within"]]
        out.append(f"| {names.get(m['metric'], m['metric'])} | {format_metric(m['metric'], m['original'])} "
                   f"| {format_metric(m['metric'], m['rerun'])} | {delta} | {_signed_pct(m['rel_delta'])} "
                   f"| ±{_pct(m['tolerance'])} | {within} |")
    out += ["", f"Tolerance: {c['tolerance_source']}."]
    if c["verdict"] == "not comparable":
        out += ["", f"Not comparable: {c['reason']}."]
    elif c["verdict"] == "not reproduced":
        out += ["", f"Out of tolerance: {', '.join(c['out_of_tolerance'])}."]
    out.append("")
    out += compare_stages.markdown(c.get("stages"))
    out += compare_server.markdown(c.get("server"))
    return "\n".join(out)


def write_comparison(comparison: dict, out_dir: Path) -> tuple[Path, Path]:
    """out_dir/comparison.json and out_dir/comparison.md; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    js, md = out_dir / "comparison.json", out_dir / "comparison.md"
    write_json(js, comparison)
    write_text(md, render_markdown(comparison))
    return js, md
