"""The sweep verdict: how every level of a sweep is judged, which level is the optimum, and the
headline that says so (reporting.sweep_report renders it into reports/sweep_<first>_<last>/).

It answers one question first: what is the most load this service takes while meeting its SLO?
Every level of the swept parameter is judged against the *sweep's* SLO (config/config.yaml,
evaluated here with aifb.analysis.slo on each point's summary.json), not the SLO of the point's own recipe.

- A level passes when every run at that level completed, every SLO rule holds and its error
  rate is within the sweep's error budget (`error_budget:`, default 1 %). Failed, partial,
  running or missing runs never pass.
- A rule is judged on what was measured: the value of the single run, or with repeats the mean
  over the repeats, shown with its 95 % Student-t confidence interval beside it. More repeats
  therefore never make a verdict worse by construction: a level truly inside the SLO passes
  more often, not less (tests/unit/reporting/test_sweep_report.py simulates it). Requiring every repeat to
  pass would not do that (P(all pass) = p^n falls with n), nor would the pessimistic end of the
  interval (with 2 repeats the bound is mean + 6.35 x |x1 - x2|).
- Only when the sweep asks for a confidence level (`confidence: 0.95`) is a rule checked
  against the one-sided bound at that level (upper for `<`/`<=`, lower for `>`/`>=`); that
  needs at least 2 repeats, and a rule the mean meets but the bound does not says how many
  repeats at the measured spread would let it pass (repeats_needed).
- The optimum is the passing level with the highest (mean) throughput; a tie goes to the lower
  level (fewer resources for the same result).

Reads files only (run.json, summary.json), so it can be rebuilt anywhere.
"""

from __future__ import annotations

import math
from pathlib import Path

from aifb.analysis.compare import cache_state
from aifb.analysis.slo import SloRule, measured_value, parse_rules
from aifb.jsonio import read_json
from aifb.stats import mean_ci, t_quantile
from aifb.units import format_metric, format_rate, format_seconds

LATENCY_KEYS = ("p50", "p95", "p99")
STATUS_LABEL = {
    "completed": "✅ completed",
    "failed": "❌ failed",
    "partial": "⚠️ partial",
    "running": "🏃 running",
    "missing": "⏳ not run",
    "no summary": "⚠️ no summary",
}
DEFAULT_ERROR_BUDGET = 0.01   # a level with more than 1 % failed requests is not usable
MAX_REPEATS_NEEDED = 1000     # repeats_needed looks no further


def short_reason(text: str | None, limit: int = 80) -> str:
    if not text:
        return "no reason recorded"
    line = str(text).strip().splitlines()[0] if str(text).strip() else "no reason recorded"
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


def level_str(level) -> str:
    return f"{level:g}" if isinstance(level, float) else str(level)


# ----------------------------------------------------------------------------- reading points

def _load(path: Path) -> dict | None:
    try:
        data = read_json(path)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_point(point: dict, run_dir: Path | None, rules: list[SloRule]) -> dict:
    bid = point.get("benchmark_id") or (run_dir.name if run_dir else None)
    run = _load(run_dir / "run.json") if run_dir else None
    summary = _load(run_dir / "summary.json") if run_dir else None
    status = (run or {}).get("status") or (summary or {}).get("status")
    reason = (run or {}).get("reason") or (summary or {}).get("reason")
    if run is None and summary is None:
        status, reason = "missing", "no run.json or summary.json"
    elif summary is None and status == "completed":
        status, reason = "no summary", "summary.json is missing"
    elif status is None:
        status = "completed" if summary is not None else "missing"
    rec = {"benchmark_id": bid, "level": point.get("level"), "repeat": point.get("repeat", 0),
           "recipe_path": point.get("recipe_path"), "status": status, "reason": reason,
           "has_summary": summary is not None, "rps": None, "p50": None, "p95": None,
           "p99": None, "error_rate": None, "n": None, "requests": None, "rule_values": [],
           "warnings": [], "cache_state": cache_state(summary, run)}
    if summary is None:
        rec["rule_values"] = [(None, reason) for _ in rules]
        return rec
    lat = summary.get("latency_s") or {}
    req = summary.get("requests") or {}
    rec["n"] = lat.get("n")
    rec["requests"] = req.get("total")
    rec["rps"] = (summary.get("throughput") or {}).get("rps")
    if lat.get("n"):
        for k in LATENCY_KEYS:
            rec[k] = lat.get(k)
    if req.get("total"):
        rec["error_rate"] = (req.get("errors") or 0) / req["total"]
    rec["rule_values"] = [measured_value(r.metric, summary, r.op) for r in rules]
    rec["warnings"] = list((summary.get("validity") or {}).get("warnings") or [])
    return rec


