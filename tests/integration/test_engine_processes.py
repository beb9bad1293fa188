"""The load engine over several worker processes (`load.processes`), against a real redis-server:
one records file for all processes, complete per-client sequences, the same phase instants in
every process, counts that match the server's own, and no worker left behind on cancellation,
SIGTERM or SIGKILL of the parent."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections import defaultdict
from pathlib import Path

import pytest
import uvloop

from aifb.clients.redis import encode_command, parse_reply
from aifb.clock import RunClock
from aifb.load.engine import run_load, run_load_sync
from aifb.load.merge import merge_stats
from aifb.errors import ServiceError
from aifb.records import read_records
from aifb.schemas import validation_errors

from support import pid_alive, redis_process

pytestmark = pytest.mark.redis

GET_ONLY = {"ops": {"get": 1}, "keyspace": 1000, "value_size": 64, "preload": False}
MIXED = {"ops": {"get": 0.8, "set": 0.2}, "keyspace": 1000, "value_size": 64}


def load(**kw):
    base = {"clients": 4, "concurrency": 2, "rate": None, "arrival": "poisson", "duration_s": None,
            "requests": None, "warmup_s": 0.0, "cooldown_s": 0.0, "timeout_s": 2.0,
            "processes": 2}
    base.update(kw)
    return base


def quiet(_msg):
    pass


def redis_cmd(endpoint: str, *args):
    host, port = endpoint.removeprefix("redis://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(encode_command(*args))
        buf = b""
        while True:
            buf += s.recv(65536)
            r = parse_reply(buf)
            if r is not None:
                return r[0]


def info_field(endpoint: str, section: str, key: str) -> str | None:
    text = redis_cmd(endpoint, "INFO", section)
    text = text.decode() if isinstance(text, bytes) else text
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return line.split(":", 1)[1].strip()
    return None


def get_calls(endpoint: str) -> int:
    v = info_field(endpoint, "commandstats", "cmdstat_get")
    return 0 if v is None else int(dict(kv.split("=") for kv in v.split(","))["calls"])


def check_phases(recs, stats):
    """Every record's phase follows from its t_end and the run's common instants."""
    wu, me = stats["warmup_end"], stats["measure_end"]
    for r in recs:
        te = r["t_end"]
        want = "warmup" if te < wu else ("measure" if te <= me else "cooldown")
        assert r["phase"] == want, (r, wu, me)


def check_file(path: Path, stats: dict, in_flight: int = 0) -> list[dict]:
    """`in_flight`: requests per client that may have no record because the run was cancelled
    while they were in flight (the engine records completed requests only)."""
    raw = path.read_bytes()
    assert raw.endswith(b"\n")
    for line in raw.splitlines():
        json.loads(line)                  # every line whole and valid: no interleaving
    recs = read_records(path)
    assert recs.dropped_lines == 0 and len(recs) == stats["records_written"]
    for r in recs[:50] + recs[-50:]:
        assert validation_errors(r, "request.schema.yaml") == []
    seqs = defaultdict(list)
    for r in recs:
        seqs[r["client"]].append(r["seq"])
    for c, s in seqs.items():
        assert len(set(s)) == len(s), f"client {c}: a sequence number repeats"
        missing = set(range(max(s) + 1)) - set(s)
        assert len(missing) <= in_flight, f"client {c}: sequence has gaps {sorted(missing)[:10]}"
    return recs


def no_workers_left(stats: dict) -> None:
    pids = [p["pid"] for p in stats["process_stats"]]
    assert pids and all(not pid_alive(p) for p in pids), pids


# --------------------------------------------------------------------------- closed loop
def test_two_processes_write_one_file_with_common_phases(redis_server, tmp_path):
    path = tmp_path / "requests.jsonl"
    redis_cmd(redis_server, "CONFIG", "RESETSTAT")
    ready = []
    stats = run_load_sync(kind="redis", endpoint=redis_server, workload=GET_ONLY,
                          load=load(clients=4, concurrency=3, duration_s=1.0, warmup_s=0.3,
                                    cooldown_s=0.2),
                          seed=1, records_path=path, clock=RunClock(), log=quiet,
                          on_ready=ready.append)
    assert ready and ready[0]["client"]["protocol"] == "RESP2"
    assert stats["processes"] == 2 and stats["connections"] == 12 and stats["clients"] == 4
    assert stats["stopped_by"] == "duration" and stats["window_s"] == pytest.approx(1.0)
    per = stats["process_stats"]
    assert [p["clients"] for p in per] == [[0, 2], [2, 4]]
    assert len({p["pid"] for p in per}) == 2 and os.getpid() not in {p["pid"] for p in per}
    assert all(p["client_cpu"]["util_of_one_core"] > 0 for p in per)
    worst = max(per, key=lambda p: p["client_cpu"]["util_of_one_core"])
    assert stats["client_cpu"]["process"] == worst["process"]
    assert stats["client_cpu"]["util_of_one_core"] == worst["client_cpu"]["util_of_one_core"]
    assert stats["loop_lag_s"]["p99"] == max(p["loop_lag_s"]["p99"] for p in per)
    recs = check_file(path, stats)
    check_phases(recs, stats)
    assert {r["client"] for r in recs} == {0, 1, 2, 3}
    by_phase = defaultdict(int)
    for r in recs:
        by_phase[r["phase"]] += 1
    assert dict(by_phase) == {k: v for k, v in stats["records_by_phase"].items() if v}
    assert all(by_phase[p] for p in ("warmup", "measure", "cooldown"))
    assert stats["measured"]["ok"] == by_phase["measure"] and all(r["ok"] for r in recs)
    # Every GET the server processed is one record, and the other way round.
    assert get_calls(redis_server) == len(recs) == stats["requests_issued"]
    no_workers_left(stats)


def test_requests_mode_shares_n_over_processes(redis_server, tmp_path):
    """requests: N is one count for all processes (issue 12 item 1): every process keeps its
    load on until they have completed N together; the window ends then for all, and every
    record's phase follows from that one end."""
    path = tmp_path / "r.jsonl"
    stats = run_load_sync(kind="redis", endpoint=redis_server, workload=MIXED,
                          load=load(clients=3, concurrency=2, requests=1001, warmup_s=0.2,
                                    cooldown_s=0.1),
                          seed=1, records_path=path, clock=RunClock(), log=quiet)
    recs = check_file(path, stats)
    measured = sum(r["phase"] == "measure" for r in recs)
    assert measured == stats["measured"]["ok"] >= 1001
    assert stats["stopped_by"] == "requests"
    assert all(p["stopped_by"] == "requests" for p in stats["process_stats"])
    assert stats["shared_requests"]["target"] == 1001
    assert stats["shared_requests"]["counted"] >= 1001
    check_phases(recs, stats)


