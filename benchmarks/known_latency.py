#!/usr/bin/env python3
"""How accurate are aifb's latencies? Measure a server whose latency is known in advance.

The fake Redis of the tests (tests/fakes/fake_redis.py; for timing only, not a Redis: it stores
nothing), with the scheduler below, answers every GET after a known delay, in its own process on
loopback:

    fixed     every reply after 2 ms
    bimodal   90 % after 1 ms, 10 % after 10 ms (seeded draws)

Replies are released by a Linux timerfd at the due instant (no 1 ms loop-timer granularity,
no spinning); the server also measures the delay it actually applied (request read -> reply
written), so its own lateness is separated from ours. For each distribution, aifb's engine
runs against it at concurrency (connections) 1, 64 and 1,024:

    closed loop   latency = t_end - t_start
    open loop     constant arrivals at a rate below capacity (<= half of what the connections
                  could carry at the longest delay, capped at --max-rate), so nothing queues:
                  latency = t_end - t_sched should equal the server delay
    above capacity (fixed only): open loop at 1.5x what --over-connections connections can
                  carry: latency from t_sched grows with the backlog, service time
                  (t_end - t_start) does not - the schedule is kept, no coordinated omission

and the table compares our p50/p99 (measure phase, ok requests, numpy 'linear' percentiles as
in summary.json) with the truth (the nominal delay) and with what the server applied. Loop lag
p99 and client CPU show when the client itself is the limit (c=1,024 closed loop asks for
512,000 replies/s of 2 ms each: far beyond one Python process; the validity guard flags it).

    .venv/bin/python benchmarks/known_latency.py [--seconds 2] [--processes 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from array import array
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))  # the fake Redis: tests/fakes/fake_redis.py

from fakes.fake_redis import FakeRedis  # noqa: E402  (after the path)

G = 1_000_000_000
DISTS = {"fixed": "every reply after 2 ms", "bimodal": "90% after 1 ms, 10% after 10 ms"}
TRUTH = {"fixed": {"p50": 0.002, "p99": 0.002, "max": 0.002},
         "bimodal": {"p50": 0.001, "p99": 0.010, "max": 0.010}}


# --------------------------------------------------------------------------- the fake server
class _Scheduler:
    """The fake's GET replies (a 4-byte value), each released by a timerfd at its due instant;
    the delays it applied are kept for DELAYSTATS (stats()) until DELAYRESET (reset())."""

    REPLY = b"$4\r\nfake\r\n"

    def __init__(self, dist: str, seed: int):
        from aifb.load.arrivals import TimerFd as _TimerFd

        rng = random.Random(seed)
        if dist == "fixed":
            self.draw = lambda: 2_000_000
        else:
            r = rng.random
            self.draw = lambda: 1_000_000 if r() < 0.9 else 10_000_000
        self.heap: list = []
        self.n = 0
        self.applied = array("q")
        self.timer = _TimerFd()
        self.armed = None
        asyncio.get_running_loop().add_reader(self.timer.fd, self.fire)

    def add(self, due: int, t_recv: int, transport) -> None:
        self.n += 1
        heapq.heappush(self.heap, (due, self.n, t_recv, transport))
        if self.armed is None or due < self.armed:
            self.armed = due
            self.timer.arm(due)

    def fire(self) -> None:
        self.timer.clear()
        heap, now = self.heap, time.perf_counter_ns()
        reply, applied = self.REPLY, self.applied
        while heap and heap[0][0] <= now:
            _, _, t_recv, tr = heapq.heappop(heap)
            if not tr.is_closing():
                tr.write(reply)
                applied.append(time.perf_counter_ns() - t_recv)
            now = time.perf_counter_ns()
        self.armed = heap[0][0] if heap else None
        if self.armed is not None:
            self.timer.arm(self.armed)

    def reset(self) -> None:
        self.applied = array("q")

    def stats(self) -> dict:
        import numpy as np

        a = np.sort(np.frombuffer(self.applied, dtype=np.int64)) / G if len(self.applied) else None
        if a is None:
            return {"n": 0}
        return {"n": int(len(a)), "p50": float(np.percentile(a, 50)),
                "p99": float(np.percentile(a, 99)), "max": float(a[-1])}


def serve(dist: str, seed: int) -> None:
    import uvloop

    async def main():
        sched = _Scheduler(dist, seed)
        server = await asyncio.get_running_loop().create_server(
            lambda: FakeRedis(scheduler=sched), "127.0.0.1", 0, backlog=4096)
        print(server.sockets[0].getsockname()[1], flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()

    uvloop.run(main())


# --------------------------------------------------------------------------- the client side
def command(port: int, *args: str):
    import socket

    from aifb.clients.redis import encode_command, parse_reply

    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(encode_command(*args))
        buf = b""
        while True:
            buf += s.recv(65536)
            r = parse_reply(buf)
            if r is not None:
                return r[0]


def measure(port: int, *, conc: int, rate: float | None, seconds: float, processes: int,
            workdir: Path, tag: str) -> dict:
    import numpy as np
    import polars as pl

    from aifb.clock import RunClock
    from aifb.load.engine import run_load_sync

    command(port, "DELAYRESET")
    path = workdir / f"{tag}.jsonl"
    clients = max(1, processes)
    stats = run_load_sync(
        kind="redis", endpoint=f"redis://127.0.0.1:{port}",
        workload={"ops": {"get": 1}, "keyspace": 1000, "preload": False},
        load={"clients": clients, "concurrency": max(1, conc // clients), "rate": rate,
              "arrival": "constant", "duration_s": seconds, "requests": None, "warmup_s": 0.5,
              "cooldown_s": 0.0, "timeout_s": 10.0, "processes": processes},
        seed=7, records_path=path, clock=RunClock(), log=lambda m: None)
    server = json.loads(command(port, "DELAYSTATS"))
    df = pl.read_ndjson(path).filter((pl.col("phase") == "measure") & pl.col("ok"))
    lat = (df["t_end"] - (df["t_sched"] if rate else df["t_start"])).to_numpy()
    svc = (df["t_end"] - df["t_start"]).to_numpy()
    path.unlink()

    def pct(a, q):
        return float(np.percentile(a, q)) if len(a) else float("nan")

    cpu = stats.get("client_cpu") or {}
    return {"n": int(len(lat)), "p50": pct(lat, 50), "p99": pct(lat, 99),
            "svc_p50": pct(svc, 50), "svc_p99": pct(svc, 99),
            "server": server, "achieved": (stats["measured"]["ok"] + stats["measured"]["errors"])
            / stats["window_s"], "errors": stats["measured"]["errors"],
            "lag_p99": (stats.get("loop_lag_s") or {}).get("p99"),
            "cpu": cpu.get("util_of_one_core"),
            "sched_lag_p99": (stats.get("sched_lag_s") or {}).get("p99")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--serve", choices=list(DISTS), help=argparse.SUPPRESS)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 64, 1024])
    ap.add_argument("--dists", nargs="+", default=list(DISTS), choices=list(DISTS))
    ap.add_argument("--processes", type=int, default=1, help="load.processes of the client")
    ap.add_argument("--max-rate", type=float, default=5000.0,
                    help="cap of the below-capacity open-loop rate (what one client can send)")
    ap.add_argument("--over-connections", type=int, default=8)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.serve:
        serve(args.serve, seed=42)
        return 0

    rows = []
    workdir = Path(tempfile.mkdtemp(prefix="aifb-known-"))
    print(f"# {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; {args.seconds:g} s "
          f"per run after 0.5 s warmup; client processes {args.processes}", flush=True)
    for dist in args.dists:
        srv = subprocess.Popen([sys.executable, __file__, "--serve", dist], stdout=subprocess.PIPE,
                               text=True)
        try:
            port = int(srv.stdout.readline())
            dmax = TRUTH[dist]["max"]
            for c in args.concurrency:
                cases = [("closed", None),
                         ("open", min(0.5 * c / dmax, args.max_rate))]
                for loop, rate in cases:
                    r = measure(port, conc=c, rate=rate, seconds=args.seconds,
                                processes=args.processes, workdir=workdir,
                                tag=f"{dist}-{loop}-{c}")
                    r.update(dist=dist, loop=loop, conc=c, rate=rate)
                    rows.append(r)
                    print(f"  {dist} {loop} c={c}: p50 {r['p50'] * 1e3:.3f} ms, p99 "
                          f"{r['p99'] * 1e3:.3f} ms (n={r['n']})", flush=True)
            if dist == "fixed":
                c = args.over_connections
                cap = c / dmax
                r = measure(port, conc=c, rate=1.5 * cap, seconds=args.seconds,
                            processes=args.processes, workdir=workdir, tag="over")
                r.update(dist=dist, loop="open >cap", conc=c, rate=1.5 * cap)
                rows.append(r)
        finally:
            srv.send_signal(signal.SIGTERM)
            try:
                srv.wait(timeout=10)
            except subprocess.TimeoutExpired:
                srv.kill()
    os.rmdir(workdir)

    ms = lambda v: f"{v * 1e3:8.3f}" if v is not None else "     n/a"  # noqa: E731
    print()
    print("latency in ms; err = ours - truth (truth = the nominal delay); server = the delay it "
          "actually applied (read -> write)")
    hdr = (f"{'dist':8} {'loop':9} {'conc':>5} {'rate/s':>8} {'n':>7} | {'truth50':>8} "
           f"{'ours50':>8} {'err50':>8} {'srv50':>8} | {'truth99':>8} {'ours99':>8} {'err99':>8} "
           f"{'srv99':>8} | {'svc50':>8} {'svc99':>8} | {'lag99':>8} {'cpu':>5} {'ach/s':>8}")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        t = TRUTH[r["dist"]]
        srv = r["server"]
        rate = f"{r['rate']:.0f}" if r["rate"] else "-"
        print(f"{r['dist']:8} {r['loop']:9} {r['conc']:>5} {rate:>8} "
              f"{r['n']:>7} | {ms(t['p50'])} {ms(r['p50'])} {ms(r['p50'] - t['p50'])} "
              f"{ms(srv.get('p50'))} | {ms(t['p99'])} {ms(r['p99'])} {ms(r['p99'] - t['p99'])} "
              f"{ms(srv.get('p99'))} | {ms(r['svc_p50'])} {ms(r['svc_p99'])} | "
              f"{ms(r['lag_p99'])} {r['cpu'] or 0:5.2f} {r['achieved']:8.0f}")
    print()
    print("Read: closed loop at c=1 and open loop below capacity measure the server's delay to "
          "within the err columns;\nwhere lag99 (client event-loop lag) is large the client is "
          "saturated and its latencies include client-side delay\n(summary.json flags this as "
          "validity.client_saturated). 'open >cap': latency from t_sched grows with the "
          "backlog,\nservice time (svc) stays at the server's delay - no coordinated omission.")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
