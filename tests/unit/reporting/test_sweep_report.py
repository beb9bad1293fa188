"""Sweep reports (aifb.reporting.sweep_report): the optimal level under the sweep's SLO, failed levels,
repeats with confidence intervals, and the files (report.md, report.json, three PNGs)."""

import json
from pathlib import Path

import pytest

from aifb.analysis.sweep_verdict import choose_optimal
from aifb.reporting.sweep_report import build_sweep_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_point(root: Path, bid: str, level, *, rps=None, p50=0.01, p95=0.02, p99=0.05,
                total=1000, errors=0, status="completed", reason=None, recipe_slo=None,
                summary=True) -> Path:
    d = root / "results" / bid
    d.mkdir(parents=True, exist_ok=True)
    recipe = {"name": f"redis_{level}client", "category": "storage", "service": {"kind": "redis"},
              "load": {"clients": level}, "slo": recipe_slo or []}
    (d / "run.json").write_text(json.dumps({
        "benchmark_id": bid, "status": status, "reason": reason, "recipe": recipe,
        "created_at": "2026-01-09T10:00:00+00:00"}))
    if summary:
        ok = total - errors
        (d / "summary.json").write_text(json.dumps({
            "benchmark_id": bid, "status": status, "reason": reason, "window_s": 10.0,
            "requests": {"total": total, "ok": ok, "errors": errors, "errors_by_type": {}},
            "throughput": {"rps": rps if rps is not None else 0.0},
            "latency_s": {"n": ok, "mean": p50, "min": p50 / 2, "p50": p50, "p90": p95,
                          "p95": p95, "p99": p99, "p999": None, "max": p99 * 2},
            # the recipe's own verdict, which the sweep report must NOT use
            "slo": {"rules": [], "passed": False},
            "validity": {"warnings": [f"{bid}: only a short run"]}}))
    return d


def sweep_spec(points, slo=("p99 < 100ms",), repeats=1, levels=None, **extra):
    return {"name": "redis_sweep", "param": "load.clients",
            "levels": levels or list(dict.fromkeys(p["level"] for p in points)),
            "repeats": repeats, "version": 1, "slo": list(slo), "service": "Redis",
            "purpose": "Find optimal concurrency", "mode": "grid", "points": points, **extra}


def make_sweep(root, rows, slo=("p99 < 100ms",), repeats=1, **extra):
    """rows: (level, kwargs) in point order -> (sweep dict, run_dirs)."""
    points, dirs = [], []
    seen = {}
    for i, (level, kw) in enumerate(rows, start=1):
        bid = f"BM-20260109-{i:03d}"
        rep = seen.get(level, 0)
        seen[level] = rep + 1
        dirs.append(write_point(root, bid, level, **kw))
        points.append({"level": level, "repeat": rep, "benchmark_id": bid,
                       "recipe_path": f"recipes/recipe_redis_{level}client.yaml"})
    return sweep_spec(points, slo, repeats, **extra), dirs


def assert_files(out: Path):
    for name in ("report.md", "report.json", "plots/throughput_vs_level.png",
                 "plots/latency_vs_level.png", "plots/error_rate_vs_level.png"):
        assert (out / name).is_file(), name
    for png in (out / "plots").glob("*.png"):
        assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 5000


# ----------------------------------------------------------------------------- choose_optimal

def lvl(level, thr, passed=True, status="completed"):
    return {"level": level, "throughput": thr, "passed": passed, "status": status}


def test_choose_optimal_highest_passing_throughput():
    levels = [lvl(1, 3.4), lvl(2, 6.5), lvl(4, 12.8, passed=False), lvl(8, 11.0)]
    assert choose_optimal(levels)["level"] == 8


def test_choose_optimal_tie_goes_to_the_lower_level():
    levels = [lvl(8, 10.0), lvl(4, 10.0), lvl(2, 6.0)]  # list order is not level order
    assert choose_optimal(levels)["level"] == 4
    assert choose_optimal([lvl("b", 5.0), lvl("a", 5.0)])["level"] == "b"  # non-numeric: first


def test_choose_optimal_none_passing():
    assert choose_optimal([lvl(1, 3.0, passed=False), lvl(2, 6.0, passed=False)]) is None
    assert choose_optimal([]) is None


def test_choose_optimal_failed_levels_never_win():
    levels = [lvl(1, 3.0), lvl(2, 50.0, status="failed"), lvl(4, 60.0, status="partial"),
              lvl(8, None)]
    assert choose_optimal(levels)["level"] == 1


# ----------------------------------------------------------------------------- full reports

