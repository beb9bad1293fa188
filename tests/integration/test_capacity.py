"""SLO capacity search (aifb.workflow.capacity): the double-then-bisect logic against known verdicts, and
a whole search through Snakemake against a fake Redis (tests/fakes/fake_redis.py) whose reply
time grows with its number of open connections, so the answer is known in advance."""

from __future__ import annotations

import pytest
import yaml

from aifb.workflow.capacity import CapacitySearch, capacity_headline, run_capacity
from aifb.errors import ConfigError

from fakes.fake_redis import Connections, serve_in_thread
from support import make_workspace, read_json, write_step_result


def search_with(threshold, start=1, maximum=128, resolution=None, integer=True):
    """Run the search against a monotone service: level passes iff level <= threshold."""
    s = CapacitySearch(start, maximum, resolution, integer)
    tested = []
    while (level := s.next_level()) is not None:
        assert level not in tested, "a level is never measured twice"
        assert start <= level <= maximum
        tested.append(level)
        s.record(level, level <= threshold)
        assert len(tested) < 64
    return s, tested


# --------------------------------------------------------------------------- search logic
@pytest.mark.parametrize("threshold", list(range(1, 128)))
def test_integer_search_finds_the_exact_threshold(threshold):
    s, tested = search_with(threshold)
    ans = s.answer()
    assert ans["capacity"] == threshold and ans["first_fail"] == threshold + 1
    assert ans["reason"] == "resolution" and not ans["max_reached"]
    assert len(tested) <= 2 * 7 + 1     # ~log2 doubling + ~log2 bisection


def test_search_path_is_doubling_then_bisection():
    s, tested = search_with(37, start=2)
    assert tested == [2, 4, 8, 16, 32, 64, 48, 40, 36, 38, 37]
    assert [h[1] for h in s.history] == [True] * 5 + [False, False, False, True, False, True]
    assert "double to 4" in s.history[0][2] and "bisect [32, 64) -> 48" in s.history[5][2]
    assert "within the resolution" in s.history[-1][2]


def test_max_reached_stops_with_a_lower_bound():
    s, tested = search_with(1000, start=3, maximum=20)
    assert tested == [3, 6, 12, 20]
    ans = s.answer()
    assert ans == {**ans, "capacity": 20, "first_fail": None, "reason": "max", "max_reached": True}
    assert "at least" in s.history[-1][2]
    res = {**ans, "param": "load.clients", "slo": ["p99 < 1ms"], "start": 3, "max": 20}
    assert "≥ 20" in capacity_headline(res)


def test_nothing_passes():
    s, tested = search_with(0, start=4)
    assert tested == [4]
    ans = s.answer()
    assert ans["capacity"] is None and ans["first_fail"] == 4 and ans["none_passed"]
    res = {**ans, "param": "load.clients", "slo": ["p99 < 1ms"], "start": 4, "max": 64}
    assert "No load.clients meets" in capacity_headline(res)


def test_fail_right_after_start_brackets_between_them():
    s, tested = search_with(1, start=1)
    assert tested == [1, 2] and s.answer()["bracket"] == [1, 2]


def test_coarser_and_relative_resolution():
    s, tested = search_with(37, start=1, resolution=8)
    ans = s.answer()
    assert ans["capacity"] <= 37 < ans["first_fail"] and ans["first_fail"] - ans["capacity"] <= 8
    s2, tested2 = search_with(37, start=1, resolution="10%")
    a2 = s2.answer()
    assert a2["capacity"] <= 37 < a2["first_fail"]
    assert a2["first_fail"] - a2["capacity"] <= 0.1 * a2["capacity"]
    assert len(tested2) < len(search_with(37, start=1)[1]) + 1


def test_float_rate_search():
    s, tested = search_with(7321.5, start=500.0, maximum=50_000.0, resolution=100, integer=False)
    ans = s.answer()
    assert ans["capacity"] <= 7321.5 < ans["first_fail"]
    assert ans["first_fail"] - ans["capacity"] <= 100
    assert tested[:5] == [500.0, 1000.0, 2000.0, 4000.0, 8000.0]


