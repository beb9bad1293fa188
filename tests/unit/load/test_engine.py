"""The load engine against a real redis-server (records, phases, modes, failures, cancellation)
and against FakeSlowRedis, a tiny RESP server in this file for what a real Redis cannot show:
exact reply delays and replies that never come."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aifb.clients.redis import encode_command, parse_reply
from aifb.clock import RunClock, ns_to_s_text
from aifb.load.engine import run_load, run_load_sync
from aifb.errors import ServiceError
from aifb.records import encode_row, encode_rows, iter_records, read_records
from aifb.schemas import validation_errors
from support import TimedReplies, run_async

pytestmark = pytest.mark.redis

GET_ONLY = {"ops": {"get": 1}, "keyspace": 1000, "value_size": 64}
MIXED = {"ops": {"get": 0.8, "set": 0.2}, "keyspace": 1000, "value_size": 64}
PHASE_ORDER = {"warmup": 0, "measure": 1, "cooldown": 2}
TIME_TEXT = re.compile(r'"t_(start|end)":\d+\.\d{9}[,}]')


def load(**kw):
    base = {"clients": 1, "concurrency": 1, "rate": None, "arrival": "poisson", "duration_s": None,
            "requests": None, "warmup_s": 0.0, "cooldown_s": 0.0, "timeout_s": 2.0}
    base.update(kw)
    return base


arun = run_async


def quiet(_msg):
    pass


def check_records(path: Path, stats: dict) -> list[dict]:
    recs = read_records(path)
    assert recs.dropped_lines == 0
    assert len(recs) == stats["records_written"]
    for r in recs[:100] + recs[-100:]:
        assert validation_errors(r, "request.schema.yaml") == []
    text = path.read_text()
    assert len(TIME_TEXT.findall(text)) == 2 * len(recs)
    prev_phase, prev_end = 0, 0.0
    for r in recs:
        assert r["t_start"] <= r["t_end"]
        assert PHASE_ORDER[r["phase"]] >= prev_phase   # written in completion order
        assert r["t_end"] >= prev_end
        prev_phase, prev_end = PHASE_ORDER[r["phase"]], r["t_end"]
        assert r["ok"] == (r["error"] is None)
    return recs


@contextlib.contextmanager
def redis_process(port: int | None = None):
    """A redis-server this test can kill (the shared fixture is killed only at teardown)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server not installed")
    if port is None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        yield port, proc
    finally:
        proc.kill()
        proc.wait(timeout=10)


class FakeSlowRedis(TimedReplies, asyncio.Protocol):
    """Fake for timing only: answers PING/AUTH/SELECT/SET at once and GET after `delay_s`
    (or never, with hang=True). Not a Redis: it keeps no data."""

    def __init__(self, delay_s: float = 0.0, hang: bool = False, value: bytes = b"v" * 10):
        self.delay_s, self.hang, self.value = delay_s, hang, value
        self.buf = b""

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.buf += data
        while True:
            r = parse_reply(self.buf)
            if r is None:
                return
            cmd, pos = r
            self.buf = self.buf[pos:]
            name = cmd[0].upper()
            if name == b"GET":
                if self.hang:
                    continue
                reply = b"$%d\r\n%b\r\n" % (len(self.value), self.value)
                if self.delay_s:
                    self._send_at(time.perf_counter() + self.delay_s, reply)
                else:
                    self._send(reply)
            else:
                self._send(b"+PONG\r\n" if name == b"PING" else b"+OK\r\n")