def test_single_repeat_report(tmp_path):
    sweep, dirs = make_sweep(tmp_path, [
        (1, dict(rps=3.37, p99=0.050)),
        (2, dict(rps=6.51, p99=0.080)),
        (4, dict(rps=12.80, p99=0.370)),
        (8, dict(status="failed", reason="redis-server exited: port 6379 in use", summary=False)),
    ])
    out = tmp_path / "reports" / "sweep_BM-20260109-001_BM-20260109-004"
    rep = build_sweep_report(sweep, dirs, out)
    assert_files(out)
    assert rep["optimal"]["level"] == 2
    assert rep["headline"] == ("**Optimal load.clients: 2** (highest throughput that meets "
                               "p99 < 100ms: 6.51 req/s, p99 = 80 ms)")
    md = (out / "report.md").read_text()
    lines = md.splitlines()
    assert lines[0] == "# Sweep report: redis_sweep"
    assert lines[2] == rep["headline"]  # the answer comes first
    assert "| Level | Runs | Status | Throughput (req/s) | p50 | p95 | p99 | Error rate | " \
           "p99 < 100ms | error_rate <= 1% (error budget) | Verdict |" in md
    assert "| 4 | BM-20260109-003 | ✅ completed | 12.8 | 10 ms | 20 ms | 370 ms | 0% | 370 ms " \
           "| 0% | ❌ fail: p99 < 100ms: 370 ms |" in md
    row8 = next(l for l in lines if l.startswith("| 8 |"))
    assert "❌ failed run" in row8 and "port 6379 in use" in row8
    by = {l["level"]: l for l in rep["levels"]}
    assert [by[k]["passed"] for k in (1, 2, 4, 8)] == [True, True, False, False]
    assert by[8]["status"] == "failed" and by[8]["verdict"] == "failed run"
    assert by[1]["ci"] is None
    on_disk = json.loads((out / "report.json").read_text())
    assert {"sweep", "param", "levels", "optimal", "verdict_rule", "slo", "plots",
            "headline"} <= on_disk.keys()
    assert on_disk["slo"] == ["p99 < 100ms"]
    assert set(on_disk["levels"][0]) >= {"level", "ids", "status", "throughput", "latency",
                                         "error_rate", "slo", "passed", "ci"}
    assert on_disk["plots"]["latency"] == "plots/latency_vs_level.png"
    assert "Failed, partial" in on_disk["verdict_rule"] or "never pass" in on_disk["verdict_rule"]


def test_sweep_slo_is_used_not_the_recipes(tmp_path):
    # the recipe's SLO (p99 < 1ms) would fail every level; the sweep's (p99 < 1s) passes
    sweep, dirs = make_sweep(tmp_path, [(1, dict(rps=5.0, p99=0.2, recipe_slo=["p99 < 1ms"])),
                                        (2, dict(rps=9.0, p99=0.3, recipe_slo=["p99 < 1ms"]))],
                             slo=("p99 < 1s",))
    rep = build_sweep_report(sweep, dirs, tmp_path / "out")
    assert [l["passed"] for l in rep["levels"]] == [True, True]
    assert rep["optimal"]["level"] == 2


def test_no_level_meets_the_slo_names_the_closest(tmp_path):
    sweep, dirs = make_sweep(tmp_path, [(1, dict(rps=3.0, p99=0.12)), (2, dict(rps=6.0, p99=0.3)),
                                        (4, dict(rps=9.0, p99=0.9))])
    rep = build_sweep_report(sweep, dirs, tmp_path / "out")
    assert rep["optimal"] is None
    assert rep["headline"].startswith("No level met the SLO (p99 < 100ms); the closest was "
                                      "load.clients = 1 (p99 = 120 ms, 3 req/s)")
    assert rep["closest"]["level"] == 1
    assert "No level met the SLO" in (tmp_path / "out" / "report.md").read_text().splitlines()[2]


def test_every_level_failed_still_writes_all_plots(tmp_path):
    sweep, dirs = make_sweep(tmp_path, [
        (1, dict(status="failed", reason="service did not become ready", summary=False)),
        (2, dict(status="failed", reason="service did not become ready", summary=False)),
    ])
    out = tmp_path / "out"
    rep = build_sweep_report(sweep, dirs, out)
    assert_files(out)
    assert rep["optimal"] is None and rep["closest"] is None
    assert rep["headline"].startswith("No level met the SLO (p99 < 100ms); no level has a completed run")
    assert "service did not become ready" in rep["headline"]


