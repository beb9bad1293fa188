"""Rerun comparison (aifb.compare): deltas, tolerances and their source, verdicts, files."""

import json

import pytest

from aifb import compare, registry
from aifb.compare import (DEFAULT_TOLERANCE, compare_runs, render_markdown, tolerances,
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
    spread = {"n": 3, "rps": 0.01, "p50": 0.001, "p99": 0.2}
    tol, source = tolerances(repeat_spread=spread)
    assert tol == pytest.approx({"rps": 0.03, "p50": 0.02, "p99": 0.6})  # 3x, floor 2 %
    assert "from the spread of 3 repeats" in source
    c = compare_runs(summ(ORIG, 100.0, 0.010, 0.050), summ(NEW, 104.0, 0.010, 0.050),
                     repeat_spread=spread)
    assert c["verdict"] == "not reproduced" and c["out_of_tolerance"] == ["rps"]
    assert "from the spread of 3 repeats" in c["tolerance_source"]
    assert "rps +4.0% outside ±3%" in c["line"]


def test_partial_repeat_spread_keeps_defaults_for_the_rest():
    tol, source = tolerances(repeat_spread={"n": 2, "rps": 0.05, "p50": None, "p99": None})
    assert tol["rps"] == pytest.approx(0.15) and tol["p50"] == 0.15 and tol["p99"] == 0.30
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
    """The contract with aifb.rerun: summaries on disk, repeat spread from the sweep level."""
    from aifb.rerun import compare_and_report

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
    assert c["metrics"][0]["tolerance"] == pytest.approx(0.03)  # rps spread 1 % -> 3 %
    assert (tmp_path / "reports" / new / "comparison.json").is_file()
    assert (tmp_path / "reports" / new / "comparison.md").is_file()