def _level_status(points: list[dict]) -> str:
    statuses = [p["status"] for p in points]
    for s in ("failed", "partial", "running", "no summary", "missing"):
        if s in statuses:
            return s
    if all(s == "completed" for s in statuses):
        return "completed"
    return next(s for s in statuses if s != "completed")


def parse_error_budget(value) -> float:
    """The error budget as a fraction: None -> DEFAULT_ERROR_BUDGET, "2%" -> 0.02, 0.02 -> 0.02."""
    if value is None:
        return DEFAULT_ERROR_BUDGET
    try:
        if isinstance(value, str) and value.strip().endswith("%"):
            budget = float(value.strip()[:-1]) / 100
        elif isinstance(value, bool):
            raise ValueError
        else:
            budget = float(value)
    except ValueError:
        raise ValueError(f"error_budget {value!r}: a percentage (\"1%\") or a fraction "
                         "(0.01)") from None
    if not 0.0 <= budget <= 1.0:
        raise ValueError(f"error_budget {value!r} must be between 0 and 100%")
    return budget


def error_budget_rule(budget: float) -> SloRule:
    """The error budget as one more rule, judged like any other."""
    return SloRule(text=f"error_rate <= {budget * 100:g}% (error budget)", metric="error_rate",
                   op="<=", threshold=budget)


def judged_rules(sweep: dict) -> tuple[list[SloRule], float | None]:
    """(the rules a level is judged on: the sweep's SLO, then its error budget; confidence)."""
    rules = parse_rules(sweep.get("slo"))
    rules.append(error_budget_rule(parse_error_budget(sweep.get("error_budget"))))
    confidence = sweep.get("confidence")
    if confidence is not None and not 0.5 <= float(confidence) < 1.0:
        raise ValueError(f"confidence {confidence!r} must be at least 0.5 and below 1")
    return rules, (float(confidence) if confidence is not None else None)


def one_sided_bound(rule: SloRule, mean: float, std: float, n: int, confidence: float) -> float:
    """The pessimistic one-sided Student-t bound on the mean at `confidence`: the upper bound
    for `<`/`<=` rules, the lower one for `>`/`>=` rules (n >= 2)."""
    half = t_quantile(n - 1, 2 * confidence - 1) * std / math.sqrt(n)
    return mean + half if rule.op in ("<", "<=") else mean - half


def repeats_needed(rule: SloRule, mean: float, std: float, confidence: float) -> int | None:
    """The fewest repeats whose one-sided bound would meet the rule if the mean and spread
    stayed as measured; None when the mean itself misses (no number of repeats helps) or more
    than MAX_REPEATS_NEEDED would be needed."""
    if not rule.check(mean):
        return None
    for n in range(2, MAX_REPEATS_NEEDED + 1):
        if rule.check(one_sided_bound(rule, mean, std, n, confidence)):
            return n
    return None


def judge_rule(rule: SloRule, values: list, confidence: float | None = None) -> dict:
    """One rule over the values of the runs at a level ((value, why-missing) pairs, one per run).

    Without `confidence`, the rule is checked against what was measured: the single value, or
    the mean of the repeats. With it, against the one-sided bound at that confidence (needs
    n >= 2). Either way the 95 % confidence interval of the mean is reported beside
    (ci_low, ci_high)."""
    missing = [why for v, why in values if v is None]
    ci = mean_ci(v for v, _ in values)
    n, mean = ci["n"], ci["mean"]
    value, bound, note, needed = mean, None, None, None
    if not values:
        value, note = None, "no run produced a summary"
    elif missing:
        value, note = None, missing[0] or f"{rule.metric} not measured"
    elif confidence is not None:
        bound = f"{'upper' if rule.op in ('<', '<=') else 'lower'} {confidence:.0%} bound"
        if n < 2:
            value, note = None, (f"a {confidence:.0%} confidence bound needs at least 2 repeats "
                                 f"(the sweep's `confidence:`); have {n}")
        else:
            value = one_sided_bound(rule, mean, ci["std"], n, confidence)
            if not rule.check(value):
                needed = repeats_needed(rule, mean, ci["std"], confidence)
    passed = value is not None and not math.isnan(value) and rule.check(value)
    measured = format_metric(rule.metric, value)
    if bound and value is not None:
        measured += f" ({bound}; mean {format_metric(rule.metric, mean)})"
    elif n > 1 and value is not None:
        measured += (f" (mean of {n}; 95% CI {format_metric(rule.metric, ci['low'])} to "
                     f"{format_metric(rule.metric, ci['high'])})")
    item = {"rule": rule.text, "metric": rule.metric, "op": rule.op,
            "threshold": rule.threshold, "value": value, "bound": bound,
            "basis": bound or ("mean of the repeats" if n > 1 else "the run's value"),
            "mean": mean, "ci_low": ci["low"], "ci_high": ci["high"], "n": n,
            "confidence": confidence, "passed": passed, "measured": measured}
    if confidence is not None and not passed and value is not None:
        item["repeats_needed"] = needed
        note = (f"the mean meets it; about {needed} repeats at this spread would bring the "
                f"{bound} inside" if needed else
                "the mean itself misses it: more repeats would not help"
                if not rule.check(mean) else
                f"more than {MAX_REPEATS_NEEDED} repeats at this spread would be needed")
    if note:
        item["note"] = note
    return item