def test_a_noisy_non_monotone_service_still_gives_a_consistent_bracket():
    verdicts = {1: True, 2: True, 4: False, 3: True}   # e.g. 4 failed by noise
    s = CapacitySearch(1, 64)
    while (lv := s.next_level()) is not None:
        s.record(lv, verdicts[lv])
    assert s.answer()["bracket"] == [3, 4]


def test_bad_specs_are_clear_errors():
    with pytest.raises(ConfigError, match="start must be > 0"):
        CapacitySearch(0, 10)
    with pytest.raises(ConfigError, match="below start"):
        CapacitySearch(8, 4)
    with pytest.raises(ConfigError, match="whole numbers"):
        CapacitySearch(1.5, 4)
    with pytest.raises(ConfigError, match="resolution"):
        CapacitySearch(1, 4, "150%")
    s = CapacitySearch(1, 4)
    with pytest.raises(ValueError, match="expected a verdict for level 1"):
        s.record(2, True)


# --------------------------------------------------------------------------- end to end
# The fake's GET latency is PER_CONNECTION_S x (connections open now). With `clients` workers of
# one connection each it is clients x PER_CONNECTION_S, so an SLO on it has a known capacity.
PER_CONNECTION_S = 0.005


@pytest.fixture
def fake_capacity_server():
    connections = Connections()
    with serve_in_thread(delays=(lambda: PER_CONNECTION_S * connections.open,), exact=True,
                         value=b"fake", connections=connections) as endpoint:
        yield endpoint


@pytest.mark.slow
@pytest.mark.workflow
def test_capacity_search_through_snakemake(tmp_path, fake_capacity_server):
    ws = make_workspace(tmp_path)
    recipe = {
        "name": "fake_capacity", "category": "storage", "purpose": "capacity search test",
        "target": "local",
        "service": {"kind": "redis", "endpoint": fake_capacity_server},
        "workload": {"ops": {"get": 1}, "keyspace": 100, "preload": False},
        "load": {"clients": 1, "concurrency": 1, "duration": "1s", "warmup": "0.3s"},
        "slo": ["p50 < 22.5ms"], "seed": 1,
        # The fake's latency counts open connections; the telemetry sampler's INFO connection
        # would be one more (and the fake is no Redis to report on).
        "telemetry": False}
    (ws / "recipes" / "fake_capacity.yaml").write_text(yaml.safe_dump(recipe))
    # GET latency = 5 ms x clients: 4 clients -> 20 ms passes, 5 -> 25 ms fails.
    spec = {"mode": "capacity", "recipe": "recipes/fake_capacity.yaml", "param": "load.clients",
            "start": 1, "max": 64, "resolution": 1, "slo": ["p50 < 22.5ms"], "version": 1,
            "service": "fake RESP (latency grows with connections)"}
    lines = []
    res = run_capacity("fake_cap", spec, root=ws, profile="local", log=lines.append)
    assert res["capacity"] == 4 and res["first_fail"] == 5, "\n".join(lines)
    assert [s["level"] for s in res["steps"]] == [1, 2, 4, 8, 6, 5]
    assert [s["verdict"] for s in res["steps"]] == ["pass"] * 3 + ["fail"] * 3
    ids = [s["benchmark_id"] for s in res["steps"]]
    assert len(set(ids)) == 6
    for s in res["steps"]:
        run = read_json(ws / "results" / s["benchmark_id"] / "run.json")
        assert run["status"] == "completed" and run["recipe"]["load"]["clients"] == s["level"]
        assert run["sweep"]["mode"] == "capacity" and run["sweep"]["level"] == s["level"]
        assert s["p50"] == pytest.approx(0.005 * s["level"], abs=0.002)
    out = ws / res["report_dir"]
    assert out.name == f"sweep_{ids[0]}_{ids[-1]}"
    md = (out / "report.md").read_text()
    assert "Capacity: load.clients = 4" in md and "[4, 5)" in md
    assert "## Search path" in md and "bisect [4, 8) -> 6" in md
    rep = read_json(out / "report.json")
    assert rep["capacity"]["capacity"] == 4 and [lv["level"] for lv in rep["levels"]] == [1, 2, 4, 5, 6, 8]
    for png in ("throughput_vs_level", "latency_vs_level", "error_rate_vs_level"):
        assert (out / "plots" / f"{png}.png").read_bytes()[:4] == b"\x89PNG"

    # Asking again reuses every step: same IDs, nothing measured again.
    mtimes = {i: (ws / "results" / i / "requests.jsonl").stat().st_mtime for i in ids}

    def must_not_run(bid):
        raise AssertionError(f"{bid} was measured again")

    again = run_capacity("fake_cap", spec, root=ws, profile="local", log=lambda m: None,
                         run_step=must_not_run)
    assert [s["benchmark_id"] for s in again["steps"]] == ids
    assert all(s["reused"] for s in again["steps"]) and again["capacity"] == 4
    assert {i: (ws / "results" / i / "requests.jsonl").stat().st_mtime for i in ids} == mtimes


