"""aifb.analysis.compare_runs on summary dicts with known numbers: deltas, the noise verdict from
repeats (within / beyond) or its absence, recipe / environment / cache differences."""

import pytest

from aifb.analysis.compare import rerun_tolerance
from aifb.analysis.compare_runs import NO_REPEATS, NOT_MEASURED, compare_subjects, flatten


def summary(bid, rps, p50, p95, p99, error_rate=0.0, llm=None, cache=None):
    s = {"benchmark_id": bid, "status": "completed", "throughput": {"rps": rps},
         "latency_s": {"p50": p50, "p95": p95, "p99": p99},
         "requests": {"error_rate": error_rate}}
    if llm:
        s["llm"] = llm
    if cache:
        s["llm_workload"] = {"cache": {"state": cache}}
    return s


def run(bid, clients=1, host="h1", commit="a" * 40):
    return {"benchmark_id": bid, "git_commit": commit,
            "recipe": {"name": "r", "load": {"clients": clients, "duration": "10s"}},
            "environment": {"framework_version": "0.1.0", "hostname": host, "cpu_model": "X",
                            "gpus": []}}


def subject(label, summaries, runs=None, spread=None):
    return {"label": label, "ids": [s["benchmark_id"] for s in summaries], "summaries": summaries,
            "runs": runs or [run(s["benchmark_id"]) for s in summaries], "spread": spread}


def cell(c, metric, i=1):
    return next(m for m in c["metrics"] if m["metric"] == metric)["cells"][i]


SPREAD = {"n": 5, "rps": 0.05, "p50": 0.05, "p99": 0.10}


def test_deltas_and_no_repeats_says_noise_unknown():
    a = subject("A", [summary("BM-20260109-001", 100.0, 0.002, 0.004, 0.008)])
    b = subject("B", [summary("BM-20260109-002", 80.0, 0.003, 0.005, 0.010, error_rate=0.01)])
    c = compare_subjects([a, b])
    assert cell(c, "rps")["rel_delta"] == pytest.approx(-0.2)
    assert cell(c, "p50")["rel_delta"] == pytest.approx(0.5)
    assert cell(c, "p99")["rel_delta"] == pytest.approx(0.25)
    assert cell(c, "rps")["beyond_noise"] is None and cell(c, "rps")["noise"] == NO_REPEATS
    assert c["noise"] == [{"label": "B", "source": NO_REPEATS}]
    assert cell(c, "rps", 0)["rel_delta"] is None  # the baseline has no delta
    # error rate 0 -> 1 %: no relative change of a zero
    assert cell(c, "error_rate")["rel_delta"] is None
    assert not any(m["metric"].startswith("ttft") for m in c["metrics"])  # no LLM figures


def test_within_noise_with_repeats():
    tol = rerun_tolerance(0.05, 5)  # t(4) x 5 % x sqrt 2 = 19.6 %
    a = subject("s@1", [summary(f"BM-20260109-00{i}", 100.0, 0.002, 0.004, 0.008)
                        for i in range(1, 6)], spread=SPREAD)
    b = subject("s@2", [summary("BM-20260109-010", 110.0, 0.0022, 0.0044, 0.0088)])
    c = compare_subjects([a, b])
    for metric in ("rps", "p50", "p99"):
        assert cell(c, metric)["noise"] == "within noise", metric
        assert cell(c, metric)["beyond_noise"] is False
    assert cell(c, "rps")["tolerance"] == pytest.approx(tol)
    assert cell(c, "p95")["noise"] == NOT_MEASURED  # no spread of p95 is measured
    assert "5 repeats" in c["noise"][0]["source"] and c["noise"][0]["source"].startswith("s@1")


def test_beyond_noise_with_repeats_of_the_other_subject():
    a = subject("A", [summary("BM-20260109-001", 100.0, 0.002, 0.004, 0.008)])
    b = subject("B", [summary("BM-20260109-002", 60.0, 0.004, 0.006, 0.0085),
                      summary("BM-20260109-003", 60.0, 0.004, 0.006, 0.0085)],
                spread={"n": 2, "rps": 0.01, "p50": 0.01, "p99": 0.01})
    c = compare_subjects([a, b])
    assert cell(c, "rps")["noise"] == "beyond noise" and cell(c, "rps")["rel_delta"] == pytest.approx(-0.4)
    assert cell(c, "p50")["beyond_noise"] is True
    # p99 +6.25 % against t(1) x 1 % x sqrt 2 = 18 %: within
    assert cell(c, "p99")["beyond_noise"] is False
    assert c["subjects"][1]["n"] == 2


def test_a_subject_with_repeats_shows_their_mean():
    a = subject("A", [summary("BM-20260109-001", 100.0, 0.002, 0.004, 0.008)])
    b = subject("B", [summary("BM-20260109-002", 90.0, 0.002, 0.004, 0.008),
                      summary("BM-20260109-003", 110.0, 0.004, 0.004, 0.008)])
    c = compare_subjects([a, b])
    assert cell(c, "rps")["value"] == pytest.approx(100.0)
    assert cell(c, "p50")["value"] == pytest.approx(0.003)


def test_llm_figures_recipe_environment_and_cache_differences():
    llm = {"ttft_s": {"p50": 0.1, "p99": 0.2}, "tpot_s": {"p50": 0.01, "p99": 0.02}}
    llm2 = {"ttft_s": {"p50": 0.05, "p99": 0.1}, "tpot_s": {"p50": 0.01, "p99": 0.02}}
    a = subject("A", [summary("BM-20260109-001", 5.0, 1.0, 1.5, 2.0, llm=llm, cache="cold")],
                runs=[run("BM-20260109-001")])
    b = subject("B", [summary("BM-20260109-002", 5.0, 1.0, 1.5, 2.0, llm=llm2, cache="warm")],
                runs=[run("BM-20260109-002", clients=4, host="h2", commit="b" * 40)])
    c = compare_subjects([a, b])
    assert cell(c, "ttft_p50")["rel_delta"] == pytest.approx(-0.5)
    assert cell(c, "tpot_p50")["rel_delta"] == 0.0
    assert c["recipe_diff"] == [{"key": "load.clients", "values": [1, 4]}]
    keys = {d["key"] for d in c["environment_diff"]}
    assert keys == {"git commit", "host"}
    assert c["cache"] == ["cold", "warm"]
    assert any("prefix-cache" in n for n in c["notes"])


def test_flatten_and_a_single_subject_is_refused():
    assert flatten({"a": {"b": 1, "c": [1, 2]}, "d": {}}) == {"a.b": 1, "a.c": [1, 2], "d": {}}
    with pytest.raises(ValueError, match="at least 2"):
        compare_subjects([subject("A", [summary("BM-20260109-001", 1, 1, 1, 1)])])