def judge_level(level, points: list[dict], rules: list[SloRule],
           confidence: float | None = None) -> dict:
    status = _level_status(points)
    completed = [p for p in points if p["status"] == "completed" and p["has_summary"]]
    used = completed or [p for p in points if p["has_summary"]]
    cis = {"rps": mean_ci(p["rps"] for p in used),
           **{k: mean_ci(p[k] for p in used) for k in LATENCY_KEYS},
           "error_rate": mean_ci(p["error_rate"] for p in used)}
    slo = [judge_rule(rule, [p["rule_values"][i] for p in used], confidence)
           for i, rule in enumerate(rules)]
    passed = (status == "completed" and len(completed) == len(points)
              and all(r["passed"] for r in slo))
    if status != "completed":
        bad = [p for p in points if p["status"] != "completed"]
        verdict = "failed run" if status in ("failed", "partial", "no summary") else status
        why = "; ".join(f"{p['benchmark_id']} {p['status']}" +
                        (f": {short_reason(p['reason'])}" if p["reason"] else "") for p in bad)
        verdict_text = f"❌ failed run ({why})" if verdict == "failed run" else \
            f"{STATUS_LABEL.get(status, status)} ({why})"
    elif passed:
        verdict, verdict_text = "pass", "✅ pass"
    else:
        verdict = "fail"
        broken = [f"{r['rule']}: {format_metric(r['metric'], r['value'])}" +
                  (f" at the {r['bound']}" if r["bound"] else "") +
                  (f" ({r['note']})" if r.get("note") and r["value"] is not None else "")
                  if r["value"] is not None else f"{r['rule']}: {r.get('note')}"
                  for r in slo if not r["passed"]]
        verdict_text = "❌ fail: " + "; ".join(broken)
    multi = len(points) >= 2
    return {
        "level": level,
        "ids": [p["benchmark_id"] for p in points],
        "status": status,
        "reasons": [p["reason"] for p in points if p["status"] != "completed" and p["reason"]],
        "n_runs": len(points),
        "n_used": len(used),
        "throughput": cis["rps"]["mean"],
        "latency": {k: cis[k]["mean"] for k in LATENCY_KEYS},
        "error_rate": cis["error_rate"]["mean"],
        "slo": slo,
        "passed": passed,
        "verdict": verdict,
        "verdict_text": verdict_text,
        "ci": cis if multi else None,
        "runs": [{k: p[k] for k in ("benchmark_id", "repeat", "status", "reason", "rps", "p50",
                                    "p95", "p99", "error_rate", "n", "requests")} for p in points],
    }


# ----------------------------------------------------------------------------- the verdict

def _level_key(levels: list[dict]):
    numeric = all(isinstance(l.get("level"), (int, float)) and not isinstance(l.get("level"), bool)
                  for l in levels)
    order = {id(l): i for i, l in enumerate(levels)}
    if numeric:
        return lambda l: (l["level"], order[id(l)])
    return lambda l: order[id(l)]


def choose_optimal(levels: list[dict]) -> dict | None:
    """The level with the highest mean throughput among the passing levels, or None.

    A level counts only when `passed` is true, its `status` is "completed" (failed or partial
    runs never pass) and it has a throughput. Equal throughputs (to 1e-9 relative) go to the
    lower level: numerically lower when levels are numbers, else the earlier one in the list.
    Returns the chosen level dict itself.
    """
    cands = [l for l in levels if l.get("passed") and l.get("status") == "completed"
             and l.get("throughput") is not None and not math.isnan(l["throughput"])]
    if not cands:
        return None
    best = max(l["throughput"] for l in cands)
    tied = [l for l in cands if math.isclose(l["throughput"], best, rel_tol=1e-9, abs_tol=0.0)]
    return min(tied, key=_level_key(levels))


