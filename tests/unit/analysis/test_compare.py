"""Rerun comparison (aifb.analysis.compare): deltas, tolerances and their source, verdicts, files."""

import json

import pytest

from aifb.analysis import compare

from aifb.workflow import registry
from aifb.analysis.compare import (DEFAULT_TOLERANCE, compare_runs, render_markdown, tolerances,
                          write_comparison)

ORIG, NEW = "BM-20260109-002", "BM-20260109-005"


def summ(bid, rps, p50, p99, status="completed", reason=None):
    return {"benchmark_id": bid, "status": status, "reason": reason,
            "throughput": {"rps": rps}, "latency_s": {"n": 1000, "p50": p50, "p99": p99}}


def test_reproduced_with_default_tolerances():
    c = compare_runs(summ(ORIG, 100.0, 0.010, 0.050), summ(NEW, 103.1, 0.0098, 0.0542))
    assert c["verdict"] == "reproduced"
    assert c["original"] == ORIG and c["rerun"] == NEW
    assert c["line"] == (f"{NEW} vs {ORIG}: reproduced (rps +3.1% within ±10%, "
                         "p50 -2.0% within ±15%, p99 +8.4% within ±30%)")
    by = {m["metric"]: m for m in c["metrics"]}
    assert list(by) == ["rps", "p50", "p99"]
    assert by["rps"]["delta"] == pytest.approx(3.1)
    assert by["rps"]["rel_delta"] == pytest.approx(0.031)
    assert by["p50"]["rel_delta"] == pytest.approx(-0.02)
    assert by["p99"]["tolerance"] == 0.30 and by["p99"]["within"] is True
    assert "2-core" in c["tolerance_source"]
    assert c["out_of_tolerance"] == []


def test_defaults_are_named_constants():
    assert DEFAULT_TOLERANCE == {"rps": 0.10, "p50": 0.15, "p99": 0.30}
    assert "noise" in compare.DEFAULT_TOLERANCE_SOURCE


def test_not_reproduced_names_the_metric():
    c = compare_runs(summ(ORIG, 100.0, 0.010, 0.050), summ(NEW, 97.0, 0.0101, 0.0725))
    assert c["verdict"] == "not reproduced"
    assert c["out_of_tolerance"] == ["p99"]
    assert "p99 out of tolerance" in c["line"]
    assert "p99 +45.0% outside ±30%" in c["line"]
    assert "rps -3.0% within ±10%" in c["line"]


def test_exactly_at_the_tolerance_is_within():
    c = compare_runs(summ(ORIG, 100.0, 0.010, 0.050), summ(NEW, 110.0, 0.010, 0.050))
    assert c["verdict"] == "reproduced"


def test_tolerance_from_repeat_spread():
    """Known answer: t(2, 95%) = 4.302652730, so CV 1 % over 3 repeats gives
    4.302652730 x 0.01 x sqrt(2) = 6.0849 % (the old 3 x CV gave 3 %)."""
    spread = {"n": 3, "rps": 0.01, "p50": 0.001, "p99": 0.2}
    tol, source = tolerances(repeat_spread=spread)
    assert tol == pytest.approx({"rps": 0.0608487, "p50": 0.02, "p99": 1.2169740}, rel=1e-6)
    assert "from the spread of 3 repeats" in source
    assert "prediction interval" in source and "t(2) × CV × √2" in source
    assert "two-sample form" in source
    c = compare_runs(summ(ORIG, 100.0, 0.010, 0.050), summ(NEW, 104.0, 0.010, 0.050),
                     repeat_spread=spread)
    assert c["verdict"] == "reproduced"  # 4 % < 6.08 %: within what 3 repeats predict
    c = compare_runs(summ(ORIG, 100.0, 0.010, 0.050), summ(NEW, 107.0, 0.010, 0.050),
                     repeat_spread=spread)
    assert c["verdict"] == "not reproduced" and c["out_of_tolerance"] == ["rps"]
    assert "from the spread of 3 repeats" in c["tolerance_source"]
    assert "rps +7.0% outside ±6.08%" in c["line"]