def test_requests_mode_keeps_every_process_loaded_to_the_end(tmp_path):
    """Known answer (issue 12 item 1): a FAKE Redis whose two connections answer GET after 2 ms
    and 8 ms. The service's true rate is the sum of the two connections' own rates (each
    measured from its own records); with N split per process the slow one ran alone at the end
    and the window reported ~0.5 of it."""
    from fakes.fake_redis import serve_in_thread

    path = tmp_path / "r.jsonl"
    with serve_in_thread(delays=(0.002, 0.008)) as endpoint:
        stats = run_load_sync(kind="redis", endpoint=endpoint, workload=GET_ONLY,
                              load=load(clients=2, concurrency=1, requests=600, warmup_s=0.2),
                              seed=1, records_path=path, clock=RunClock(), log=quiet)
    recs = check_file(path, stats)
    check_phases(recs, stats)
    wu, me = stats["warmup_end"], stats["measure_end"]
    rates = []
    for c in (0, 1):
        mine = [r for r in recs if r["client"] == c and wu <= r["t_start"] and r["t_end"] <= me]
        busy = max(r["t_end"] for r in mine) - min(r["t_start"] for r in mine)
        rates.append((len(mine) - 1) / busy)
    truth = sum(rates)
    reported = stats["measured"]["ok"] / stats["window_s"]
    assert max(rates) / min(rates) > 1.8           # the connections really differ (4x nominal)
    assert reported == pytest.approx(truth, rel=0.1), (reported, rates)



