"""The load engine's logic (records, phases, modes, arrivals, timeouts) without a real server:
against the in-memory client (tests/fakes/memory_client.py) where any client that answers will
do, and against the fake Redis (tests/fakes/fake_redis.py) for exact reply delays and replies
that never come. The engine against a real redis-server: tests/integration/test_engine_redis.py."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aifb.clock import RunClock, now_ns, ns_to_s_text
from aifb.load.engine import run_load, run_load_sync
from aifb.errors import ServiceError
from aifb.records import encode_row, encode_rows, iter_records, read_records
from aifb.schemas import validation_errors
from fakes import fake_redis
from fakes.memory_client import NoServerClient
from support import GET_ONLY, check_records, engine_load as load, quiet, run_async

arun = run_async


async def fake_server(**kw):
    """A fake Redis on the running loop whose GETs answer after exactly delay_s (or never:
    hang=True): (server, endpoint)."""
    return await fake_redis.start(exact=True, **kw)


# --------------------------------------------------------------------------- closed loop
def test_requests_mode_stops_at_exactly_n(memory_kind, tmp_path):
    path = tmp_path / "r.jsonl"
    stats = run_load_sync(kind=memory_kind, endpoint="memory://", workload={},
                          load=load(concurrency=8, requests=777, warmup_s=0.2, cooldown_s=0.1),
                          seed=1, records_path=path, clock=RunClock(), log=quiet)
    recs = check_records(path, stats)
    measured = [r for r in recs if r["phase"] == "measure"]
    assert len(measured) == 777 and stats["measured"]["ok"] == 777
    assert stats["stopped_by"] == "requests"
    assert measured[-1]["t_end"] == pytest.approx(stats["measure_end"], abs=1e-9)
    assert any(r["phase"] == "cooldown" for r in recs) and any(r["phase"] == "warmup" for r in recs)


# --------------------------------------------------------------------------- open loop
def test_open_loop_achieves_rate_and_schedules_are_seeded(memory_kind, tmp_path):
    path = tmp_path / "o.jsonl"
    stats = run_load_sync(kind=memory_kind, endpoint="memory://", workload={},
                          load=load(clients=2, concurrency=4, rate=2000, arrival="constant",
                                    duration_s=1.0, warmup_s=0.2),
                          seed=5, records_path=path, clock=RunClock(), log=quiet)
    recs = check_records(path, stats)
    assert stats["mode"] == "open" and stats["offered_rate"] == 2000
    assert stats["achieved_rate"] == pytest.approx(2000, rel=0.02)
    # the requests planned inside the window: exactly the records whose t_sched falls in it
    in_window = [r for r in recs if stats["warmup_end"] <= r["t_sched"] <= stats["measure_end"]]
    assert stats["scheduled"] == len(in_window) and stats["scheduled"] == pytest.approx(2000, rel=0.01)
    assert stats["sched_lag_s"]["p50"] < 0.002
    assert all(r["t_sched"] is not None and r["t_start"] >= r["t_sched"] for r in recs)
    c0 = sorted(r["t_sched"] for r in recs if r["client"] == 0)
    gaps = [b - a for a, b in zip(c0, c0[1:])]
    assert min(gaps) == pytest.approx(0.001, abs=2e-9) and max(gaps) == pytest.approx(0.001, abs=2e-9)

    def poisson_schedule(seed):
        p = tmp_path / f"p{seed}.jsonl"
        st = run_load_sync(kind=memory_kind, endpoint="memory://", workload={},
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


@pytest.mark.parametrize("conc", [4, 1])
def test_closed_loop_sends_again_only_after_every_reply_of_a_poll_is_stamped(register_kind,
                                                                              tmp_path, conc):
    """Replies that one step of the event loop brings (one poll) are all stamped before any
    connection sends again: a send (a system call of several us) made between them would
    stamp the later replies' t_end late by its cost (issue 20). A single connection has no
    other reply to wait for: it sends again at once, in the reply's own callback."""
    events = []

    class BatchClient(NoServerClient):
        """Answers every in-flight request together, in one loop callback, like one poll."""

        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.pending: dict = {}

        def start(self, worker, done):
            events.append(("send", worker))
            if not self.pending:
                asyncio.get_running_loop().call_later(0.001, self.reply_all)
            self.pending[worker] = done

        def reply_all(self):
            pending, self.pending = self.pending, {}
            events.append(("poll", len(pending)))
            for worker, done in sorted(pending.items()):
                events.append(("reply", worker))
                done(("get", True, None, None, 0, 1, None, now_ns()))
            events.append(("poll end",))

        def abort(self, worker):
            return "get" if self.pending.pop(worker, None) else None

    kind = register_kind("batch_test", client=BatchClient)
    stats = run_load_sync(kind=kind, endpoint="batch://", workload={},
                          load=load(concurrency=conc, requests=200), seed=1,
                          records_path=tmp_path / "b.jsonl", clock=RunClock(), log=quiet)
    assert stats["measured"] == {"ok": 200, "errors": 0}
    polls = [(i, e[1]) for i, e in enumerate(events) if e[0] == "poll"]
    assert sum(n == conc for _, n in polls) >= 40
    for i, n in polls:
        assert [e[0] for e in events[i + 1:i + 1 + n]] == ["reply"] * n, events[i:i + 2 * n]
        if conc == 1 and i + 3 < len(events):
            assert events[i + 2:i + 4] == [("send", 0), ("poll end",)]   # in the reply's callback


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


