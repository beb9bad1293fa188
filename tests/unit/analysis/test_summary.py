"""summary.json: the numbers against numpy on synthetic runs with known latencies."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from aifb.analysis import summary as S
from aifb.errors import AifbError
from aifb.schemas import validation_errors

_spec = importlib.util.spec_from_file_location(
    "synthetic_run", Path(__file__).parents[2] / "data" / "synthetic_run.py")
synthetic = importlib.util.module_from_spec(_spec)
sys.modules["synthetic_run"] = synthetic
_spec.loader.exec_module(synthetic)

PCTS = {"p50": 50, "p90": 90, "p95": 95, "p99": 99, "p999": 99.9}


def assert_stats(block, x, *, p999=None):
    x = np.asarray(x, dtype=float)
    assert block["n"] == len(x)
    assert block["mean"] == pytest.approx(x.mean(), rel=1e-12)
    assert block["std"] == pytest.approx(x.std(ddof=1), rel=1e-9)
    assert block["min"] == x.min() and block["max"] == x.max()
    for key, q in PCTS.items():
        if key == "p999" and not (p999 if p999 is not None else len(x) >= 10_000):
            assert block[key] is None
            continue
        assert block[key] == pytest.approx(np.percentile(x, q, method="linear"), rel=1e-12,
                                           abs=1e-15), key


@pytest.fixture(scope="module")
def closed(tmp_path_factory):
    d = tmp_path_factory.mktemp("closed") / "BM-20260109-001"
    exp = synthetic.write_run(d)
    return d, exp, S.summarize(d)


def test_closed_loop_numbers_match_numpy(closed):
    _, exp, s = closed
    assert validation_errors(s, "summary.schema.yaml") == []
    assert s["benchmark_id"] == "BM-20260109-001" and s["status"] == "completed"
    assert s["window_s"] == exp.window_s and s["window_source"] == "load_stats"
    r = s["requests"]
    assert (r["total"], r["ok"], r["errors"]) == (1000, 980, 20)
    assert r["errors_by_type"] == {"ConnectionError": 8, "TimeoutError": 12}
    assert r["dropped_lines"] == 0
    assert s["phases"] == {"warmup": 100, "measure": 1000, "cooldown": 60}
    assert s["throughput"]["rps"] == pytest.approx(980 / exp.window_s)
    assert s["throughput"]["mib_s"] == pytest.approx(exp.ok_bytes / 2**20 / exp.window_s)
    lat = s["latency_s"]
    assert lat["definition"] == "t_end - t_start"
    assert "Hyndman-Fan 7" in lat["method"] and "pooled" in lat["method"]
    assert_stats(lat, exp.latencies, p999=False)
    assert lat["max"] < 0.05  # warmup (50 ms) and cooldown (80 ms) excluded
    assert "service_time_s" not in s and "sched_lag_s" not in s


def test_per_op(closed):
    _, exp, s = closed
    assert set(s["latency_by_op"]) == {"get", "set"}
    for op, x in exp.latencies_by_op.items():
        assert_stats(s["latency_by_op"][op], x)
        po = s["throughput"]["per_op"][op]
        assert po["ok"] == exp.ok_by_op[op]
        assert po["errors"] == exp.errors_by_op.get(op, 0)
        assert po["rps"] == pytest.approx(exp.ok_by_op[op] / exp.window_s)
    assert sum(p["ok"] + p["errors"] for p in s["throughput"]["per_op"].values()) == 1000


def test_slo_and_validity_and_definitions(closed):
    _, exp, s = closed
    rules = {r["rule"]: r for r in s["slo"]["rules"]}
    p95 = np.percentile(exp.latencies, 95, method="linear")
    assert rules["p95 < 5ms"]["value"] == pytest.approx(p95)
    assert rules["p95 < 5ms"]["passed"] is bool(p95 < 0.005)
    assert rules["error_rate < 5%"]["value"] == pytest.approx(0.02)
    assert rules["error_rate < 5%"]["passed"] is True
    assert s["slo"]["passed"] is (bool(p95 < 0.005))
    v = s["validity"]
    assert v["client_cpu_util"] == 0.35 and v["client_saturated"] is False
    assert v["loop_lag_p99_s"] == 0.0008 and v["rate_shortfall"] is None
    assert v["warnings"] == []
    d = s["metric_definitions"]
    assert {"window_s", "throughput.rps", "latency_s", "percentiles", "p999"} <= set(d)
    assert "t_end - t_start" in d["latency_s"]


def test_write_summary_round_trips(closed, tmp_path):
    d, _, s = closed
    out = tmp_path / "summary.json"
    S.write_summary(d, out)
    assert json.loads(out.read_text()) == json.loads(json.dumps(s))


def test_window_from_records_when_no_load_stats(tmp_path):
    exp = synthetic.write_run(tmp_path / "r", window_from_load_stats=False)
    s = S.summarize(tmp_path / "r")
    assert s["window_source"] == "records"
    assert s["window_s"] == pytest.approx(exp.measure_t_max - exp.measure_t_min)
    assert s["throughput"]["rps"] == pytest.approx(exp.ok / s["window_s"])
    assert s["validity"]["client_saturated"] is None
    assert any("no load_stats" in w for w in s["validity"]["warnings"])
    assert validation_errors(s, "summary.schema.yaml") == []


def test_p999_present_from_10000_samples(tmp_path):
    exp = synthetic.write_run(tmp_path / "big", per_client=5_010, n_errors=(5, 5),
                              warmup_per_client=5, cooldown_per_client=5)
    s = S.summarize(tmp_path / "big")
    assert s["latency_s"]["n"] == 10_010
    assert_stats(s["latency_s"], exp.latencies, p999=True)
    assert s["latency_s"]["p999"] is not None
    # the per-op blocks have fewer than 10,000 samples each
    assert all(b["p999"] is None for b in s["latency_by_op"].values())


def test_truncated_last_line_is_dropped_and_counted(tmp_path):
    exp = synthetic.write_run(tmp_path / "t", truncate=True)
    text = (tmp_path / "t" / "requests.jsonl").read_bytes()
    s = S.summarize(tmp_path / "t")
    assert s["requests"]["dropped_lines"] == 1
    assert s["requests"]["total"] == exp.total
    assert_stats(s["latency_s"], exp.latencies)
    assert any("truncated" in w for w in s["validity"]["warnings"])
    assert (tmp_path / "t" / "requests.jsonl").read_bytes() == text  # input untouched


def test_truncated_records_across_chunks(tmp_path):
    """Small chunks: every chunk boundary lands mid-file; results equal the one-chunk read."""
    synthetic.write_run(tmp_path / "c", truncate=True)
    path = tmp_path / "c" / "requests.jsonl"

    def q(lf):
        return [lf.select("seq", "client", "t_end")]

    (one,), d1, _ = S.scan_records(path, q)
    (many,), d2, _ = S.scan_records(path, q, chunk_bytes=1000)
    assert d1 == d2 == 1
    assert one.height == many.height == 1160
    assert one.sort("client", "seq").equals(many.sort("client", "seq"))


def test_last_line_without_newline_is_kept(tmp_path):
    synthetic.write_run(tmp_path / "n")
    path = tmp_path / "n" / "requests.jsonl"
    path.write_bytes(path.read_bytes().rstrip(b"\n"))
    s = S.summarize(tmp_path / "n")
    assert s["requests"]["dropped_lines"] == 0
    assert s["requests"]["total"] == 1000


def test_empty_file_gives_n_zero(tmp_path):
    synthetic.write_failed_run(tmp_path / "f")
    s = S.summarize(tmp_path / "f")
    assert validation_errors(s, "summary.schema.yaml") == []
    assert s["status"] == "failed" and "did not become ready" in s["reason"]
    assert s["requests"] == {"total": 0, "ok": 0, "errors": 0, "errors_by_type": {},
                             "dropped_lines": 0, "error_rate": None}
    lat = s["latency_s"]
    assert lat["n"] == 0 and all(lat[k] is None for k in S.STAT_KEYS[1:])
    assert s["latency_by_op"] == {} and s["throughput"]["rps"] == 0.0
    assert s["window_s"] is None
    assert s["slo"]["passed"] is False
    assert all(r["value"] is None and not r["passed"] for r in s["slo"]["rules"])
    assert any("failed" in w for w in s["validity"]["warnings"])


def test_missing_records_file_and_only_truncated_line(tmp_path):
    synthetic.write_failed_run(tmp_path / "m")
    (tmp_path / "m" / "requests.jsonl").unlink()
    s = S.summarize(tmp_path / "m")
    assert s["requests"]["total"] == 0
    assert any("requests.jsonl is missing" in w for w in s["validity"]["warnings"])
    (tmp_path / "m" / "requests.jsonl").write_text('{"client": 0, "seq"')
    s = S.summarize(tmp_path / "m")
    assert s["requests"]["total"] == 0 and s["requests"]["dropped_lines"] == 1


def test_open_loop_latency_includes_queueing(tmp_path):
    exp = synthetic.write_run(tmp_path / "o", open_loop=True,
                              load_stats_extra={"offered_rate": 200.0, "achieved_rate": 150.0})
    s = S.summarize(tmp_path / "o")
    assert validation_errors(s, "summary.schema.yaml") == []
    assert s["load"]["loop"] == "open"
    assert s["latency_s"]["definition"] == "t_end - t_sched (includes queueing)"
    assert_stats(s["latency_s"], exp.latencies)
    assert_stats(s["service_time_s"], exp.service_times)
    assert_stats(s["sched_lag_s"], exp.sched_lags)
    assert s["latency_s"]["p50"] > s["service_time_s"]["p50"]
    assert s["validity"]["rate_shortfall"] is True
    assert any("offered" in w for w in s["validity"]["warnings"])
    assert "sched_lag_s" in s["metric_definitions"]


@pytest.mark.parametrize("scheduled_rate,shortfall", [(150.0, False), (170.0, True)])
def test_the_rate_shortfall_holds_the_achieved_rate_against_the_scheduled_one(
        tmp_path, scheduled_rate, shortfall):
    """A trace that ends inside the window, or conversations whose later turns add requests,
    schedule another rate than the one asked for: the requests planned inside the window
    (load_stats.scheduled_rate) are what the achieved rate must keep up with."""
    synthetic.write_run(tmp_path / "o", open_loop=True,
                        load_stats_extra={"offered_rate": 200.0, "achieved_rate": 150.0,
                                          "scheduled": int(scheduled_rate),
                                          "scheduled_rate": scheduled_rate})
    v = S.summarize(tmp_path / "o")["validity"]
    assert v["offered_rate"] == 200.0 and v["scheduled_rate"] == scheduled_rate
    assert v["rate_shortfall"] is shortfall
    assert any("scheduled in the window" in w for w in v["warnings"]) is shortfall


def test_client_saturation_warning(tmp_path):
    synthetic.write_run(tmp_path / "s", load_stats_extra={
        "client_cpu": {"cpu_s": 9.7, "util_of_one_core": 0.97}})
    v = S.summarize(tmp_path / "s")["validity"]
    assert v["client_saturated"] is True
    assert ("The load generator used 97% of a CPU core: the client, not the service, may be "
            "the bottleneck; add client processes.") in v["warnings"]
    synthetic.write_run(tmp_path / "l", load_stats_extra={
        "loop_lag_s": {"p50": 0.001, "p99": 0.012, "max": 0.03}})
    v = S.summarize(tmp_path / "l")["validity"]
    assert v["client_saturated"] is True and any("lagged" in w for w in v["warnings"])


def test_error_without_type_counts_as_unknown(tmp_path):
    d = tmp_path / "u"
    synthetic.write_run(d, per_client=10, n_errors=(0, 0), warmup_per_client=0,
                        cooldown_per_client=0)
    path = d / "requests.jsonl"
    recs = [json.loads(x) for x in path.read_text().splitlines()]
    recs[0].update(ok=False, error=None)
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    s = S.summarize(d)
    assert s["requests"]["errors_by_type"] == {"unknown": 1}


def test_corrupt_line_in_the_middle_is_a_clear_error(tmp_path):
    d = tmp_path / "x"
    synthetic.write_run(d, per_client=10, warmup_per_client=0, cooldown_per_client=0,
                        n_errors=(0, 0))
    path = d / "requests.jsonl"
    lines = path.read_text().splitlines()
    lines[3] = lines[3][:20]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(AifbError, match="requests.jsonl"):
        S.summarize(d)


def test_quantiles_sorted_matches_numpy_on_small_n():
    for n in (1, 2, 3, 7, 100, 101):
        x = np.sort(np.random.default_rng(n).exponential(size=n))
        got = S.quantiles_sorted(x, [0.0, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0])
        want = np.percentile(x, [0, 50, 90, 95, 99, 99.9, 100], method="linear")
        assert np.allclose(got, want, rtol=1e-12, atol=0)


# ----------------------------------------------------------------------------- failed requests

def _write_timeout_run(d: Path, *, open_loop=False, slo=("p99 < 1s",), fail_at=30.0,
                       n=1000, fail_every=20):
    """n measure requests of 0.1 s + 0.0001 s x (i % 100) each; every `fail_every`-th one fails
    after `fail_at` s (a timeout). Open loop: each request is sent 0.2 s after its t_sched."""
    d.mkdir(parents=True)
    lines, all_lat, ok_lat = [], [], []
    for i in range(n):
        t_sched = 1.0 + 0.01 * i if open_loop else None
        t_start = (t_sched + 0.2) if open_loop else 1.0 + 0.01 * i
        failed = i % fail_every == 0
        elapsed = fail_at if failed else 0.1 + 0.0001 * (i % 100)
        t_end = t_start + elapsed
        lat = t_end - (t_sched if open_loop else t_start)
        all_lat.append(lat)
        if not failed:
            ok_lat.append(lat)
        lines.append(json.dumps({
            "client": 0, "worker": 0, "seq": i, "op": "get", "t_sched": t_sched,
            "t_start": t_start, "t_first": None, "t_end": t_end, "ok": not failed,
            "error": {"type": "TimeoutError", "message": "30 s"} if failed else None,
            "bytes_out": 1, "bytes_in": 1, "phase": "measure"}))
    (d / "requests.jsonl").write_text("\n".join(lines) + "\n")
    load = {"clients": 1, "concurrency": 64}
    if open_loop:
        load["rate"] = 100
    (d / "run.json").write_text(json.dumps({
        "benchmark_id": d.name, "status": "completed",
        "recipe": {"name": "t", "service": {"kind": "redis"}, "load": load, "slo": list(slo)},
        "load_stats": {"window_s": 10.0}}))
    return np.asarray(ok_lat), np.asarray(all_lat)


@pytest.mark.parametrize("open_loop", [False, True])
def test_a_latency_slo_does_not_pass_while_requests_time_out(tmp_path, open_loop):
    """Issue 12: 5 % of the requests time out at 30 s. The successful ones all finish within
    0.11 s (+0.2 s queueing in open loop), so `p99 < 1s` passed on them alone; over every
    request (a failed one at its elapsed time) p99 is 30 s and the rule fails."""
    d = tmp_path / "BM-20260109-001"
    ok_lat, all_lat = _write_timeout_run(d, open_loop=open_loop)
    s = S.summarize(d)
    assert validation_errors(s, "summary.schema.yaml") == []
    assert s["requests"]["errors"] == 50 and s["requests"]["total"] == 1000
    assert_stats(s["latency_s"], ok_lat, p999=False)
    assert_stats(s["latency_all_s"], all_lat, p999=False)
    assert s["latency_s"]["p99"] < 1.0 and s["latency_all_s"]["p99"] == pytest.approx(
        30.2 if open_loop else 30.0)
    assert "failed one at its elapsed time" in s["latency_all_s"]["definition"]
    rule = s["slo"]["rules"][0]
    assert rule["passed"] is False and rule["source"] == "latency_all_s"
    assert rule["value"] == pytest.approx(s["latency_all_s"]["p99"])
    assert s["slo"]["passed"] is False
    assert "latency_all_s" in s["metric_definitions"]
    assert "worse of" in s["metric_definitions"]["latency_all_s"]


def test_fast_failures_cannot_flatter_a_latency_slo(tmp_path):
    """Failures after 1 ms would pull the all-requests percentile down; the verdict keeps the
    worse figure (here the successful requests' own)."""
    d = tmp_path / "BM-20260109-002"
    ok_lat, all_lat = _write_timeout_run(d, slo=("p50 < 105ms",), fail_at=0.001, fail_every=2)
    s = S.summarize(d)
    assert s["latency_all_s"]["p50"] < 0.105 < s["latency_s"]["p50"]
    rule = s["slo"]["rules"][0]
    assert rule["source"] == "latency_s" and rule["passed"] is False
    assert rule["value"] == pytest.approx(np.percentile(ok_lat, 50))


def _cpu_part(cpu_s, util, ok, errors):
    """One worker process's load_stats, as the engine reports them (the fields merge reads)."""
    return ({"t_load_start": 1.0, "warmup_end": 2.0, "measure_end": 12.0, "t_load_end": 12.5,
             "records_written": ok + errors, "measured": {"ok": ok, "errors": errors},
             "stopped_by": "duration",
             "client_cpu": {"cpu_s": cpu_s, "util_of_one_core": util, "wall_s": 10.0},
             "loop_lag_s": {"p50": 0.0, "p99": 0.001, "max": 0.001}}, None)


def test_client_cpu_per_request_is_every_process_over_every_request(tmp_path):
    """Two worker processes: 6 s of CPU over the window for 3,000 requests completed in it,
    and 2 s for 500 (one failed; the busier in share of a core). 8 s / 3,500 requests: not
    the busiest's CPU over all requests (571 µs), nor its own ratio (4,000), nor the mean of
    the two ratios (3,000)."""
    from aifb.load.merge import merge_stats
    merged = merge_stats([_cpu_part(6.0, 0.6, 3000, 0), _cpu_part(2.0, 0.9, 499, 1)],
                         blocks=[(0, 1), (1, 2)], pids=[11, 12],
                         load={"clients": 2, "concurrency": 1}, lost=[])
    synthetic.write_run(tmp_path / "p", load_stats_extra={
        k: merged[k] for k in ("client_cpu", "measured", "process_stats")})
    v = S.summarize(tmp_path / "p")["validity"]
    assert v["client_cpu_s"] == 2.0                  # the busiest process (90 % of a core)
    assert v["client_cpu_s_all"] == 8.0
    assert v["client_cpu_us_per_request"] == pytest.approx(8.0 / 3500 * 1e6)
    assert v["client_cpu_us_per_token"] is None      # not an LLM run
    lost = merge_stats([_cpu_part(6.0, 0.6, 3000, 0), None], blocks=[(0, 1), (1, 2)],
                       pids=[11, 12], load={"clients": 2, "concurrency": 1},
                       lost=[{"process": 1}])
    synthetic.write_run(tmp_path / "l", load_stats_extra={
        k: lost[k] for k in ("client_cpu", "measured")})
    v = S.summarize(tmp_path / "l")["validity"]
    assert v["client_cpu_s_all"] is None and v["client_cpu_us_per_request"] is None


def test_client_cpu_per_request_of_one_process_and_unknown(tmp_path):
    synthetic.write_run(tmp_path / "one", load_stats_extra={
        "client_cpu": {"cpu_s": 1.5, "util_of_one_core": 0.15},
        "measured": {"ok": 980, "errors": 20}})
    s = S.summarize(tmp_path / "one")
    v = s["validity"]
    assert v["client_cpu_s_all"] == 1.5
    assert v["client_cpu_us_per_request"] == pytest.approx(1500.0)
    assert validation_errors(s, "summary.schema.yaml") == []
    assert "client_cpu_us_per_request" in " ".join(s["metric_definitions"])
    synthetic.write_run(tmp_path / "none", load_stats_extra={"client_cpu": None,
                                                              "measured": {"ok": 5, "errors": 0}})
    v = S.summarize(tmp_path / "none")["validity"]
    assert v["client_cpu_s_all"] is None and v["client_cpu_us_per_request"] is None