def test_a_progress_file_of_two_processes_has_their_pooled_p99_twice_a_second(tmp_path):
    """The live line's figures over `load.processes: 2` (a FAKE Redis whose two connections
    answer GET after 2 ms and 8 ms): written while the load runs, more often than the 5 s
    progress interval, with a p99 pooled over both workers' measured requests."""
    import threading

    from aifb.load.live import LiveLoad
    from aifb.progress import ProgressFile, read_progress
    from aifb.stats import quantiles_sorted
    from fakes.fake_redis import serve_in_thread

    path = tmp_path / "r.jsonl"
    pf = ProgressFile(tmp_path / "progress" / "BM-1.json", "BM-1")
    seen, stop = [], threading.Event()

    def watch():
        while not stop.wait(0.05):
            state = read_progress(pf.path)
            if state and state["phase"] == "measuring":
                seen.append(state)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with serve_in_thread(delays=(0.002, 0.008)) as endpoint:
            stats = run_load_sync(kind="redis", endpoint=endpoint, workload=GET_ONLY,
                                  load=load(clients=2, concurrency=1, duration_s=2.0,
                                            warmup_s=0.2), seed=1, records_path=path,
                                  clock=RunClock(), log=quiet, live=LiveLoad(pf))
    finally:
        stop.set()
        watcher.join()
    assert len({s["updated"] for s in seen}) >= 3          # live while measuring, ~2 per second
    assert all(s["p99_s"] is not None for s in seen[1:])
    final = read_progress(pf.path)
    every = read_records(path)
    assert final["requests"] == len(every) == stats["records_written"]  # the final counts
    recs = [r for r in every if r["phase"] == "measure" and r["ok"]]
    assert {r["client"] for r in recs} == {0, 1}
    exact = quantiles_sorted(sorted(r["t_end"] - r["t_start"] for r in recs), [0.99])[0]
    assert final["p99_s"] == pytest.approx(exact, rel=0.1), (final["p99_s"], exact)
    assert final["p99_s"] > 0.008                           # the slow worker's requests count

# --------------------------------------------------------------------------- open loop
def test_open_loop_over_processes_keeps_the_one_process_schedule(redis_server, tmp_path):
    def schedule(processes):
        p = tmp_path / f"o{processes}.jsonl"
        st = run_load_sync(kind="redis", endpoint=redis_server, workload=GET_ONLY,
                           load=load(clients=4, concurrency=4, rate=4000, duration_s=0.6,
                                     warmup_s=0.2, processes=processes),
                           seed=9, records_path=p, clock=RunClock(), log=quiet)
        recs = check_file(p, st)
        check_phases(recs, st)
        rel = sorted((r["client"], r["seq"], r["t_sched"] - st["t_load_start"]) for r in recs)
        return st, rel

    st1, one = schedule(1)
    st2, two = schedule(2)
    assert st2["processes"] == 2 and st2["mode"] == "open"
    assert st2["achieved_rate"] == pytest.approx(4000, rel=0.1)
    assert st2["sched_lag_s"]["n"] == st2["measured"]["ok"] + st2["measured"]["errors"]
    # the same arrivals per client (global client index seeds them), whatever the split
    head = lambda rows: [r for r in rows if r[1] < 200]  # noqa: E731
    a, b = head(one), head(two)
    assert [r[:2] for r in a] == [r[:2] for r in b] and len(a) > 400
    assert all(abs(x[2] - y[2]) < 2e-9 for x, y in zip(a, b))