def test_rerun_tolerance_known_values():
    # t(1) = 12.706204736: two repeats with CV 1 % -> 12.706 x 0.01 x 1.41421 = 17.969 %
    assert compare.rerun_tolerance(0.01, 2) == pytest.approx(0.1796929, rel=1e-6)
    assert compare.rerun_tolerance(0.0001, 10) == compare.TOLERANCE_FLOOR   # the floor stays
    with pytest.raises(ValueError, match="at least 2 repeats"):
        compare.rerun_tolerance(0.01, 1)


@pytest.mark.parametrize("n", [2, 3, 5, 10])
def test_rerun_from_the_same_distribution_is_reproduced_95_percent(n):
    """Simulation: n repeats of a level (the original is the first of them) and a rerun, all
    drawn from one normal distribution (mean 100, sd 5). The rerun must be judged reproduced
    about 95 % of the time; the old 3 x CV tolerance did so 74 % of the time at n = 2."""
    np = pytest.importorskip("numpy")
    rng = np.random.default_rng(20260109 + n)
    trials = 4000
    hits = 0
    for _ in range(trials):
        repeats = rng.normal(100.0, 5.0, n)
        rerun = rng.normal(100.0, 5.0)
        cv = float(np.std(repeats, ddof=1) / np.mean(repeats))
        tol, _ = tolerances(repeat_spread={"n": n, "rps": cv})
        hits += abs(rerun - repeats[0]) / repeats[0] <= tol["rps"]
    rate = hits / trials
    assert 0.93 <= rate <= 0.985, rate


def test_partial_repeat_spread_keeps_defaults_for_the_rest():
    tol, source = tolerances(repeat_spread={"n": 2, "rps": 0.05, "p50": None, "p99": None})
    assert tol["rps"] == pytest.approx(12.706204736 * 0.05 * 2 ** 0.5)
    assert tol["p50"] == 0.15 and tol["p99"] == 0.30
    assert "defaults for p50, p99" in source


def test_explicit_tolerance_overrides():
    c = compare_runs(summ(ORIG, 100.0, 0.010, 0.050), summ(NEW, 104.0, 0.010, 0.050),
                     tolerance={"rps": 0.05})
    assert c["verdict"] == "reproduced"
    assert c["metrics"][0]["tolerance"] == 0.05
    assert "given by the caller" in c["tolerance_source"]
    with pytest.raises(ValueError, match="unknown metric"):
        compare_runs(summ(ORIG, 1, 1, 1), summ(NEW, 1, 1, 1), tolerance={"p90": 0.1})


@pytest.mark.parametrize("which", ["original", "rerun"])
def test_not_comparable_when_a_run_did_not_complete(which):
    good = summ(ORIG, 100.0, 0.010, 0.050)
    bad = summ(NEW, 0.0, None, None, status="failed", reason="redis-server did not start")
    c = compare_runs(good, bad) if which == "rerun" else compare_runs(bad, good)
    assert c["verdict"] == "not comparable"
    assert f"{NEW} is failed: redis-server did not start" in c["reason"]
    assert "not comparable" in c["line"]


def test_not_comparable_when_a_metric_is_missing():
    c = compare_runs(summ(ORIG, 100.0, 0.010, 0.050), summ(NEW, 100.0, None, 0.05))
    assert c["verdict"] == "not comparable" and f"{NEW} has no p50" in c["reason"]


def test_markdown_and_files(tmp_path):
    c = compare_runs(summ(ORIG, 100.0, 0.010, 0.050), summ(NEW, 103.1, 0.0098, 0.0542))
    md = render_markdown(c)
    assert md.startswith("## Reproducibility\n")
    assert f"| Metric | {ORIG} (original) | {NEW} (rerun) | Δ | Δ % | Tolerance | Within |" in md
    assert "| throughput | 100 req/s | 103 req/s | +3.1 req/s | +3.1% | ±10% | ✅ |" in md
    assert "| latency p50 | 10 ms | 9.8 ms | -200 µs |" in md
    assert "Tolerance: default tolerances" in md
    js, mdp = write_comparison(c, tmp_path / "reports" / NEW)
    assert json.loads(js.read_text()) == json.loads(json.dumps(c))
    assert mdp.read_text() == md


