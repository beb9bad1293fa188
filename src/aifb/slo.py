"""The SLO grammar, shared by runs and sweeps: `p99 < 1.0s`, `p95 <= 100ms`, `mean < 20ms`,
`error_rate < 1%`, `rps >= 1000`, LLM rules such as `ttft_p99 < 500ms` or `tpot_p50 < 50ms`.

A rule is `<metric> <op> <number>[unit]`. Latency metrics take a time unit (default seconds),
error_rate takes a percentage or a fraction, rps a plain number. Evaluation reads summary.json
only, and every verdict carries the rule, the measured value and whether it passed.
"""

from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass

from .units import format_metric, parse_duration

LATENCY_STATS = ("mean", "min", "max", "p50", "p90", "p95", "p99", "p999")
LLM_FAMILIES = ("ttft", "tpot", "itl", "e2el")
_OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}

# Kept in step with the `slo` pattern in workflow/schemas/recipe.schema.yaml.
RULE_PATTERN = (
    r"^\s*((ttft_|tpot_|itl_|e2el_)?(mean|min|max|p50|p90|p95|p99|p99\.9|p999)|error_rate|rps)"
    r"\s*(<=|>=|<|>)\s*(\d+(\.\d+)?)\s*(ns|us|µs|ms|s|%)?\s*$"
)
_RULE = re.compile(RULE_PATTERN)
P999_MIN_N = 10_000


@dataclass(frozen=True)
class SloRule:
    text: str
    metric: str          # normalised: p999 not p99.9
    op: str
    threshold: float     # seconds for latencies, a fraction for error_rate, req/s for rps

    def check(self, value: float) -> bool:
        return _OPS[self.op](value, self.threshold)


def parse_rule(text: str) -> SloRule:
    m = _RULE.match(text)
    if not m:
        raise ValueError(
            f"{text!r} is not an SLO rule (expected e.g. 'p99 < 1.0s', 'p95 <= 100ms', "
            "'mean < 20ms', 'error_rate < 1%', 'rps >= 500', 'ttft_p99 < 500ms')")
    metric = m.group(1).replace("p99.9", "p999")
    op, number, unit = m.group(4), float(m.group(5)), m.group(7)
    if metric == "error_rate":
        if unit not in (None, "%"):
            raise ValueError(f"{text!r}: error_rate takes a percentage (e.g. 1%) or a fraction")
        threshold = number / 100 if unit == "%" else number
    elif metric == "rps":
        if unit is not None:
            raise ValueError(f"{text!r}: rps takes a plain number of requests per second")
        threshold = number
    else:
        if unit == "%":
            raise ValueError(f"{text!r}: a latency takes a time unit (ms, s), not %")
        threshold = parse_duration(f"{m.group(5)}{unit or 's'}")
    return SloRule(text=text.strip(), metric=metric, op=op, threshold=threshold)


def parse_rules(texts: list[str] | None) -> list[SloRule]:
    return [parse_rule(t) for t in (texts or [])]


def measured_value(metric: str, summary: dict) -> tuple[float | None, str | None]:
    """The summary's value for a metric, or None with the reason it is not available."""
    req = summary.get("requests") or {}
    if metric == "error_rate":
        total = req.get("total", 0)
        if not total:
            return None, "no requests in the measurement window"
        return req.get("errors", 0) / total, None
    if metric == "rps":
        rps = (summary.get("throughput") or {}).get("rps")
        return (None, "rps not in the summary (no measurement window)") if rps is None else (float(rps), None)
    family, _, stat = metric.rpartition("_")
    block = (summary.get("latency_s") if not family
             else (summary.get("llm") or {}).get(f"{family}_s")) or {}
    if family and not block:
        return None, f"no {family} statistics in the summary (summary.llm.{family}_s)"
    n = block.get("n") or 0
    if not n:
        return None, "no successful requests to measure"
    if stat == "p999" and n < P999_MIN_N:
        return None, f"p99.9 needs at least {P999_MIN_N} samples, have {n}"
    value = block.get(stat)
    if value is None:
        return None, f"{metric} not in the summary"
    return float(value), None


def format_value(metric: str, value: float | None) -> str:
    return format_metric(metric, value)


def evaluate(rules: list[SloRule], summary: dict) -> dict:
    """SLO verdict block for summary.json: each rule with its measured value, and the conjunction."""
    out = []
    for rule in rules:
        value, why = measured_value(rule.metric, summary)
        passed = value is not None and not (isinstance(value, float) and math.isnan(value)) and rule.check(value)
        item = {"rule": rule.text, "metric": rule.metric, "op": rule.op,
                "threshold": rule.threshold, "value": value, "passed": passed,
                "measured": format_value(rule.metric, value)}
        if why:
            item["note"] = why
        out.append(item)
    return {"rules": out, "passed": all(r["passed"] for r in out) if out else None}