# --------------------------------------------------------------------------- failures
def test_unreachable_endpoint_fails_before_any_record_and_leaves_no_worker(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = tmp_path / "u.jsonl"
    before = set(_children())
    with pytest.raises(ServiceError, match=f"cannot reach redis at 127.0.0.1:{port}"):
        run_load_sync(kind="redis", endpoint=f"redis://127.0.0.1:{port}", workload=GET_ONLY,
                      load=load(duration_s=1.0), seed=1, records_path=path, clock=RunClock(),
                      log=quiet)
    assert not path.exists()
    assert set(_children()) - before == set()


def _children() -> list[int]:
    me = os.getpid()
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if int((p / "stat").read_text().split(")")[-1].split()[1]) == me:
                    out.append(int(p.name))
            except (OSError, IndexError, ValueError):
                pass
    return [p for p in out if pid_alive(p)]


def test_cancellation_stops_every_worker_and_keeps_their_records(redis_server, tmp_path):
    path = tmp_path / "x.jsonl"
    out: dict = {}

    async def go():
        task = asyncio.create_task(run_load(
            kind="redis", endpoint=redis_server, workload=GET_ONLY,
            load=load(concurrency=4, duration_s=30.0), seed=1, records_path=path,
            clock=RunClock(), log=quiet, stats_out=out))
        await asyncio.sleep(1.5)
        size = path.stat().st_size
        t = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return size, time.monotonic() - t

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as r:
        size, took = r.run(go())
    assert size > 0 and took < 5
    assert out["stopped_by"] == "cancelled" and out["processes"] == 2
    recs = check_file(path, out, in_flight=4)  # concurrency 4: at most 4 cut off per client
    assert len(recs) > 1000
    no_workers_left(out)
    time.sleep(0.2)
    assert int(info_field(redis_server, "clients", "connected_clients")) == 1   # this INFO only


SIGNAL_SCRIPT = textwrap.dedent("""
    import asyncio, json, signal, sys
    import uvloop
    from aifb.clock import RunClock
    from aifb.load.engine import run_load

    out = {}
    async def main():
        task = asyncio.current_task()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        await run_load(kind="redis", endpoint=sys.argv[1],
                       workload={"ops": {"get": 1}, "keyspace": 100, "preload": False},
                       load={"clients": 4, "concurrency": 2, "duration_s": 60.0, "warmup_s": 0,
                             "timeout_s": 2.0, "processes": 2},
                       seed=1, records_path=sys.argv[2], clock=RunClock(), stats_out=out,
                       log=lambda m: print(m, file=sys.stderr, flush=True),
                       on_ready=lambda info: print("READY", flush=True))
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as r:
            r.run(main())
    except asyncio.CancelledError:
        pass
    open(sys.argv[3], "w").write(json.dumps(out))
""")


def _worker_pids_of(pid: int) -> list[int]:
    kids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if int((p / "stat").read_text().split(")")[-1].split()[1]) == pid:
                    kids.append(int(p.name))
            except (OSError, IndexError, ValueError):
                pass
    return kids


def _start_signal_script(redis_server, tmp_path):
    script = tmp_path / "drive.py"
    script.write_text(SIGNAL_SCRIPT)
    path, out = tmp_path / "s.jsonl", tmp_path / "stats.json"
    proc = subprocess.Popen([sys.executable, str(script), redis_server, str(path), str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "READY", proc.stderr.read()
    time.sleep(0.8)
    workers = _worker_pids_of(proc.pid)
    assert len(workers) == 2
    return proc, workers, path, out


def test_sigterm_stops_all_worker_processes(redis_server, tmp_path):
    proc, workers, path, out = _start_signal_script(redis_server, tmp_path)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0, proc.stderr.read()
    assert not any(pid_alive(w) for w in workers)
    stats = json.loads(out.read_text())
    assert stats["stopped_by"] == "cancelled"
    assert sorted(p["pid"] for p in stats["process_stats"]) == sorted(workers)
    assert len(check_file(path, stats, in_flight=2)) > 100  # concurrency 2, cut off by SIGTERM


def test_sigkill_of_the_parent_takes_the_workers_down(redis_server, tmp_path):
    proc, workers, path, _ = _start_signal_script(redis_server, tmp_path)
    proc.kill()
    proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    while any(pid_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(pid_alive(w) for w in workers)
    recs = read_records(path)              # each worker wrote whole lines up to its end
    assert len(recs) > 100 and recs.dropped_lines == 0


# --------------------------------------------------------------------------- merge
def test_merge_pools_sched_lags_and_reports_the_busiest_process():
    import array

    def part(util, lag_p99, lags):
        return ({"t_load_start": 1.0, "warmup_end": 2.0, "measure_end": 3.0, "t_load_end": 3.5,
                 "connections": 2, "requests_issued": 10, "records_written": 10,
                 "records_by_phase": {"warmup": 2, "measure": 7, "cooldown": 1},
                 "measured": {"ok": 6, "errors": 1}, "errors_by_type": {"Timeout": 1},
                 "stopped_by": "duration",
                 "client_cpu": {"cpu_s": util, "util_of_one_core": util},
                 "loop_lag_s": {"n": 100, "p50": 0.0, "p99": lag_p99, "max": lag_p99}},
                {"sched_lags": array.array("q", lags).tobytes()})

    ld = {"clients": 4, "concurrency": 1, "rate": 100.0, "arrival": "constant"}
    m = merge_stats([part(0.3, 0.004, [1000] * 99 + [5_000_000]),
                     part(0.8, 0.001, [2000] * 100)],
                    blocks=[(0, 2), (2, 4)], pids=[11, 12], load=ld, lost=[])
    assert m["client_cpu"]["process"] == 1 and m["client_cpu"]["util_of_one_core"] == 0.8
    assert m["client_cpu"]["util_all_processes"] == pytest.approx(1.1)
    assert m["loop_lag_s"]["process"] == 0 and m["loop_lag_s"]["p99"] == 0.004
    assert m["measured"] == {"ok": 12, "errors": 2} and m["errors_by_type"] == {"Timeout": 2}
    assert m["achieved_rate"] == 14.0 and m["window_s"] == 1.0
    # pooled: 200 samples, p99 is the 198th smallest (2 µs), not a mean of per-process p99s
    assert m["sched_lag_s"]["n"] == 200 and m["sched_lag_s"]["p99"] == 2e-06
    assert m["sched_lag_s"]["max"] == 0.005


# --------------------------------------------------------------------------- scale
@pytest.mark.slow
def test_ten_thousand_connections(tmp_path):
    """10,000 concurrent connections from one node (2 processes x 5,000), against a redis-server
    started with maxclients 10100; the engine raises its own open-files limit when needed."""
    with redis_process("--maxclients", "10100", workdir=tmp_path) as (port, _):
        endpoint = f"redis://127.0.0.1:{port}"
        maxclients = redis_cmd(endpoint, "CONFIG", "GET", "maxclients")[1]
        if int(maxclients) < 10001:
            pytest.skip(f"redis-server could only get maxclients {maxclients} (its ulimit -n)")
        before = int(info_field(endpoint, "stats", "total_connections_received"))
        path = tmp_path / "10k.jsonl"
        stats = run_load_sync(kind="redis", endpoint=endpoint, workload=GET_ONLY,
                              load=load(clients=10, concurrency=1000, duration_s=1.0,
                                        warmup_s=0.5, timeout_s=10.0),
                              seed=1, records_path=path, clock=RunClock(), log=quiet)
        after = int(info_field(endpoint, "stats", "total_connections_received"))
    assert stats["connections"] == 10_000 and stats["errors_by_type"] == {}
    assert after - before >= 10_000
    recs = check_file(path, stats)
    assert len({(r["client"], r["worker"]) for r in recs}) == 10_000   # every connection worked
    no_workers_left(stats)


def test_channel_carries_large_messages_over_a_non_blocking_socket():
    """A worker's final report (raw samples) can be megabytes: the frames are reassembled as
    bytes arrive, and a send on the non-blocking socket (as libuv leaves it) still completes."""
    import threading

    from aifb.load.processes import Channel as _Channel

    a, b = socket.socketpair()
    tx_fd = b.detach()
    os.set_blocking(tx_fd, False)
    big = bytes(range(256)) * 20_000          # 5 MB

    async def go():
        q: asyncio.Queue = asyncio.Queue()
        rx = _Channel(a.detach(), asyncio.get_running_loop(), q, tag=7)

        def send():
            tx = object.__new__(_Channel)
            tx.fd = tx_fd
            assert tx.send("small", 1)
            assert tx.send("done", big, list(range(50_000)))
            os.close(tx_fd)

        t = threading.Thread(target=send)
        t.start()
        got = [await q.get() for _ in range(3)]
        t.join()
        rx.close()
        return got

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as r:
        got = r.run(go())
    assert got[0] == (7, ("small", 1))
    assert got[1][1][0] == "done" and got[1][1][1] == big and got[1][1][2] == list(range(50_000))
    assert got[2] == (7, ("eof",))