def test_missing_run_directory(tmp_path):
    sweep, dirs = make_sweep(tmp_path, [(1, dict(rps=3.0)), (2, dict(rps=6.0))])
    sweep["points"].append({"level": 4, "repeat": 0, "benchmark_id": "BM-20260109-009",
                            "recipe_path": "recipes/x.yaml"})
    sweep["levels"].append(4)
    rep = build_sweep_report(sweep, dirs, tmp_path / "out")
    by = {l["level"]: l for l in rep["levels"]}
    assert by[4]["status"] == "missing" and not by[4]["passed"]
    assert rep["optimal"]["level"] == 2


def test_partial_run_never_passes(tmp_path):
    sweep, dirs = make_sweep(tmp_path, [
        (1, dict(rps=3.0)),
        (2, dict(rps=60.0, status="partial", reason="interrupted (SIGINT)")),
    ])
    rep = build_sweep_report(sweep, dirs, tmp_path / "out")
    by = {l["level"]: l for l in rep["levels"]}
    assert by[2]["status"] == "partial" and by[2]["passed"] is False
    assert by[2]["throughput"] == 60.0  # shown, but not eligible
    assert rep["optimal"]["level"] == 1


def test_tie_goes_to_the_lower_level_in_the_report(tmp_path):
    sweep, dirs = make_sweep(tmp_path, [(1, dict(rps=3.0)), (2, dict(rps=8.0)), (4, dict(rps=8.0))])
    assert build_sweep_report(sweep, dirs, tmp_path / "out")["optimal"]["level"] == 2


def test_error_rate_rule(tmp_path):
    sweep, dirs = make_sweep(tmp_path, [(1, dict(rps=3.0)), (2, dict(rps=6.0, errors=20))],
                             slo=("p99 < 100ms", "error_rate < 1%"))
    rep = build_sweep_report(sweep, dirs, tmp_path / "out")
    by = {l["level"]: l for l in rep["levels"]}
    assert by[2]["error_rate"] == pytest.approx(0.02) and not by[2]["passed"]
    assert rep["optimal"]["level"] == 1


def test_repeats_judge_the_mean_with_the_interval_beside(tmp_path):
    # level 2: p99 mean 90 ms < 100 ms passes (its 95 % interval reaches above 100 ms, and is
    # shown); level 4: p99 mean 110 ms fails
    rows = [(1, dict(rps=r, p99=p)) for r, p in ((3.0, 0.040), (3.1, 0.041), (2.9, 0.039))]
    rows += [(2, dict(rps=r, p99=p)) for r, p in ((6.0, 0.080), (6.2, 0.100), (5.8, 0.090))]
    rows += [(4, dict(rps=r, p99=p)) for r, p in ((9.0, 0.100), (9.2, 0.120), (8.8, 0.110))]
    sweep, dirs = make_sweep(tmp_path, rows, repeats=3)
    out = tmp_path / "out"
    rep = build_sweep_report(sweep, dirs, out)
    assert_files(out)
    by = {l["level"]: l for l in rep["levels"]}
    rule = by[2]["slo"][0]
    assert rule["mean"] == pytest.approx(0.090) and rule["value"] == pytest.approx(0.090)
    assert rule["bound"] is None and rule["basis"] == "mean of the repeats"
    # t(2) = 4.303, std = 0.01, n = 3: the interval is reported beside the verdict
    assert rule["ci_high"] == pytest.approx(0.090 + 4.302652730 * 0.01 / 3 ** 0.5)
    assert rule["measured"] == "90 ms (mean of 3; 95% CI 65.2 ms to 115 ms)"
    assert [by[k]["passed"] for k in (1, 2, 4)] == [True, True, False]
    assert rep["optimal"]["level"] == 2
    assert by[2]["ci"]["rps"]["n"] == 3 and by[2]["ci"]["rps"]["low"] < 6.0 < by[2]["ci"]["rps"]["high"]
    assert by[2]["ids"] == ["BM-20260109-004", "BM-20260109-005", "BM-20260109-006"]
    assert "the mean over the repeats must meet it" in rep["verdict_rule"]
    md = out.joinpath("report.md").read_text()
    assert "the mean over the repeats must meet it" in md
    assert "| 6 ± 0.497 |" in md  # mean ± half-width (t(2) × 0.2 / √3)
    assert "mean of 3 runs" in rep["headline"]