def test_fast_encoding_matches_the_general_one():
    """encode_rows keeps the parts of common lines (per client and worker, per byte counts and
    phase) between calls: every line must still be encode_row's, whatever mix comes."""
    import random as _random

    rng = _random.Random(5)
    t0 = 10 ** 12
    rows, phases = [], []
    for i in range(3000):
        te = t0 + rng.randint(0, 10 ** 11)
        ok = rng.random() < 0.8
        res = (rng.choice(["get", "set", "q\"uote"]), ok, None if ok else "Timeout",
               None if ok else "late", rng.choice([0, 128, None, 7]), rng.choice([0, 128, 5, None]),
               rng.choice([None, None, te - 5]), te)
        ts = rng.choice([None, None, None, te - 99])
        rows.append((rng.randrange(3), rng.randrange(40), i, ts, te - rng.randint(0, 10 ** 7), res))
        phases.append(rng.choice(["warmup", "measure", "cooldown"]))
    want = "".join(encode_row(r, p, t0) for r, p in zip(rows, phases))
    got = "".join(encode_rows(rows[i:i + 97], phases[i:i + 97], t0) for i in range(0, 3000, 97))
    assert got == want
    assert encode_rows(rows, phases, t0 + 1) == "".join(encode_row(r, p, t0 + 1)
                                                        for r, p in zip(rows, phases))


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
def test_coroutine_clients_run_through_the_same_engine(register_kind, tmp_path):
    """A client written as `async def request()` (the CoroutineClient adapter), including a
    request that never returns: the engine cancels it at the timeout and records it."""
    from aifb.clock import now_ns

    class SleepyClient(NoServerClient):  # a CoroutineClient with nothing to open or close
        async def startup(self, connections):
            self.n = 0

        def _op_name(self, worker):
            return "nap"

        async def request(self, worker):
            self.n += 1
            await asyncio.sleep(3600 if self.n == 5 else 0.005)
            return ("nap", True, None, None, 1, 2, None, now_ns())

    stats = run_load_sync(kind=register_kind("sleepy_test", client=SleepyClient),
                          endpoint="none://", workload={},
                          load=load(concurrency=3, duration_s=0.4, timeout_s=0.1), seed=1,
                          records_path=tmp_path / "s.jsonl", clock=RunClock(), log=quiet)
    recs = check_records(tmp_path / "s.jsonl", stats)
    assert stats["errors_by_type"] == {"Timeout": 1}
    (t,) = [r for r in recs if not r["ok"]]
    assert t["op"] == "nap" and 0.1 <= t["t_end"] - t["t_start"] < 0.2
    assert 100 <= sum(r["ok"] for r in recs) <= 250


def test_a_client_plans_follow_ups_at_their_own_instants(register_kind, tmp_path):
    """The follow-up hook (aifb.clients.base, "Follow-ups"): open loop sets `follow_up`; a
    follow-up is sent at its planned instant, recorded with it as t_sched, and adopt() names
    its token just before its start(); closed loop leaves the hook None."""
    from aifb.clock import now_ns

    seen: dict = {}

    class ChainClient(NoServerClient):
        follow_up = None

        async def startup(self, connections):
            self.next_token: dict = {}

        def adopt(self, worker, token):
            self.next_token[worker] = token

        async def request(self, worker):
            token = self.next_token.pop(worker, None)
            step = 0 if token is None else token[1] + 1
            chain = f"{id(self)}-{now_ns()}" if token is None else token[0]
            await asyncio.sleep(0.003)
            t_end = now_ns()
            seen["hook"] = self.follow_up is not None
            if self.follow_up is not None and step < 2:
                self.follow_up(t_end + 40_000_000, (chain, step))   # 40 ms after this reply
            return ("link", True, None, None, 1, 1, None, t_end, {"chain": chain, "step": step})

    kind = register_kind("chain_test", client=ChainClient)
    path = tmp_path / "c.jsonl"
    run_load_sync(kind=kind, endpoint="none://", workload={},
                  load=load(clients=1, concurrency=4, rate=20, arrival="constant",
                            duration_s=1.0, warmup_s=0.0), seed=1, records_path=path,
                  clock=RunClock(), log=quiet)
    recs = list(read_records(path))
    assert seen["hook"] is True
    chains: dict = {}
    for r in recs:
        chains.setdefault(r["chain"], {})[r["step"]] = r
    starts = sorted(c[0]["t_sched"] for c in chains.values())
    assert 19 <= len(starts) <= 21                        # the arrivals start the chains
    full = [c for c in chains.values() if len(c) == 3]
    assert len(full) >= 15
    for c in full:
        for k in (1, 2):
            assert c[k]["t_sched"] == pytest.approx(c[k - 1]["t_end"] + 0.040, abs=1e-6)
            assert 0 <= c[k]["t_start"] - c[k]["t_sched"] < 0.02   # sent when due
    # closed loop: no hook
    run_load_sync(kind=kind, endpoint="none://", workload={},
                  load=load(concurrency=2, duration_s=0.2), seed=1,
                  records_path=tmp_path / "d.jsonl", clock=RunClock(), log=quiet)
    assert seen["hook"] is False


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
