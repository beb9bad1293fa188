"""The sweep report: reports/sweep_<first>_<last>/{report.md, report.json, plots/*.png}.

It answers one question first: what is the most load this service takes while meeting its SLO?
Every level of the swept parameter is judged against the *sweep's* SLO (config/config.yaml,
evaluated here with aifb.analysis.slo on each point's summary.json), not the SLO of the point's own recipe.

- A level passes when every run at that level completed, every SLO rule holds and its error
  rate is within the sweep's error budget (`error_budget:`, default 1 %). Failed, partial,
  running or missing runs never pass.
- A rule is judged on what was measured: the value of the single run, or with repeats the mean
  over the repeats, shown with its 95 % Student-t confidence interval beside it. More repeats
  therefore never make a verdict worse by construction: a level truly inside the SLO passes
  more often, not less (tests/test_sweep_report.py simulates it). Requiring every repeat to
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

import datetime as dt
import math
from pathlib import Path

from aifb.jsonio import read_json, write_json, write_text
from aifb.analysis.slo import SloRule, measured_value, parse_rules
from aifb.stats import mean_ci, t_quantile
from aifb.units import format_metric, format_number, format_rate, format_seconds

LATENCY_KEYS = ("p50", "p95", "p99")
PLOT_FILES = {
    "throughput": "plots/throughput_vs_level.png",
    "latency": "plots/latency_vs_level.png",
    "error_rate": "plots/error_rate_vs_level.png",
}
PLAIN_LATENCY = ("mean", "min", "max", "p50", "p90", "p95", "p99", "p999")
STATUS_LABEL = {
    "completed": "✅ completed",
    "failed": "❌ failed",
    "partial": "⚠️ partial",
    "running": "🏃 running",
    "missing": "⏳ not run",
    "no summary": "⚠️ no summary",
}
VERDICT_COLORS = {"pass": "#2e7d32", "fail": "#ef6c00", "failed run": "#c62828"}
DEFAULT_ERROR_BUDGET = 0.01   # a level with more than 1 % failed requests is not usable
MAX_REPEATS_NEEDED = 1000     # repeats_needed looks no further


# ----------------------------------------------------------------------------- formatting

fmt_seconds = format_seconds  # one form per quantity in every report (aifb.units)
fmt_metric = format_metric


def _pm(metric: str, ci: dict | None) -> str:
    """'mean ± half-width' (or the single value) of a mean_ci dict."""
    if not ci or ci.get("mean") is None:
        return "n/a"
    if ci.get("half_width") is None:
        return fmt_metric(metric, ci["mean"])
    half = ci["half_width"]
    if abs(half) <= 1e-9 * max(abs(ci["mean"]), 1e-300):  # identical repeats: float noise
        half = 0.0
    if metric == "rps":  # the table's column names the unit
        return f"{format_number(ci['mean'])} ± {format_number(half)}"
    return f"{fmt_metric(metric, ci['mean'])} ± {fmt_metric(metric, half)}"


def _md_cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _short(text: str | None, limit: int = 80) -> str:
    if not text:
        return "no reason recorded"
    line = str(text).strip().splitlines()[0] if str(text).strip() else "no reason recorded"
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


def _level_str(level) -> str:
    return f"{level:g}" if isinstance(level, float) else str(level)


# ----------------------------------------------------------------------------- reading points

def _load(path: Path) -> dict | None:
    try:
        data = read_json(path)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _point(point: dict, run_dir: Path | None, rules: list[SloRule]) -> dict:
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
           "warnings": []}
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
    measured = fmt_metric(rule.metric, value)
    if bound and value is not None:
        measured += f" ({bound}; mean {fmt_metric(rule.metric, mean)})"
    elif n > 1 and value is not None:
        measured += (f" (mean of {n}; 95% CI {fmt_metric(rule.metric, ci['low'])} to "
                     f"{fmt_metric(rule.metric, ci['high'])})")
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


def _level(level, points: list[dict], rules: list[SloRule],
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
                        (f": {_short(p['reason'])}" if p["reason"] else "") for p in bad)
        verdict_text = f"❌ failed run ({why})" if verdict == "failed run" else \
            f"{STATUS_LABEL.get(status, status)} ({why})"
    elif passed:
        verdict, verdict_text = "pass", "✅ pass"
    else:
        verdict = "fail"
        broken = [f"{r['rule']}: {fmt_metric(r['metric'], r['value'])}" +
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
        return (f"**Optimal {param}: {_level_str(optimal['level'])}** (highest throughput that "
                f"{what}: {format_rate(optimal['throughput'])}, {lat} = "
                f"{fmt_seconds(optimal['latency'].get(lat))}{mean_note})")
    if closest is not None:
        misses = [r for r in closest["slo"] if not r["passed"]]
        detail = "; ".join(f"{r['rule'].split()[0]} = {r['measured']}" for r in misses)
        return (f"No level met the SLO ({slo_text}); the closest was {param} = "
                f"{_level_str(closest['level'])} ({detail}, {format_rate(closest['throughput'])})"
                if closest["throughput"] is not None else
                f"No level met the SLO ({slo_text}); the closest was {param} = "
                f"{_level_str(closest['level'])} ({detail})")
    if levels and all(l["status"] != "completed" for l in levels):
        reasons = sorted({_short(r, 60) for l in levels for r in l["reasons"]})
        why = f": {'; '.join(reasons)}" if reasons else ""
        return (f"No level met the SLO ({slo_text or 'none given'}); no level has a completed "
                f"run{why}")
    return f"No level met the SLO ({slo_text or 'none given'}); no level could be measured"


# ----------------------------------------------------------------------------- plots

def _x_encoding(alt, param: str, levels: list):
    numeric = levels and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in levels)
    if numeric:
        positive = all(v > 0 for v in levels)
        log = positive and max(levels) / min(levels) >= 4
        scale = alt.Scale(type="log", base=2, nice=False, padding=20) if log else \
            alt.Scale(nice=False, padding=20, zero=False)
        return alt.X("level:Q", title=param, scale=scale,
                     axis=alt.Axis(values=list(levels), format="~g", grid=False))
    return alt.X("level:O", title=param, sort=[str(v) for v in levels],
                 axis=alt.Axis(labelAngle=0))


def _lvl_value(level):
    return level if isinstance(level, (int, float)) and not isinstance(level, bool) else str(level)


def _note_layer(alt, x, y, rows: list[dict]):
    """Red 'failed' / grey 'not run' labels at the bottom of levels without numbers."""
    if not rows:
        return None
    return alt.Chart(alt.Data(values=rows)).mark_text(
        dy=-8, fontSize=11, fontWeight="bold").encode(
        x=x, y=y, text="label:N", color=alt.Color("color:N", scale=None))


def _no_data_rows(levels: list[dict], y_value: float = 0.0) -> list[dict]:
    rows = []
    for l in levels:
        if l["throughput"] is None:
            label = "failed" if l["verdict"] == "failed run" else STATUS_LABEL.get(
                l["status"], l["status"]).split(" ", 1)[-1]
            rows.append({"level": _lvl_value(l["level"]), "y": y_value, "label": label,
                         "color": "#c62828" if l["verdict"] == "failed run" else "#757575"})
    return rows


def _clip0(v: float | None) -> float | None:
    return None if v is None else max(v, 0.0)


def _threshold_layers(alt, y, value: float, label: str) -> list:
    d = alt.Data(values=[{"y": value, "label": label}])
    return [alt.Chart(d).mark_rule(color="#c62828", strokeDash=[6, 4], strokeWidth=1.5)
            .encode(y=y),
            alt.Chart(d).mark_text(align="left", dx=4, dy=-7, color="#c62828", fontSize=11)
            .encode(y=y, x=alt.value(4), text="label:N")]


def _save(chart, path: Path) -> None:
    from aifb.reporting.plots import save_png  # altair and vl-convert only when there is a plot to draw

    save_png(chart, path)


def _plots(out_dir: Path, param: str, name: str, levels: list[dict], rules: list[SloRule],
           optimal: dict | None) -> dict:
    """Throughput, latency percentiles and error rate against the level. Every layer plots its
    numbers in a field named `y` so the layers share one y axis with one title."""
    import altair as alt

    level_values = [_lvl_value(l["level"]) for l in levels]
    x = _x_encoding(alt, param, level_values)
    size = (520, 320)
    opt_level = _lvl_value(optimal["level"]) if optimal else None
    opt_text = f"optimal: {_level_str(optimal['level'])}" if optimal else None
    color = alt.Color("verdict:N", title="verdict",
                      scale=alt.Scale(domain=list(VERDICT_COLORS), range=list(VERDICT_COLORS.values())))
    empty = not any(l["throughput"] is not None for l in levels)

    # --- throughput (with 95 % CI error bars and the individual repeats when there are repeats)
    ytitle, yscale = "throughput (requests/s, ok only)", alt.Scale(zero=True)
    y = alt.Y("y:Q", title=ytitle, scale=yscale)
    rows = [{"level": _lvl_value(l["level"]), "y": l["throughput"], "verdict": l["verdict"],
             "low": _clip0((l["ci"] or {}).get("rps", {}).get("low")),
             "high": (l["ci"] or {}).get("rps", {}).get("high")}
            for l in levels if l["throughput"] is not None]
    runs = [{"level": _lvl_value(l["level"]), "y": r["rps"]} for l in levels if l["ci"]
            for r in l["runs"] if r["rps"] is not None]
    layers = []
    if rows:
        base = alt.Chart(alt.Data(values=rows))
        layers.append(base.mark_line(color="#1f77b4").encode(x=x, y=y))
        if any(r["low"] is not None for r in rows):
            layers.append(base.transform_filter("datum.low != null").mark_errorbar(
                ticks=True, color="#1f77b4").encode(x=x, y=alt.Y("low:Q", title=ytitle, scale=yscale),
                                                    y2="high:Q"))
        if runs:
            layers.append(alt.Chart(alt.Data(values=runs)).mark_point(
                color="#555", opacity=0.5, size=25).encode(x=x, y=y))
        layers.append(base.mark_point(filled=True, size=90).encode(
            x=x, y=y, color=color, tooltip=["level:N", "y:Q", "verdict:N"]))
        best = [r for r in rows if r["level"] == opt_level]
        if best:
            layers.append(alt.Chart(alt.Data(values=best)).mark_point(
                shape="circle", size=420, strokeWidth=2, color="#2e7d32").encode(x=x, y=y))
            layers.append(alt.Chart(alt.Data(values=best)).mark_text(
                dy=-20, fontWeight="bold", color="#2e7d32").encode(x=x, y=y, text=alt.value("optimal")))
    for r in rules:
        if r.metric == "rps":
            layers += _threshold_layers(alt, y, r.threshold, f"SLO {r.text}")
    note = _note_layer(alt, x, y, _no_data_rows(levels))
    if note is not None:
        layers.append(note)
    _save(_finish(alt, layers, f"{name}: throughput vs {param}", size, empty),
          out_dir / PLOT_FILES["throughput"])

    # --- latency percentiles, SLO threshold(s) and the optimum
    lat_rules = [r for r in rules if r.metric in PLAIN_LATENCY]
    vals = [l["latency"][k] for l in levels for k in LATENCY_KEYS if l["latency"][k] is not None]
    vals += [r.threshold for r in lat_rules]
    ms = bool(vals) and max(vals) < 1.0
    f = 1e3 if ms else 1.0
    rows = []
    for l in levels:
        for k in LATENCY_KEYS:
            v = l["latency"][k]
            if v is None:
                continue
            ci = (l["ci"] or {}).get(k) or {}
            rows.append({"level": _lvl_value(l["level"]), "percentile": k, "y": v * f,
                         "low": ci["low"] * f if ci.get("low") is not None else None,
                         "high": ci["high"] * f if ci.get("high") is not None else None})
    positive = [r["y"] for r in rows] + [r.threshold * f for r in lat_rules]
    log = bool(rows) and min(positive) > 0 and max(positive) / min(positive) > 50
    if log:  # a log axis cannot show a CI reaching zero or below: clip it at the axis floor
        floor = min(positive) / 2
        for r in rows:
            if r["low"] is not None:
                r["low"] = max(r["low"], floor)
    ytitle = f"latency ({'ms' if ms else 's'}), pooled over clients"
    yscale = alt.Scale(type="log") if log else alt.Scale(zero=True)
    y = alt.Y("y:Q", title=ytitle, scale=yscale)
    pcolor = alt.Color("percentile:N", title="percentile", sort=list(LATENCY_KEYS),
                       scale=alt.Scale(domain=list(LATENCY_KEYS),
                                       range=["#90caf9", "#1e88e5", "#0d47a1"]))
    layers = []
    if rows:
        base = alt.Chart(alt.Data(values=rows))
        layers.append(base.mark_line(point=True).encode(
            x=x, y=y, color=pcolor, tooltip=["level:N", "percentile:N", "y:Q"]))
        if any(r["low"] is not None for r in rows):
            layers.append(base.transform_filter("datum.low != null").mark_errorbar(ticks=True)
                          .encode(x=x, y=alt.Y("low:Q", title=ytitle, scale=yscale),
                                  y2="high:Q", color=pcolor))
    for r in lat_rules:
        layers += _threshold_layers(alt, y, r.threshold * f, f"SLO {r.text}")
    if opt_level is not None:
        d = alt.Data(values=[{"level": opt_level, "label": opt_text}])
        layers.append(alt.Chart(d).mark_rule(color="#2e7d32", strokeDash=[2, 3], strokeWidth=2)
                      .encode(x=x))
        last = opt_level == level_values[-1] and len(level_values) > 1
        layers.append(alt.Chart(d).mark_text(align="right" if last else "left",
                                             dx=-5 if last else 5, color="#2e7d32",
                                             fontWeight="bold")
                      .encode(x=x, y=alt.value(12), text="label:N"))
    note = _note_layer(alt, x, y, _no_data_rows(levels, min(positive) if log else 0.0))
    if note is not None:
        layers.append(note)
    _save(_finish(alt, layers, f"{name}: latency percentiles vs {param}", size, empty),
          out_dir / PLOT_FILES["latency"])

    # --- error rate
    y = alt.Y("y:Q", title="error rate (% of requests)", scale=alt.Scale(zero=True))
    rows = [{"level": _lvl_value(l["level"]), "y": l["error_rate"] * 100, "verdict": l["verdict"]}
            for l in levels if l["error_rate"] is not None]
    layers = []
    if rows:
        base = alt.Chart(alt.Data(values=rows))
        layers.append(base.mark_line(color="#999").encode(x=x, y=y))
        layers.append(base.mark_point(filled=True, size=90).encode(
            x=x, y=y, color=color, tooltip=["level:N", "y:Q", "verdict:N"]))
    for r in rules:
        if r.metric == "error_rate":
            layers += _threshold_layers(alt, y, r.threshold * 100, f"SLO {r.text}")
    note = _note_layer(alt, x, y, _no_data_rows(levels))
    if note is not None:
        layers.append(note)
    _save(_finish(alt, layers, f"{name}: error rate vs {param}", size, empty),
          out_dir / PLOT_FILES["error_rate"])
    return dict(PLOT_FILES)


def _finish(alt, layers: list, title: str, size: tuple[int, int], empty: bool):
    if not layers:  # nothing at all to draw: still a valid, labelled image
        layers = [alt.Chart(alt.Data(values=[{"t": "no data"}])).mark_text(
            fontSize=14, color="#c62828").encode(text="t:N")]
    head = alt.TitleParams(title, subtitle="no level produced a summary: every run failed or "
                           "has not run", subtitleColor="#c62828") if empty else title
    chart = alt.layer(*layers).properties(title=head, width=size[0], height=size[1])
    return chart.configure_view(stroke="#ddd").configure_axis(labelFontSize=11, titleFontSize=12)


# ----------------------------------------------------------------------------- markdown

def _slo_cell(level: dict, item: dict) -> str:
    if item.get("note") is None:
        return item["measured"]
    if level["n_used"] == 0:
        return "—"
    return f"n/a ({item['note']})"


def _render_md(report: dict, rules: list[SloRule], view: dict | None = None) -> str:
    """report.md; `view` (see build_sweep_report) lets another mode present the same report."""
    view = view or {}
    param = report["param"]
    levels = report["levels"]
    multi = any(l["n_runs"] > 1 for l in levels)
    out = [view.get("title") or f"# Sweep report: {report['sweep']}", ""]
    out += view.get("intro") or [report["headline"], ""]
    bits = []
    if report.get("service"):
        bits.append(f"**Service**: {report['service']}")
    bits.append(f"**Swept parameter**: `{param}` = {', '.join(_level_str(l['level']) for l in levels)}")
    bits.append(f"**SLO**: {' and '.join(report['slo']) or 'none given'} "
                "(the sweep's SLO from config/config.yaml), within an error budget of "
                f"{report['error_budget'] * 100:g}% failed requests")
    bits.append(f"**Repeats per level**: {report['repeats']}")
    if report.get("purpose"):
        bits.append(f"**Purpose**: {report['purpose']}")
    out += [b + "  " for b in bits[:-1]] + [bits[-1], ""]

    out += [view.get("levels_heading") or "## Levels", ""]
    star = view["star"] if "star" in view else (report["optimal"] or {}).get("level")
    head = ["Level", "Runs", "Status", "Throughput (req/s)", "p50", "p95", "p99", "Error rate",
            *[r.text for r in rules], "Verdict"]
    out.append("| " + " | ".join(_md_cell(h) for h in head) + " |")
    out.append("|" + "|".join("---" for _ in head) + "|")
    for l in levels:
        ci = l["ci"]
        if ci:
            thr = _pm("rps", ci["rps"])
            lats = [_pm(k, ci[k]) for k in LATENCY_KEYS]
            err = _pm("error_rate", ci["error_rate"])
        else:
            thr = format_number(l["throughput"])
            lats = [fmt_seconds(l["latency"][k]) for k in LATENCY_KEYS]
            err = fmt_metric("error_rate", l["error_rate"])
        name = _level_str(l["level"])
        if star is not None and l["level"] == star:
            name = f"**{name}** ★"
        cells = [name, ", ".join(str(i) for i in l["ids"]), STATUS_LABEL.get(l["status"], l["status"]),
                 thr, *lats, err, *[_slo_cell(l, r) for r in l["slo"]], l["verdict_text"]]
        out.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
    out.append("")
    if multi or report.get("confidence") is not None:
        out.append("Values are the mean ± the half-width of the 95% confidence interval over the "
                   "repeats; the SLO columns show the value each rule was checked against ("
                   + (f"the one-sided {report['confidence']:.0%} bound" if report.get("confidence")
                      is not None else "the mean") + ") with its interval.")
        out.append("")

    out += list(report.get("sections") or [])
    rule = report["verdict_rule"]
    if view.get("optimum_sentence"):
        rule = rule.replace(OPTIMUM_SENTENCE, view["optimum_sentence"])
    out += ["## How the verdict is made", "", rule, "",
            "Throughput = successful requests / measurement window (warmup excluded). The p50, "
            "p95 and p99 columns are over the pooled per-request samples of all clients, "
            "successful requests only; latency rules are checked on the worse of these and the "
            "same percentiles over all requests (summary.json latency_all_s: a failed request "
            "at its elapsed time). "
            "Error rate = failed / all requests in the window.", ""]

    if multi:
        out += ["## Runs", "", "| Level | Repeat | Benchmark ID | Status | Throughput (req/s) | p50 | "
                "p95 | p99 | Error rate |", "|---|---|---|---|---|---|---|---|---|"]
        for l in levels:
            for r in l["runs"]:
                cells = [_level_str(l["level"]), r["repeat"], r["benchmark_id"],
                         STATUS_LABEL.get(r["status"], r["status"]),
                         format_number(r["rps"]),
                         *[fmt_seconds(r[k]) for k in LATENCY_KEYS],
                         fmt_metric("error_rate", r["error_rate"])]
                out.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
        out.append("")

    out += list(view.get("before_plots") or [])
    out += ["## Plots", "",
            f"![Throughput vs {param}]({PLOT_FILES['throughput']})", "",
            f"![Latency percentiles vs {param}]({PLOT_FILES['latency']})", "",
            f"![Error rate vs {param}]({PLOT_FILES['error_rate']})", ""]

    notes = []
    for p in report["points"]:
        if p["status"] != "completed":
            notes.append(f"{p['benchmark_id']} ({param} = {_level_str(p['level'])}): "
                         f"{p['status']} — {_short(p['reason'], 200)}")
        for w in p["warnings"]:
            notes.append(f"{p['benchmark_id']}: {w}")
    if notes:
        out += ["## Warnings", ""] + [f"- {_md_cell(n)}" for n in notes] + [""]
    out += ["## Runs and reports", ""]
    for p in report["points"]:
        out.append(f"- {p['benchmark_id']} ({param} = {_level_str(p['level'])}, repeat "
                   f"{p['repeat']}): `results/{p['benchmark_id']}/`, "
                   f"`reports/{p['benchmark_id']}/report.md`")
    out += ["", f"*Generated {report['generated_at']} from the runs' summary.json files.*", ""]
    return "\n".join(out)


# ----------------------------------------------------------------------------- entry point

def build_sweep_report(sweep: dict, run_dirs: list[Path], out_dir: Path, *,
                       view: dict | None = None) -> dict:
    """Judge every level of `sweep` (Sweep.describe()) against its SLO and write
    out_dir/report.md, out_dir/report.json and the three plots. Returns the report.json dict.

    `run_dirs` are the results/<id> directories of the sweep's points, in point order; they are
    matched to points by benchmark ID (by position when the names are not IDs).

    `view` presents the same judgement for another mode (the capacity search): `title`,
    `intro` (lines instead of the headline), `headline` (report.json's; the sweep's own is kept
    as `sweep_headline`), `star` (the level marked ★ instead of the optimum; None: none),
    `levels_heading`, `optimum_sentence` (instead of OPTIMUM_SENTENCE in the verdict rule),
    `before_plots` (lines) and `extra` (more report.json keys).
    """
    view = view or {}
    out_dir = Path(out_dir)
    slo_rules = parse_rules(sweep.get("slo"))
    rules, confidence = judged_rules(sweep)
    budget = rules[-1].threshold
    points = list(sweep.get("points") or [])
    by_name = {Path(d).name: Path(d) for d in run_dirs}
    records = []
    for i, pt in enumerate(points):
        d = by_name.get(pt.get("benchmark_id") or "")
        if d is None and i < len(run_dirs) and not pt.get("benchmark_id"):
            d = Path(run_dirs[i])
        records.append(_point(pt, d, rules))

    order = list(sweep.get("levels") or [])
    for r in records:
        if r["level"] not in order:
            order.append(r["level"])
    levels = [_level(lv, [r for r in records if r["level"] == lv], rules, confidence)
              for lv in order
              if any(r["level"] == lv for r in records)]
    optimal = choose_optimal(levels)
    closest = closest_level(levels) if optimal is None else None
    multi = any(l["n_runs"] > 1 for l in levels)
    param = sweep.get("param", "level")
    report = {
        "sweep": sweep.get("name"),
        "param": param,
        "version": sweep.get("version"),
        "repeats": sweep.get("repeats", 1),
        "service": sweep.get("service"),
        "purpose": sweep.get("purpose"),
        "generated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "headline": headline(param, levels, optimal, closest, slo_rules),
        "slo": [r.text for r in slo_rules],
        "error_budget": budget,
        "confidence": confidence,
        "verdict_rule": verdict_rule_text(multi, budget, confidence),
        "levels": levels,
        "optimal": _summary_of(optimal),
        "closest": _summary_of(closest),
        "plots": dict(PLOT_FILES),
        "points": [{k: v for k, v in r.items() if k != "rule_values"} for r in records],
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    report["sections"], report["extra_plots"] = _extension_sections(records, by_name, param, out_dir)
    md = _render_md(report, rules, view)
    if view.get("headline"):
        report["sweep_headline"], report["headline"] = report["headline"], view["headline"]
    report.update(view.get("extra") or {})
    write_json(out_dir / "report.json", report)
    write_text(out_dir / "report.md", md)
    _plots(out_dir, param, sweep.get("name") or "sweep", levels, rules, optimal)
    return report


def _extension_sections(records: list[dict], by_name: dict, param: str, out_dir: Path):
    """Service-specific sweep sections (LLM tokens/s and TTFT/TPOT, vector recall vs QPS) from
    the aifb.analysis.metrics modules that apply to the sweep's runs."""
    from aifb.analysis.metrics import extensions

    points, first_run = [], None
    for r in records:
        d = by_name.get(r.get("benchmark_id") or "")
        if d is None or not (d / "summary.json").is_file():
            continue
        if first_run is None and (d / "run.json").is_file():
            first_run = read_json(d / "run.json")
        points.append({"level": r["level"], "benchmark_id": r["benchmark_id"],
                       "summary": read_json(d / "summary.json")})
    lines, plots = [], []
    for ext in extensions(first_run or {}):
        if hasattr(ext, "sweep_section"):
            section = ext.sweep_section(points, param, out_dir)
            lines += section.get("lines") or []
            plots += section.get("plots") or []
    return lines, plots


def _summary_of(level: dict | None) -> dict | None:
    if level is None:
        return None
    return {"level": level["level"], "throughput": level["throughput"],
            "latency": level["latency"], "error_rate": level["error_rate"], "ids": level["ids"],
            "slo": level["slo"], "ci": level["ci"], "passed": level["passed"]}