def test_two_passing_repeats_pass(tmp_path):
    """Issue 12, known answer: repeats at p99 0.90 s and 0.95 s against p99 < 1s pass (the old
    rule checked the upper 95 % bound, 0.925 + 12.706 x 0.0354 = 1.37 s, and failed it)."""
    rows = [(1, dict(rps=10.0, p99=0.90)), (1, dict(rps=10.0, p99=0.95))]
    sweep, dirs = make_sweep(tmp_path, rows, slo=("p99 < 1s",), repeats=2)
    rep = build_sweep_report(sweep, dirs, tmp_path / "out")
    level = rep["levels"][0]
    assert level["passed"] is True and rep["optimal"]["level"] == 1
    rule = level["slo"][0]
    assert rule["value"] == pytest.approx(0.925)
    assert rule["ci_high"] == pytest.approx(0.925 + 12.706204736 * 0.05 / 2 ** 0.5 / 2 ** 0.5)


def test_confidence_bound_when_asked(tmp_path):
    # confidence 0.95: one-sided bound = mean + t(2, 90% two-sided) s / sqrt(3)
    # = 0.090 + 2.919986 x 0.01 / 1.732 = 0.1069 > 0.1 -> fail, and the note says how many
    # repeats at this spread would pass: mean + t(n-1, 0.90) 0.01/sqrt(n) < 0.1 first at n = 5
    rows = [(2, dict(rps=r, p99=p)) for r, p in ((6.0, 0.080), (6.2, 0.100), (5.8, 0.090))]
    sweep, dirs = make_sweep(tmp_path, rows, repeats=3, confidence=0.95)
    rep = build_sweep_report(sweep, dirs, tmp_path / "out")
    rule = rep["levels"][0]["slo"][0]
    assert rule["bound"] == "upper 95% bound" and rule["confidence"] == 0.95
    assert rule["value"] == pytest.approx(0.090 + 2.919985580 * 0.01 / 3 ** 0.5)
    assert rule["passed"] is False and rule["repeats_needed"] == 5
    assert "about 5 repeats" in rule["note"]
    assert rep["confidence"] == 0.95 and "95% confidence" in rep["verdict_rule"]
    assert "about 5 repeats" in (tmp_path / "out" / "report.md").read_text()


def test_confidence_lower_bound_for_greater_than_rules(tmp_path):
    rows = [(1, dict(rps=r)) for r in (100.0, 110.0, 90.0)]  # mean 100, lower bound ~83
    sweep, dirs = make_sweep(tmp_path, rows, slo=("rps >= 95",), repeats=3, confidence=0.95)
    rep = build_sweep_report(sweep, dirs, tmp_path / "out")
    rule = rep["levels"][0]["slo"][0]
    assert rule["bound"] == "lower 95% bound"
    assert rule["value"] == pytest.approx(100.0 - 2.919985580 * 10.0 / 3 ** 0.5)
    assert rule["value"] < 95 and rep["levels"][0]["passed"] is False


def test_confidence_with_one_repeat_says_it_needs_two(tmp_path):
    sweep, dirs = make_sweep(tmp_path, [(1, dict(rps=5.0, p99=0.01))], confidence=0.9)
    rule = build_sweep_report(sweep, dirs, tmp_path / "out")["levels"][0]["slo"][0]
    assert rule["passed"] is False and "needs at least 2 repeats" in rule["note"]


def test_more_repeats_never_lower_the_pass_probability():
    """Monte Carlo (issue 12): a level whose p99 is truly 0.9 s (run-to-run sd 0.1 s) against
    p99 < 1s. With the verdict on the mean of the repeats, P(pass) rises with the number of
    repeats (0.84, 0.92, 0.96, 0.99 for 1, 2, 3, 5 repeats; 20,000 trials each, seed 12); the
    old upper-95%-bound rule gave 0.84, 0.09, 0.18, 0.40."""
    np = pytest.importorskip("numpy")
    from aifb.analysis.slo import parse_rule
    from aifb.analysis.sweep_verdict import judge_rule

    rule = parse_rule("p99 < 1s")
    rng = np.random.default_rng(12)
    rates = []
    for n in (1, 2, 3, 5):
        trials = 2000
        passed = sum(judge_rule(rule, [(float(v), None) for v in rng.normal(0.9, 0.1, n)])["passed"]
                     for _ in range(trials))
        rates.append(passed / trials)
    assert all(b >= a - 0.02 for a, b in zip(rates, rates[1:])), rates
    assert rates[-1] > 0.97, rates


