"""The SLO grammar, shared by runs and sweeps: `p99 < 1.0s`, `p95 <= 100ms`, `mean < 20ms`,
`error_rate < 1%`, `rps >= 1000`, LLM rules such as `ttft_p99 < 500ms` or `tpot_p50 < 50ms`,
and a pipeline's stage rules such as `stage.retrieve.p99 < 50ms` or `stage.generate.ttft_p99 < 1s`.

A rule is `<metric> <op> <number>[unit]`. Latency metrics take a time unit (default seconds),
error_rate takes a percentage or a fraction, rps a plain number. Evaluation reads summary.json
only, and every verdict carries the rule, the measured value, the figures it was read from
(`source`) and whether it passed.

Which figures a rule reads (verdict_source):
- plain latency rules (`p99 < 1s`) read the worse of `latency_all_s` (every request of the
  window, a failed one at its elapsed time) and `latency_s` (ok requests only): requests that
  time out raise the first, so they cannot make a latency SLO pass, and requests that fail
  fast would lower it, so they cannot flatter one either. No ok request at all: the rule fails.
  Summaries written before latency_all_s existed are read from latency_s;
- LLM `ttft_`/`e2el_` rules read, the same way, the worse of the ok requests' figures and
  `llm.ttft_all_s` / `llm.e2el_all_s` (every request; a failed one at its elapsed time, or
  its TTFT when it got a first token). The ok figures are `llm.ttft_sched_s` /
  `llm.e2el_sched_s` in open loop (from the scheduled send time, so queueing in the client
  counts) and `llm.ttft_s` / `llm.e2el_s` (vLLM's definition, from the actual send) in closed
  loop; `tpot_`/`itl_` read `llm.tpot_s` / `llm.itl_s` (differences of chunk times of ok
  requests: the same from either start).
"""

from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass

from aifb.units import format_metric, parse_duration

LATENCY_STATS = ("mean", "min", "max", "p50", "p90", "p95", "p99", "p999")
LLM_FAMILIES = ("ttft", "tpot", "itl", "e2el")
_OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}

# Kept in step with the `slo` pattern in workflow/schemas/recipe.schema.yaml.
RULE_PATTERN = (
    r"^\s*((stage\.[a-z][a-z0-9_]{0,31}\.)?(ttft_|tpot_|itl_|e2el_)?(mean|min|max|p50|p90|p95|p99|p99\.9|p999)|error_rate|rps)"
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
    op, number, unit = m.group(5), float(m.group(6)), m.group(8)
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
        threshold = parse_duration(f"{m.group(6)}{unit or 's'}")
    return SloRule(text=text.strip(), metric=metric, op=op, threshold=threshold)


def parse_rules(texts: list[str] | None) -> list[SloRule]:
    return [parse_rule(t) for t in (texts or [])]


def measured_value(metric: str, summary: dict, op: str = "<") -> tuple[float | None, str | None]:
    """The summary's value for a metric, or None with the reason it is not available. `op` is
    the rule's comparison: for plain latency it picks the worse of the two figures."""
    value, why, _ = _measured(metric, summary, op)
    return value, why


def _stat(block: dict, metric: str, stat: str, what: str) -> tuple[float | None, str | None]:
    n = block.get("n") or 0
    if not n:
        return None, f"no {what} to measure"
    if stat == "p999" and n < P999_MIN_N:
        return None, f"p99.9 needs at least {P999_MIN_N} samples, have {n}"
    value = block.get(stat)
    if value is None:
        return None, f"{metric} not in the summary"
    return float(value), None


def _measured(metric: str, summary: dict, op: str) -> tuple[float | None, str | None, str]:
    """(value, why not, the summary key it came from)."""
    req = summary.get("requests") or {}
    if metric == "error_rate":
        total = req.get("total", 0)
        if not total:
            return None, "no requests in the measurement window", "requests"
        return req.get("errors", 0) / total, None, "requests"
    if metric == "rps":
        rps = (summary.get("throughput") or {}).get("rps")
        return ((None, "rps not in the summary (no measurement window)", "throughput.rps")
                if rps is None else (float(rps), None, "throughput.rps"))
    if metric.startswith("stage."):
        return _stage_measured(metric, summary)
    family, _, stat = metric.rpartition("_")
    ok_key, all_key = verdict_sources(metric, summary)
    ok_block, all_block = _node(summary, ok_key), _node(summary, all_key)
    if family and not ok_block:
        return None, f"no {family} statistics in the summary (summary.{ok_key})", ok_key
    ok, why = _stat(ok_block or {}, metric, stat, "successful requests")
    if ok is None or all_block is None:
        return ok, why, ok_key
    every, why = _stat(all_block, metric, stat, "requests")
    if every is None:
        return None, why, all_key
    worse = max if op in ("<", "<=") else min
    if every != ok and worse(every, ok) == every:   # equal: name the ok requests' figures
        return every, None, all_key
    return ok, None, ok_key


def _stage_measured(metric: str, summary: dict) -> tuple[float | None, str | None, str]:
    """A pipeline stage's rule, `stage.<name>.<stat>` (its latency over the ok requests'
    stages, summary.stages.<name>.latency_s) or `stage.<name>.ttft_<stat>` / `tpot_<stat>`
    (a chat stage's, stages.<name>.ttft_s / tpot_s). A request that failed in an earlier stage
    never ran this one: the request-level rules (error_rate, p99) count it."""
    _, name, sub = metric.split(".", 2)
    family, _, stat = sub.rpartition("_")
    key = f"stages.{name}.{family or 'latency'}_s"
    block = _node(summary, key)
    if block is None:
        return None, f"no statistics of stage {name!r} in the summary (summary.{key})", key
    value, why = _stat(block, metric, stat, f"successful {name} stages")
    return value, why, key


def _node(summary: dict, dotted: str) -> dict | None:
    node = summary
    for key in dotted.split("."):
        node = node.get(key) if isinstance(node, dict) else None
    return node if isinstance(node, dict) and node else None


def verdict_sources(metric: str, summary: dict) -> tuple[str, str]:
    """(ok-requests key, every-request key) of the summary.json blocks a latency rule on
    `metric` reads the worse of (see the module docstring)."""
    family, _, _ = metric.rpartition("_")
    if not family:
        return "latency_s", "latency_all_s"
    llm = summary.get("llm") or {}
    if family in ("ttft", "e2el"):
        open_loop = (summary.get("load") or {}).get("loop") == "open"
        ok_key = f"llm.{family}_sched_s" if open_loop and f"{family}_sched_s" in llm \
            else f"llm.{family}_s"
        return ok_key, f"llm.{family}_all_s"
    return f"llm.{family}_s", f"llm.{family}_s"


def evaluate(rules: list[SloRule], summary: dict) -> dict:
    """SLO verdict block for summary.json: each rule with its measured value, and the conjunction."""
    out = []
    for rule in rules:
        value, why, source = _measured(rule.metric, summary, rule.op)
        passed = value is not None and not (isinstance(value, float) and math.isnan(value)) and rule.check(value)
        item = {"rule": rule.text, "metric": rule.metric, "op": rule.op,
                "threshold": rule.threshold, "value": value, "passed": passed,
                "measured": format_metric(rule.metric, value),
                "source": source}
        if why:
            item["note"] = why
        out.append(item)
    return {"rules": out, "passed": all(r["passed"] for r in out) if out else None}
