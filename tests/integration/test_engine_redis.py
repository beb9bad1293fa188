"""The load engine against a real redis-server: a closed-loop run's records, phases and stats
with a real GET/SET mix, a server killed mid-run, workers reconnecting when it comes back, and
cancellation leaving a valid prefix and no connection behind. The engine's logic without a
server: tests/unit/load/test_engine.py."""

from __future__ import annotations

import asyncio
import time

import pytest

from aifb.clients.redis import encode_command
from aifb.clock import RunClock
from aifb.load.engine import run_load, run_load_sync
from aifb.records import read_records
from support import (GET_ONLY, MIXED, PHASE_ORDER, check_records, engine_load as load, quiet,
                     redis_process, run_async)

pytestmark = pytest.mark.redis

arun = run_async


# --------------------------------------------------------------------------- closed loop
def test_closed_loop_records_phases_and_stats(redis_server, tmp_path):
    path = tmp_path / "requests.jsonl"
    ready = []
    t = time.monotonic()
    stats = run_load_sync(kind="redis", endpoint=redis_server, workload=MIXED,
                          load=load(clients=2, concurrency=3, duration_s=0.8, warmup_s=0.3,
                                    cooldown_s=0.2),
                          seed=1, records_path=path, clock=RunClock(), log=quiet,
                          on_ready=ready.append)
    assert time.monotonic() - t < 3
    assert ready and ready[0]["client"]["protocol"] == "RESP2"
    assert stats["stopped_by"] == "duration" and stats["mode"] == "closed"
    assert stats["window_s"] == pytest.approx(0.8)
    assert stats["measure_end"] - stats["warmup_end"] == pytest.approx(0.8)
    assert stats["t_load_end"] >= stats["measure_end"] + 0.2
    assert stats["client"]["ops"] == {"get": 0.8, "set": 0.2}
    assert 0 < stats["client_cpu"]["util_of_one_core"] <= 1.5
    assert stats["loop_lag_s"]["n"] > 10 and stats["loop_lag_s"]["p50"] is not None
    recs = check_records(path, stats)
    assert stats["requests_issued"] == len(recs) and all(r["ok"] for r in recs)
    by_phase = {p: [r for r in recs if r["phase"] == p] for p in PHASE_ORDER}
    assert all(by_phase.values())
    assert max(r["t_end"] for r in by_phase["warmup"]) < stats["warmup_end"]
    assert all(stats["warmup_end"] <= r["t_end"] <= stats["measure_end"] for r in by_phase["measure"])
    assert min(r["t_end"] for r in by_phase["cooldown"]) > stats["measure_end"]
    assert stats["measured"]["ok"] == len(by_phase["measure"])
    for c in (0, 1):
        seqs = sorted(r["seq"] for r in recs if r["client"] == c)
        assert seqs == list(range(len(seqs)))
    assert {r["worker"] for r in recs} == {0, 1, 2}
    assert {r["op"] for r in recs} == {"get", "set"}
    assert all(r["t_sched"] is None and r["t_first"] is None for r in recs)
    assert all(r["bytes_in"] == 64 for r in recs if r["op"] == "get")   # preloaded: GETs hit
    assert all(r["bytes_out"] == 64 for r in recs if r["op"] == "set")


# --------------------------------------------------------------------------- faults, cancellation
def test_server_killed_mid_run_records_errors_and_stops(tmp_path):
    path = tmp_path / "k.jsonl"
    with redis_process() as (port, proc):
        async def go():
            task = asyncio.create_task(run_load(
                kind="redis", endpoint=f"redis://127.0.0.1:{port}", workload=GET_ONLY,
                load=load(concurrency=4, duration_s=10.0, timeout_s=1.0), seed=1,
                records_path=path, clock=RunClock(), log=quiet, unreachable_after_s=1.0))
            await asyncio.sleep(0.4)
            proc.kill()
            t = time.monotonic()
            stats = await task
            return stats, time.monotonic() - t

        stats, after_kill = arun(go())
    assert stats["stopped_by"] == "service_unreachable" and after_kill < 2.5
    recs = check_records(path, stats)
    assert recs[0]["ok"] and recs[0]["op"] == "get"
    # The requests cut off by the kill are request errors; the failed reconnect attempts that
    # follow are recorded (op "connect") but counted apart, never as requests (issue 12 item 8).
    assert stats["errors_by_type"].get("ConnectionError", 0) >= 1
    assert "ConnectionRefused" not in stats["errors_by_type"]
    ca = stats["connect_attempts"]
    assert ca["measure_errors_by_type"].get("ConnectionRefused", 0) >= 4
    connects = [r for r in recs if r["op"] == "connect"]
    assert sum(ca["by_phase"].values()) == len(connects)
    assert stats["measured"]["errors"] == sum(1 for r in recs if r["phase"] == "measure"
                                              and not r["ok"] and r["op"] != "connect")
    assert connects and all(not r["ok"] for r in connects)
    for w in range(4):  # backoff 10 ms doubling: a handful of attempts per worker, no spinning
        assert 2 <= sum(1 for r in connects if r["worker"] == w) <= 10


def test_workers_reconnect_when_the_server_comes_back(tmp_path):
    path = tmp_path / "re.jsonl"
    with redis_process() as (port, proc):
        async def go():
            task = asyncio.create_task(run_load(
                kind="redis", endpoint=f"redis://127.0.0.1:{port}", workload=GET_ONLY,
                load=load(concurrency=2, duration_s=1.6), seed=1, records_path=path,
                clock=RunClock(), log=quiet))
            await asyncio.sleep(0.3)
            proc.kill()
            proc.wait()
            await asyncio.sleep(0.3)
            with redis_process(port=port):
                return await task

        stats = arun(go())
    assert stats["stopped_by"] == "duration"
    recs = check_records(path, stats)
    first_err = next(i for i, r in enumerate(recs) if not r["ok"])
    assert any(r["ok"] for r in recs[first_err:])
    assert recs[-1]["ok"] and any(r["op"] == "connect" for r in recs)


def test_cancellation_keeps_a_valid_flushed_prefix(redis_server, tmp_path):
    path = tmp_path / "x.jsonl"
    out: dict = {}
    sizes = []

    async def go():
        task = asyncio.create_task(run_load(
            kind="redis", endpoint=redis_server, workload=GET_ONLY,
            load=load(concurrency=4, duration_s=30.0), seed=1, records_path=path,
            clock=RunClock(), log=quiet, stats_out=out))
        for _ in range(3):
            await asyncio.sleep(0.55)
            sizes.append(path.stat().st_size)    # flushed while running, at least every 0.5 s
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.1)
        from aifb.clients.redis import RedisClient
        probe = RedisClient(redis_server, GET_ONLY, 1)
        await probe.startup(1)
        (clients,) = await probe._conns[0].call(encode_command("CLIENT", "LIST"), 1)
        await probe.shutdown()
        return clients

    clients = arun(go())
    assert 0 < sizes[0] < sizes[1] < sizes[2]
    assert out["stopped_by"] == "cancelled"
    recs = read_records(path)
    assert recs.dropped_lines == 0 and len(recs) == out["records_written"] > 1000
    assert path.read_bytes().endswith(b"\n")
    assert clients.count(b"\n") == 1    # only the probe's own connection is left