async def fake_server(**kw):
    server = await asyncio.get_running_loop().create_server(lambda: FakeSlowRedis(**kw),
                                                           "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"redis://127.0.0.1:{port}"


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


def test_requests_mode_stops_at_exactly_n(redis_server, tmp_path):
    path = tmp_path / "r.jsonl"
    stats = run_load_sync(kind="redis", endpoint=redis_server, workload=GET_ONLY,
                          load=load(concurrency=8, requests=777, warmup_s=0.2, cooldown_s=0.1),
                          seed=1, records_path=path, clock=RunClock(), log=quiet)
    recs = check_records(path, stats)
    measured = [r for r in recs if r["phase"] == "measure"]
    assert len(measured) == 777 and stats["measured"]["ok"] == 777
    assert stats["stopped_by"] == "requests"
    assert measured[-1]["t_end"] == pytest.approx(stats["measure_end"], abs=1e-9)
    assert any(r["phase"] == "cooldown" for r in recs) and any(r["phase"] == "warmup" for r in recs)


# --------------------------------------------------------------------------- open loop
def test_open_loop_achieves_rate_and_schedules_are_seeded(redis_server, tmp_path):
    path = tmp_path / "o.jsonl"
    stats = run_load_sync(kind="redis", endpoint=redis_server, workload=GET_ONLY,
                          load=load(clients=2, concurrency=4, rate=2000, arrival="constant",
                                    duration_s=1.0, warmup_s=0.2),
                          seed=5, records_path=path, clock=RunClock(), log=quiet)
    recs = check_records(path, stats)
    assert stats["mode"] == "open" and stats["offered_rate"] == 2000
    assert stats["achieved_rate"] == pytest.approx(2000, rel=0.02)
    assert stats["sched_lag_s"]["p50"] < 0.002
    assert all(r["t_sched"] is not None and r["t_start"] >= r["t_sched"] for r in recs)
    c0 = sorted(r["t_sched"] for r in recs if r["client"] == 0)
    gaps = [b - a for a, b in zip(c0, c0[1:])]
    assert min(gaps) == pytest.approx(0.001, abs=2e-9) and max(gaps) == pytest.approx(0.001, abs=2e-9)

    def poisson_schedule(seed):
        p = tmp_path / f"p{seed}.jsonl"
        st = run_load_sync(kind="redis", endpoint=redis_server, workload=GET_ONLY,
                           load=load(clients=2, concurrency=2, rate=1000, duration_s=0.3),
                           seed=seed, records_path=p, clock=RunClock(), log=quiet)
        rs = sorted(read_records(p), key=lambda r: (r["client"], r["seq"]))
        return [(r["client"], round(r["t_sched"] - st["t_load_start"], 6)) for r in rs][:100]

    a, b, c = poisson_schedule(7), poisson_schedule(7), poisson_schedule(8)
    assert a == b and a != c


def test_open_loop_has_no_coordinated_omission(tmp_path):
    """Service capacity 100/s (10 ms per reply, one in flight) under 200/s offered: arrivals
    keep their planned t_sched while they wait for the in-flight cap."""
    async def go():
        server, endpoint = await fake_server(delay_s=0.010)
        async with server:
            return await run_load(kind="redis", endpoint=endpoint, workload=GET_ONLY,
                                  load=load(concurrency=1, rate=200, arrival="constant",
                                            duration_s=0.5),
                                  seed=1, records_path=tmp_path / "c.jsonl", clock=RunClock(),
                                  log=quiet)

    stats = arun(go())
    recs = check_records(tmp_path / "c.jsonl", stats)
    scheds = [r["t_sched"] for r in recs]
    assert all(b - a == pytest.approx(0.005, abs=2e-9) for a, b in zip(scheds, scheds[1:]))
    service = [r["t_end"] - r["t_start"] for r in recs]
    latency = [r["t_end"] - r["t_sched"] for r in recs]
    assert min(service) >= 0.010 and sorted(service)[len(service) // 2] < 0.014
    assert latency[-1] > 0.2 > latency[0]     # queueing delay grows and is counted
    assert stats["sched_lag_s"]["max"] > 0.2


# --------------------------------------------------------------------------- timing, faults
def test_exact_delays_are_measured(tmp_path):
    async def go():
        server, endpoint = await fake_server(delay_s=0.020)
        async with server:
            return await run_load(kind="redis", endpoint=endpoint, workload=GET_ONLY,
                                  load=load(concurrency=2, duration_s=0.5), seed=1,
                                  records_path=tmp_path / "d.jsonl", clock=RunClock(), log=quiet)

    stats = arun(go())
    recs = check_records(tmp_path / "d.jsonl", stats)
    lat = sorted(r["t_end"] - r["t_start"] for r in recs)
    assert lat[0] >= 0.020 and lat[len(lat) // 2] < 0.024
    assert 30 <= len(recs) <= 52 and all(r["bytes_in"] == 10 for r in recs)


def test_timeout_is_recorded_as_error(tmp_path):
    async def go():
        server, endpoint = await fake_server(hang=True)
        async with server:
            t = time.monotonic()
            stats = await run_load(kind="redis", endpoint=endpoint, workload=GET_ONLY,
                                   load=load(concurrency=2, duration_s=0.7, timeout_s=0.2),
                                   seed=1, records_path=tmp_path / "t.jsonl", clock=RunClock(),
                                   log=quiet)
            return stats, time.monotonic() - t

    stats, elapsed = arun(go())
    assert elapsed < 1.5 and stats["stopped_by"] == "duration"
    recs = check_records(tmp_path / "t.jsonl", stats)
    timeouts = [r for r in recs if r["error"] and r["error"]["type"] == "Timeout"]
    assert len(timeouts) >= 4 and all(r["op"] == "get" for r in timeouts)
    assert all(0.2 <= r["t_end"] - r["t_start"] < 0.3 for r in timeouts)
    assert stats["errors_by_type"]["Timeout"] == len(timeouts)
    assert all(not r["ok"] for r in recs)


def test_unreachable_endpoint_fails_before_any_record(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = tmp_path / "u.jsonl"
    with pytest.raises(ServiceError, match=f"cannot reach redis at 127.0.0.1:{port}: connection refused"):
        run_load_sync(kind="redis", endpoint=f"redis://127.0.0.1:{port}", workload=GET_ONLY,
                      load=load(clients=2, concurrency=2, duration_s=1.0), seed=1,
                      records_path=path, clock=RunClock(), log=quiet)
    assert not path.exists()


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
            with redis_process(port):
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


# --------------------------------------------------------------------------- records
@settings(max_examples=300, deadline=None)
@given(st.integers(0, 10**14), st.integers(0, 10**12), st.integers(0, 10**9),
       st.one_of(st.none(), st.integers(0, 10**12)), st.booleans())
def test_encoded_times_are_exact(t0, d_start, d_lat, d_sched, ok):
    res = ("get", ok, None if ok else "Timeout", None if ok else 'x "quoted"\n', 0, 5, None,
           t0 + d_start + d_lat)
    row = (0, 1, 2, None if d_sched is None else t0 + d_sched, t0 + d_start, res)
    line = encode_rows([row], ["measure"], t0)
    assert line == encode_row(row, "measure", t0)
    import json
    rec = json.loads(line)
    assert f'"t_start":{ns_to_s_text(d_start)},' in line
    assert f'"t_end":{ns_to_s_text(d_start + d_lat)},' in line
    assert rec["ok"] is ok and (rec["error"] is None) == ok
    assert validation_errors(rec, "request.schema.yaml") == []


def test_readers_drop_a_truncated_last_line_only(tmp_path):
    good = '{"client":0,"seq":0}\n{"client":0,"seq":1}\n'
    p = tmp_path / "a.jsonl"
    p.write_text(good + '{"client":0,"se')
    recs = read_records(p)
    assert [r["seq"] for r in recs] == [0, 1] and recs.dropped_lines == 1
    report = {}
    assert len(list(iter_records(p, report))) == 2 and report["dropped_lines"] == 1
    p.write_text(good)
    assert read_records(p).dropped_lines == 0
    p.write_text('{"client":0}\n{"cli\n{"client":1}\n')
    with pytest.raises(ValueError, match=":2: not a JSON record"):
        read_records(p)


# --------------------------------------------------------------------------- other clients
def test_coroutine_clients_run_through_the_same_engine(tmp_path):
    """A client written as `async def request()` (the CoroutineClient adapter), including a
    request that never returns: the engine cancels it at the timeout and records it."""
    from aifb import clients
    from aifb.clients.base import CoroutineClient
    from aifb.clock import now_ns

    class SleepyClient(CoroutineClient):
        async def startup(self, connections):
            self.n = 0

        async def validate(self):
            pass

        async def prepare(self):
            pass

        async def shutdown(self):
            pass

        def describe(self):
            return {"protocol": "none"}

        def _op_name(self, worker):
            return "nap"

        async def request(self, worker):
            self.n += 1
            await asyncio.sleep(3600 if self.n == 5 else 0.005)
            return ("nap", True, None, None, 1, 2, None, now_ns())

    clients.register("sleepy_test")(SleepyClient)
    try:
        stats = run_load_sync(kind="sleepy_test", endpoint="none://", workload={},
                              load=load(concurrency=3, duration_s=0.4, timeout_s=0.1), seed=1,
                              records_path=tmp_path / "s.jsonl", clock=RunClock(), log=quiet)
    finally:
        del clients._REGISTRY["sleepy_test"]
    recs = check_records(tmp_path / "s.jsonl", stats)
    assert stats["errors_by_type"] == {"Timeout": 1}
    (t,) = [r for r in recs if not r["ok"]]
    assert t["op"] == "nap" and 0.1 <= t["t_end"] - t["t_start"] < 0.2
    assert 100 <= sum(r["ok"] for r in recs) <= 250


def test_service_specific_fields_are_written_into_the_record():
    """A result's optional 9th element (LLM tokens, recall, ...) lands in the record; chunk times
    are clock ns converted to seconds since t0 like every other time."""
    import json as _json

    from aifb.records import encode_rows

    res = ("chat", True, None, None, 10, 20, 1_600_000_000, 1_900_000_000,
           {"output_tokens": 5, "token_source": "server", "chunk_times": [1_600_000_000, 1_700_000_001]})
    rec = _json.loads(encode_rows([(0, 1, 2, None, 1_500_000_000, res)], ["measure"], 1_000_000_000))
    assert rec["output_tokens"] == 5 and rec["token_source"] == "server"
    assert rec["chunk_times"] == [0.6, 0.700000001] and rec["t_first"] == 0.6
