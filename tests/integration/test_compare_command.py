"""`aifb compare` on two real runs through Snakemake, against FAKE Redis servers
(tests/fakes/fake_redis.py) whose GETs answer after known delays (2 ms and 6 ms): the latency
delta's sign and size, the throughput's, and the report files."""

import pytest
import yaml

from fakes.fake_redis import serve_in_thread
from support import aifb, benchmark_id_from, make_workspace, read_json

pytestmark = [pytest.mark.workflow, pytest.mark.slow]

FAST_S, SLOW_S = 0.002, 0.006


def recipe(name: str, endpoint: str) -> dict:
    return {"name": name, "category": "storage", "purpose": "aifb compare test",
            "target": "local", "service": {"kind": "redis", "endpoint": endpoint},
            "workload": {"ops": {"get": 1}, "keyspace": 100, "preload": False},
            "load": {"clients": 1, "concurrency": 1, "duration": "1.5s", "warmup": "0.3s"},
            "seed": 1, "telemetry": False}  # the fake is no Redis to report on


def test_compare_two_real_runs_of_known_latencies(tmp_path):
    ws = make_workspace(tmp_path)
    ids = []
    with serve_in_thread(delays=(FAST_S,), exact=True) as fast, \
            serve_in_thread(delays=(SLOW_S,), exact=True) as slow:
        for name, endpoint in (("fake_fast", fast), ("fake_slow", slow)):
            (ws / "recipes" / f"{name}.yaml").write_text(yaml.safe_dump(recipe(name, endpoint)))
            proc = aifb(ws, "run", f"recipes/{name}.yaml")
            assert proc.returncode == 0, proc.stdout + proc.stderr
            ids.append(benchmark_id_from(proc.stdout))
    a, b = ids
    proc = aifb(ws, "compare", a, b)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"reports/compare_{a}_{b}.md" in proc.stdout
    assert "no repeats: noise not known" in proc.stdout
    c = read_json(ws / "reports" / f"compare_{a}_{b}.json")
    cells = {m["metric"]: m["cells"] for m in c["metrics"]}
    # p50 = the fake's delay plus the client's and loopback's share (well under 1 ms here)
    assert cells["p50"][0]["value"] == pytest.approx(FAST_S, abs=0.001)
    assert cells["p50"][1]["value"] == pytest.approx(SLOW_S, abs=0.001)
    assert 1.2 < cells["p50"][1]["rel_delta"] < 2.0  # 6 ms vs 2 ms: +200 % less the overhead
    assert -0.75 < cells["rps"][1]["rel_delta"] < -0.5  # one connection, closed loop: ~1/3
    assert cells["p50"][1]["noise"] == "no repeats: noise not known"
    diff = {d["key"]: d["values"] for d in c["recipe_diff"]}
    assert diff["name"] == ["fake_fast", "fake_slow"] and "service.endpoint" in diff
    assert c["environment_diff"] == []  # the same machine and checkout
    md = (ws / "reports" / f"compare_{a}_{b}.md").read_text()
    assert f"# Comparison: {a} vs {b}" in md and "`service.endpoint`" in md
    for png in ("latency_cdf.png", "throughput_over_time.png"):
        assert (ws / "reports" / f"compare_{a}_{b}_plots" / png).read_bytes()[:4] == b"\x89PNG"