def _violation(item: dict) -> float:
    """How far a rule misses its threshold, relative to it (0 when it holds, inf unmeasured)."""
    v, t = item["value"], item["threshold"]
    if item["passed"]:
        return 0.0
    if v is None:
        return math.inf
    if t == 0:
        return math.inf if v != t else 0.0
    return (v - t) / abs(t) if item["op"] in ("<", "<=") else (t - v) / abs(t)


def closest_level(levels: list[dict]) -> dict | None:
    """Among completed levels that fail, the one whose worst rule misses by the least."""
    scored = [(max((_violation(r) for r in l["slo"]), default=0.0), l) for l in levels
              if l["status"] == "completed"]
    scored = [(s, l) for s, l in scored if math.isfinite(s)]
    if not scored:
        return None
    key = _level_key(levels)
    return min(scored, key=lambda sl: (sl[0], key(sl[1])))[1]


def _headline_latency(rules: list[SloRule]) -> str:
    for r in rules:
        if r.metric in ("p50", "p95", "p99"):
            return r.metric
    return "p99"


OPTIMUM_SENTENCE = ("The optimum is the passing level with the highest throughput; equal "
                    "throughputs go to the lower level.")


def verdict_rule_text(repeats: bool, error_budget: float = DEFAULT_ERROR_BUDGET,
                      confidence: float | None = None) -> str:
    text = ("A level passes when every run at that level completed, every rule of the sweep's "
            "SLO holds on its summary.json (latency percentiles pooled over all clients, "
            "measurement window only; latency rules are judged on the worse of the figures over "
            "all requests, a failed or timed-out request counting at its elapsed time, and over "
            "the successful ones, so timeouts cannot hide and fast failures cannot flatter) and its "
            f"error rate is within the error budget ({error_budget * 100:g}%, the sweep's "
            "`error_budget:`); failed, partial or missing runs never pass. " + OPTIMUM_SENTENCE)
    if confidence is not None:
        text += (f" The sweep asks for {confidence:.0%} confidence (`confidence:`): each rule is "
                 f"checked against the one-sided {confidence:.0%} Student-t bound on the mean "
                 "over the repeats (the upper bound for `<`/`<=` rules, the lower bound for "
                 "`>`/`>=` rules), which needs at least 2 repeats; a rule whose mean holds but "
                 "whose bound does not says how many repeats at the measured spread would "
                 "bring the bound inside.")
    elif repeats:
        text += (" With repeats, each rule is judged on what was measured: the mean over the "
                 "repeats must meet it (so more repeats never make a verdict worse by "
                 "construction); the 95% Student-t confidence interval of the mean is shown "
                 "beside it. Set `confidence:` in the sweep to require a bound instead.")
    return text


def headline(param: str, levels: list[dict], optimal: dict | None, closest: dict | None,
             rules: list[SloRule]) -> str:
    slo_text = " and ".join(r.text for r in rules)
    lat = _headline_latency(rules)
    if optimal is not None:
        n = optimal["n_runs"]
        mean_note = f", mean of {n} runs" if n > 1 else ""
        what = f"meets {slo_text}" if rules else "completed (the sweep has no SLO)"
        return (f"**Optimal {param}: {level_str(optimal['level'])}** (highest throughput that "
                f"{what}: {format_rate(optimal['throughput'])}, {lat} = "
                f"{format_seconds(optimal['latency'].get(lat))}{mean_note})")
    if closest is not None:
        misses = [r for r in closest["slo"] if not r["passed"]]
        detail = "; ".join(f"{r['rule'].split()[0]} = {r['measured']}" for r in misses)
        return (f"No level met the SLO ({slo_text}); the closest was {param} = "
                f"{level_str(closest['level'])} ({detail}, {format_rate(closest['throughput'])})"
                if closest["throughput"] is not None else
                f"No level met the SLO ({slo_text}); the closest was {param} = "
                f"{level_str(closest['level'])} ({detail})")
    if levels and all(l["status"] != "completed" for l in levels):
        reasons = sorted({short_reason(r, 60) for l in levels for r in l["reasons"]})
        why = f": {'; '.join(reasons)}" if reasons else ""
        return (f"No level met the SLO ({slo_text or 'none given'}); no level has a completed "
                f"run{why}")
    return f"No level met the SLO ({slo_text or 'none given'}); no level could be measured"


def level_summary(level: dict | None) -> dict | None:
    if level is None:
        return None
    return {"level": level["level"], "throughput": level["throughput"],
            "latency": level["latency"], "error_rate": level["error_rate"], "ids": level["ids"],
            "slo": level["slo"], "ci": level["ci"], "passed": level["passed"]}