def test_rerun_compare_and_report_uses_repeat_spread(tmp_path):
    """The contract with aifb.workflow.rerun: summaries on disk, repeat spread from the sweep level."""
    from aifb.workflow.rerun import compare_and_report

    recipe = {"name": "r", "category": "storage", "service": {"kind": "redis"},
              "load": {"clients": 2, "duration": "1s"}}
    key = {"name": "redis_sweep", "version": 1, "level": 2, "epoch": 0}
    ids = []
    for rep, rps in enumerate((100.0, 101.0, 99.0)):
        ids.append(registry.allocate(registry.make_entry(recipe, sweep={**key, "repeat": rep}),
                                     tmp_path, day="20260109"))
        d = tmp_path / "results" / ids[-1]
        d.mkdir(parents=True)
        (d / "summary.json").write_text(json.dumps(summ(ids[-1], rps, 0.010, 0.050)))
    new = registry.allocate(registry.make_entry(recipe, rerun_of=ids[0]), tmp_path, day="20260109")
    (tmp_path / "results" / new).mkdir(parents=True)
    (tmp_path / "results" / new / "summary.json").write_text(
        json.dumps(summ(new, 101.5, 0.0101, 0.051)))
    c = compare_and_report(new, root=tmp_path)
    assert c["verdict"] == "reproduced"
    assert "from the spread of 3 repeats" in c["tolerance_source"]
    # rps spread 1 % over 3 repeats -> t(2) x 0.01 x sqrt(2)
    assert c["metrics"][0]["tolerance"] == pytest.approx(4.302652730 * 0.01 * 2 ** 0.5)
    assert (tmp_path / "reports" / new / "comparison.json").is_file()
    assert (tmp_path / "reports" / new / "comparison.md").is_file()


def with_cache(summary: dict, state: str) -> dict:
    return {**summary, "llm_workload": {"cache": {"state": state}}}


def test_a_rerun_in_another_cache_state_is_not_comparable_and_the_report_says_why():
    c = compare_runs(with_cache(summ(ORIG, 10.0, 0.1, 0.2), "cold"),
                     with_cache(summ(NEW, 10.0, 0.1, 0.2), "warm"))
    assert c["verdict"] == "not comparable"
    assert f"{ORIG} measured a cold prefix cache and {NEW} a warm one" in c["reason"]
    assert "warm one (workload.cache)" in render_markdown(c)
    same = compare_runs(with_cache(summ(ORIG, 10.0, 0.1, 0.2), "warm"),
                        with_cache(summ(NEW, 10.0, 0.1, 0.2), "warm"))
    assert same["verdict"] == "reproduced"


def test_cache_state_from_the_summary_or_run_json_and_the_note():
    assert compare.cache_state(with_cache(summ(ORIG, 1, 1, 1), "warm")) == "warm"
    run = {"clients": {"implementation": {"cache": {"state": "cold"}}}}
    assert compare.cache_state(None, run) == "cold"
    assert compare.cache_state(summ(ORIG, 1, 1, 1), {"clients": {}}) is None
    assert compare.cache_states_note({"A": "cold", "B": "cold", "C": None}) is None
    note = compare.cache_states_note({"A": "cold", "B": "warm", "C": "cold"})
    assert "(cold: A, C; warm: B)" in note and "not comparable" in note


# -- the server block (aifb.analysis.compare_server) ------------------------------------------

def with_server(s, ratio=1.0, ratio_tol=0.06, cpu=0.5, gpu=None, rapl=None, total=1000):
    eff = {"cpu_s_per_1k_requests": cpu}
    if gpu:
        eff["gpu"] = {"j_per_request": gpu[0], "j_per_output_token": gpu[1]}
    if rapl is not None:
        eff["cpu_energy_j"] = rapl
    return {**s, "requests": {"total": total},
            "server": {"requests_ratio": {"value": ratio, "tolerance": ratio_tol},
                       "efficiency": eff}}


