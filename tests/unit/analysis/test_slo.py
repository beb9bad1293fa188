"""The SLO grammar (aifb.analysis.slo): parsing, errors, and evaluation against summary.json dicts."""

import pytest

from aifb.analysis.slo import P999_MIN_N, evaluate, parse_rule, parse_rules
from aifb.units import format_metric as format_value


@pytest.mark.parametrize("text, metric, op, threshold", [
    ("p99 < 1.0s", "p99", "<", 1.0),
    ("p95 <= 100ms", "p95", "<=", 0.1),
    ("mean < 20ms", "mean", "<", 0.02),
    ("error_rate < 1%", "error_rate", "<", 0.01),
    ("error_rate <= 0.005", "error_rate", "<=", 0.005),
    ("rps >= 500", "rps", ">=", 500.0),
    ("rps > 12.5", "rps", ">", 12.5),
    ("p99.9 < 2s", "p999", "<", 2.0),
    ("p999 < 2s", "p999", "<", 2.0),
    ("ttft_p99 < 500ms", "ttft_p99", "<", 0.5),
    ("tpot_p50 < 50ms", "tpot_p50", "<", 0.05),
    ("e2el_p99.9 < 10s", "e2el_p999", "<", 10.0),
    ("p50 < 250us", "p50", "<", 250e-6),
    ("p99<1", "p99", "<", 1.0),            # no spaces, no unit: seconds
    ("  p90 < 3 ms  ", "p90", "<", 0.003),
])
def test_parse_rule(text, metric, op, threshold):
    rule = parse_rule(text)
    assert (rule.metric, rule.op) == (metric, op)
    assert rule.threshold == pytest.approx(threshold)
    assert rule.text == text.strip()


@pytest.mark.parametrize("text, fragment", [
    ("p98 < 1s", "is not an SLO rule"),
    ("latency < 1s", "is not an SLO rule"),
    ("p99 = 1s", "is not an SLO rule"),
    ("p99 < -1s", "is not an SLO rule"),
    ("p99 < 1m", "is not an SLO rule"),
    ("", "is not an SLO rule"),
    ("p99 < 1%", "a latency takes a time unit"),
    ("rps > 5ms", "rps takes a plain number"),
    ("error_rate < 5ms", "error_rate takes a percentage"),
])
def test_bad_rules_raise_with_a_helpful_message(text, fragment):
    with pytest.raises(ValueError) as exc:
        parse_rule(text)
    msg = str(exc.value)
    assert fragment in msg
    assert repr(text) in msg  # names the offending rule
    if "is not an SLO rule" in fragment:
        assert "p99 < 1.0s" in msg  # and shows what a rule looks like


def test_parse_rules_none_and_list():
    assert parse_rules(None) == []
    assert [r.metric for r in parse_rules(["p99 < 1s", "rps >= 5"])] == ["p99", "rps"]
    with pytest.raises(ValueError):
        parse_rules(["p99 < 1s", "nonsense"])


def summary(n=1000, total=1000, errors=0, rps=100.0, **lat):
    stats = {"n": n, "mean": 0.01, "min": 0.001, "p50": 0.01, "p90": 0.02, "p95": 0.03,
             "p99": 0.05, "p999": None, "max": 0.2}
    stats.update(lat)
    return {"requests": {"total": total, "ok": total - errors, "errors": errors},
            "throughput": {"rps": rps}, "latency_s": stats}


def test_evaluate_pass_and_fail():
    res = evaluate(parse_rules(["p99 < 100ms", "error_rate < 1%", "rps >= 500"]), summary())
    by = {r["metric"]: r for r in res["rules"]}
    assert by["p99"]["passed"] is True and by["p99"]["value"] == 0.05
    assert by["p99"]["measured"] == "50 ms"
    assert by["error_rate"]["passed"] is True and by["error_rate"]["value"] == 0.0
    assert by["rps"]["passed"] is False and by["rps"]["value"] == 100.0
    assert res["passed"] is False
    assert all({"rule", "metric", "op", "threshold", "value", "passed", "measured"} <= r.keys()
               for r in res["rules"])


def test_evaluate_boundaries():
    s = summary(p99=0.1)
    assert evaluate(parse_rules(["p99 < 100ms"]), s)["passed"] is False
    assert evaluate(parse_rules(["p99 <= 100ms"]), s)["passed"] is True
    s = summary(total=100, errors=1)
    assert evaluate(parse_rules(["error_rate < 1%"]), s)["passed"] is False
    assert evaluate(parse_rules(["error_rate <= 1%"]), s)["passed"] is True
    assert evaluate(parse_rules(["rps > 100"]), summary(rps=100.0))["passed"] is False
    assert evaluate(parse_rules(["rps >= 100"]), summary(rps=100.0))["passed"] is True


def test_evaluate_no_rules():
    assert evaluate([], summary()) == {"rules": [], "passed": None}


def test_evaluate_no_successful_requests():
    s = summary(n=0, total=10, errors=10, rps=0.0, p99=None)
    res = evaluate(parse_rules(["p99 < 1s", "error_rate < 1%"]), s)
    p99, err = res["rules"]
    assert p99["value"] is None and p99["passed"] is False and p99["measured"] == "n/a"
    assert "no successful requests" in p99["note"]
    assert err["value"] == 1.0 and err["passed"] is False
    assert res["passed"] is False


def test_evaluate_no_requests_at_all():
    res = evaluate(parse_rules(["error_rate < 1%"]), summary(n=0, total=0, rps=0.0))
    assert res["rules"][0]["value"] is None
    assert "no requests" in res["rules"][0]["note"]


def test_p999_needs_ten_thousand_samples():
    rule = parse_rules(["p99.9 < 2s"])
    few = evaluate(rule, summary(n=P999_MIN_N - 1, p999=0.5))["rules"][0]
    assert few["value"] is None and few["passed"] is False
    assert str(P999_MIN_N) in few["note"]
    many = evaluate(rule, summary(n=P999_MIN_N, p999=0.5))["rules"][0]
    assert many["value"] == 0.5 and many["passed"] is True


def test_missing_rps_and_missing_blocks_do_not_crash():
    res = evaluate(parse_rules(["rps >= 1"]), {"throughput": {"rps": None}})
    assert res["rules"][0]["value"] is None and res["rules"][0]["note"]
    res = evaluate(parse_rules(["p99 < 1s", "error_rate < 1%", "ttft_p99 < 1s"]),
                   {"latency_s": None, "requests": None, "llm": None})
    assert [r["passed"] for r in res["rules"]] == [False, False, False]
    assert all(r.get("note") for r in res["rules"])


def test_llm_rules_read_the_llm_block():
    s = summary()
    s["llm"] = {"ttft_s": {"n": 50, "p99": 0.4}, "tpot_s": {"n": 50, "p50": 0.08}}
    res = evaluate(parse_rules(["ttft_p99 < 500ms", "tpot_p50 < 50ms"]), s)
    assert [r["passed"] for r in res["rules"]] == [True, False]
    assert res["rules"][1]["value"] == 0.08
    no_llm = evaluate(parse_rules(["ttft_p99 < 500ms"]), summary())["rules"][0]
    assert no_llm["value"] is None and "ttft" in no_llm["note"]


def test_format_value():
    assert format_value("p99", None) == "n/a"
    assert format_value("p99", 0.37) == "370 ms"
    assert format_value("error_rate", 0.0123) == "1.23%"
    assert format_value("rps", 12.8) == "12.8 req/s"