def test_error_budget_fails_a_level_whose_slo_holds(tmp_path):
    """Issue 12: 5 % of requests failed at level 4; its latency SLO holds, but it is over the
    default 1 % error budget, so it is not the optimum."""
    sweep, dirs = make_sweep(tmp_path, [(1, dict(rps=3.0, p99=0.05)), (2, dict(rps=6.0, p99=0.06)),
                                        (4, dict(rps=12.0, p99=0.07, total=1000, errors=50))],
                             slo=("p99 < 1s",))
    rep = build_sweep_report(sweep, dirs, tmp_path / "out")
    by = {l["level"]: l for l in rep["levels"]}
    assert by[4]["slo"][0]["passed"] is True
    assert by[4]["slo"][1]["rule"] == "error_rate <= 1% (error budget)"
    assert by[4]["passed"] is False and "error budget" in by[4]["verdict_text"]
    assert rep["optimal"]["level"] == 2 and rep["error_budget"] == 0.01
    assert "error budget of 1% failed requests" in (tmp_path / "out" / "report.md").read_text()
    # a sweep may allow more
    sweep["error_budget"] = "10%"
    assert build_sweep_report(sweep, dirs, tmp_path / "out2")["optimal"]["level"] == 4


def test_bad_error_budget_and_confidence_are_clear_errors(tmp_path):
    sweep, dirs = make_sweep(tmp_path, [(1, dict(rps=3.0))], error_budget="lots")
    with pytest.raises(ValueError, match="error_budget 'lots'"):
        build_sweep_report(sweep, dirs, tmp_path / "out")
    sweep, dirs = make_sweep(tmp_path, [(1, dict(rps=3.0))], confidence=95)
    with pytest.raises(ValueError, match="confidence 95"):
        build_sweep_report(sweep, dirs, tmp_path / "out")


def test_a_failed_repeat_fails_the_level(tmp_path):
    rows = [(1, dict(rps=3.0)), (1, dict(rps=3.1)),
            (1, dict(status="failed", reason="timeout", summary=False)),
            (2, dict(rps=6.0)), (2, dict(rps=6.1)), (2, dict(rps=5.9))]
    sweep, dirs = make_sweep(tmp_path, rows, repeats=3)
    rep = build_sweep_report(sweep, dirs, tmp_path / "out")
    by = {l["level"]: l for l in rep["levels"]}
    assert by[1]["status"] == "failed" and not by[1]["passed"]
    assert by[1]["throughput"] == pytest.approx(3.05)  # from the completed repeats
    assert rep["optimal"]["level"] == 2


def test_number_formats():
    from aifb.units import format_metric as fmt_metric, format_seconds as fmt_seconds
    assert fmt_seconds(0.37) == "370 ms"
    assert fmt_seconds(0.0123) == "12.3 ms"
    assert fmt_seconds(0.000183) == "183 µs"
    assert fmt_seconds(None) == "n/a"
    assert fmt_metric("rps", 12.8) == "12.8 req/s"
    assert fmt_metric("error_rate", 0.005) == "0.5%"


def test_wide_intervals_on_a_log_axis_still_plot(tmp_path):
    # two repeats (t = 12.7) with very different p99s: the CI reaches below zero
    rows = [(1, dict(rps=100.0, p50=1e-5, p95=3e-5, p99=5e-5)),
            (1, dict(rps=140.0, p50=2e-5, p95=4e-5, p99=9e-4)),
            (2, dict(rps=180.0, p50=3e-5, p95=5e-5, p99=6e-4)),
            (2, dict(rps=200.0, p50=3e-5, p95=5e-5, p99=2e-3))]
    sweep, dirs = make_sweep(tmp_path, rows, repeats=2)
    out = tmp_path / "out"
    rep = build_sweep_report(sweep, dirs, out)
    assert_files(out)
    assert rep["levels"][0]["ci"]["p99"]["low"] < 0
    assert rep["optimal"]["level"] == 2


def test_points_in_different_cache_states_are_flagged(tmp_path):
    sweep, dirs = make_sweep(tmp_path, [(1, {"rps": 10.0}), (2, {"rps": 20.0})])
    for d, state in zip(dirs, ("cold", "warm")):
        s = json.loads((d / "summary.json").read_text())
        s["llm_workload"] = {"cache": {"state": state}}
        (d / "summary.json").write_text(json.dumps(s))
    report = build_sweep_report(sweep, dirs, tmp_path / "out")
    assert [p["cache_state"] for p in report["points"]] == ["cold", "warm"]
    assert "cold: BM-20260109-001; warm: BM-20260109-002" in report["cache_states_note"]
    md = (tmp_path / "out" / "report.md").read_text()
    assert "## Warnings" in md and "different prefix-cache states" in md
    same, dirs2 = make_sweep(tmp_path / "b", [(1, {"rps": 10.0}), (2, {"rps": 20.0})])
    assert build_sweep_report(same, dirs2, tmp_path / "out2")["cache_states_note"] is None