def test_capacity_with_a_fake_step_runner(tmp_path):
    """The decision comes from each step's summary.json (here written by a stand-in runner)."""
    ws = make_workspace(tmp_path)
    spec = {"mode": "capacity", "recipe": "recipes/recipe_redis_1client.yaml",
            "param": "load.concurrency", "start": 2, "max": 100, "slo": ["p99 < 10.2ms"]}
    from aifb.workflow import registry

    def fake_step(bid):
        level = registry.get(bid, ws)["recipe"]["load"]["concurrency"]
        # 25 passes (10 ms), 26 fails (10.4 ms)
        return write_step_result(ws, bid, 1000.0 * level, 0.0004 * level)

    res = run_capacity("cap", spec, root=ws, log=lambda m: None, run_step=fake_step)
    assert (res["capacity"], res["first_fail"]) == (25, 26)
    assert (ws / res["report_dir"] / "report.md").is_file()
    with pytest.raises(ConfigError, match="varies one of"):
        run_capacity("cap", {**spec, "param": "workload.value_size"}, root=ws,
                     log=lambda m: None, run_step=fake_step)


def test_capacity_steps_are_judged_like_sweep_levels(tmp_path):
    """The same judgement as a sweep level (sweep_verdict.judge_rule): above 20 concurrent
    requests 5 % of them fail, so those steps miss the default 1 % error budget although
    their latency SLO holds; `error_budget: 10%` lets them pass; `confidence:` is refused
    (each level is measured once)."""
    import json

    from aifb.workflow import registry

    ws = make_workspace(tmp_path)
    spec = {"mode": "capacity", "recipe": "recipes/recipe_redis_1client.yaml",
            "param": "load.concurrency", "start": 2, "max": 64, "slo": ["p99 < 1s"]}

    def fake_step(bid):
        level = registry.get(bid, ws)["recipe"]["load"]["concurrency"]
        d = ws / "results" / bid
        d.mkdir(parents=True, exist_ok=True)
        (d / "run.json").write_text(json.dumps({"status": "completed", "benchmark_id": bid}))
        errors = 5 if level > 20 else 0
        (d / "summary.json").write_text(json.dumps({
            "status": "completed", "benchmark_id": bid,
            "requests": {"total": 100, "errors": errors},
            "throughput": {"rps": 1000.0 * level},
            "latency_s": {"n": 100 - errors, "p50": 0.001, "p95": 0.002, "p99": 0.003}}))
        (ws / "reports" / bid).mkdir(parents=True, exist_ok=True)
        return 0

    res = run_capacity("cap", spec, root=ws, log=lambda m: None, run_step=fake_step)
    assert (res["capacity"], res["first_fail"]) == (20, 21)
    fail = next(s for s in res["steps"] if s["level"] == 21)
    assert "error_rate <= 1% (error budget): 5%" in fail["why"]
    assert res["error_budget"] == 0.01 and res["slo"] == ["p99 < 1s"]
    res = run_capacity("cap", {**spec, "error_budget": "10%", "version": 2}, root=ws,
                       log=lambda m: None, run_step=fake_step)
    assert res["capacity"] == 64 and res["max_reached"]
    with pytest.raises(ConfigError, match="confidence"):
        run_capacity("cap", {**spec, "confidence": 0.95}, root=ws, log=lambda m: None,
                     run_step=fake_step)