def test_server_figures_are_compared_with_deltas_and_tolerances():
    a = with_server(summ(ORIG, 100.0, 0.010, 0.050), ratio=1.0, cpu=0.50, gpu=(2.0, 0.10), rapl=50.0)
    b = with_server(summ(NEW, 101.0, 0.010, 0.050), ratio=1.03, cpu=0.55, gpu=(2.1, 0.11), rapl=55.0)
    c = compare_runs(a, b)
    by = {m["figure"]: m for m in c["server"]["compared"]}
    assert list(by) == ["requests_ratio", "cpu_s_per_1k_requests", "gpu_j_per_request",
                        "gpu_j_per_output_token", "cpu_energy_j_per_1k_requests"]
    r = by["requests_ratio"]
    assert r["absolute"] and r["delta"] == pytest.approx(0.03) and r["tolerance"] == pytest.approx(0.12)
    assert by["cpu_s_per_1k_requests"]["rel_delta"] == pytest.approx(0.10)
    assert by["cpu_s_per_1k_requests"]["tolerance"] == compare.compare_server.SERVER_TOLERANCE
    assert by["cpu_energy_j_per_1k_requests"]["original"] == pytest.approx(50.0)   # 50 J / 1000 req
    assert all(m["within"] for m in by.values()) and c["warnings"] == []
    md = render_markdown(c)
    assert "### Server side" in md and "| service CPU-s per 1k requests | 0.5 | 0.55 |" in md


def test_a_server_figure_outside_its_tolerance_warns_but_keeps_the_verdict():
    a = with_server(summ(ORIG, 100.0, 0.010, 0.050), ratio=1.0, cpu=0.50)
    b = with_server(summ(NEW, 100.0, 0.010, 0.050), ratio=1.5, cpu=0.80)
    c = compare_runs(a, b)
    assert c["verdict"] == "reproduced" and c["out_of_tolerance"] == []
    assert [m["within"] for m in c["server"]["compared"]] == [False, False]
    assert len(c["warnings"]) == 2
    assert "service CPU-s per 1k requests: 0.5 -> 0.8 s, +60.0% (tolerance ±20%)" in c["warnings"][1]
    md = render_markdown(c)
    assert "⚠️" in md and "**Warning:** server/client requests: 1 -> 1.5" in md


def test_no_server_block_is_said_not_compared(tmp_path):
    c = compare_runs(summ(ORIG, 100.0, 0.010, 0.050),
                     with_server(summ(NEW, 100.0, 0.010, 0.050)))
    assert c["server"]["compared"] == [] and ORIG in c["server"]["note"]
    js, md = write_comparison(c, tmp_path)
    assert json.loads(js.read_text())["server"]["note"] == c["server"]["note"]
    assert "Not compared:" in md.read_text()


def with_stages(summary: dict, p99s: dict) -> dict:
    return {**summary, "stages": {n: {"latency_s": {"p50": p / 2, "p99": p},
                                      "share_of_e2e": p / summary["latency_s"]["p99"]}
                                  for n, p in p99s.items()}}


def test_a_pipelines_stages_are_compared_beside_its_e2e_verdict():
    a = with_stages(summ("BM-1", 10, 0.5, 1.0), {"retrieve": 0.01, "generate": 0.8})
    b = with_stages(summ("BM-2", 10, 0.5, 1.0), {"retrieve": 0.02, "generate": 0.8})
    c = compare_runs(a, b)
    assert c["verdict"] == "reproduced"          # on the end-to-end figures
    rows = {r["stage"]: r for r in c["stages"]["compared"]}
    assert rows["retrieve"]["rel_delta"]["p99"] == pytest.approx(1.0)
    assert rows["retrieve"]["within"] is False and rows["generate"]["within"] is True
    assert c["warnings"] == [c["stages"]["warnings"][0]]
    assert c["warnings"][0].startswith("stage retrieve p99 10 ms -> 20 ms (+100%, outside ±30%)")
    assert c["line"].endswith("; stage p99: retrieve +100% (outside the p99 tolerance), "
                              "generate +0%")
    md = render_markdown(c)
    assert "### Pipeline stages" in md and "| retrieve | 5 ms | 10 ms | 10 ms | 20 ms | +100.0% |" in md


def test_runs_without_stages_have_no_stage_comparison():
    c = compare_runs(summ("BM-1", 10, 0.5, 1.0), summ("BM-2", 10, 0.5, 1.0))
    assert c["stages"] is None and "stage" not in c["line"]
    assert "Pipeline stages" not in render_markdown(c)
