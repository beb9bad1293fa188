#!/usr/bin/env python3
"""What the PostgreSQL client costs in Python alone: aifb's engine + postgres client, and the
bare protocol loop, against an in-memory FAKE server (no sockets, no system calls).

The fake is a transport whose write() answers a point SELECT's reply (BindComplete, one DataRow,
CommandComplete, ReadyForQuery) on the next turn of the event loop; the client's connections and
its validate() are swapped for it, so what runs per request is exactly the code that runs
against a real server, minus the kernel and the server. It prints CPU µs per request (getrusage
over the measure window / the requests measured in it) for each variant given:

    .venv/bin/python benchmarks/postgres_client_stub.py [--seconds 3] floor:1 aifb:1 floor:4 aifb:4

`aifb:C` is the engine (closed loop, one client, C connections, records written to a temporary
file); `floor:C` is the same protocol code with nothing else (benchmarks/postgres_vs_pgbench.py
--floor, on the fake). Caches stay hot here, so against a real server the same code costs
about twice as much (benchmarks/README.md, "PostgreSQL client"); what this isolates is the
difference between the two, quickly and with little noise, for A-B work on the hot path.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import struct
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

import aifb.clients.pgwire as pgwire  # noqa: E402
import aifb.clients.postgres as postgres  # noqa: E402
from aifb.clock import RunClock  # noqa: E402
from aifb.load.engine import run_load_sync  # noqa: E402


def message(tag: bytes, body: bytes) -> bytes:
    return tag + struct.pack("!I", len(body) + 4) + body


REPLY = (message(b"2", b"") + message(b"D", b"\x00\x01\x00\x00\x00\x041234")
         + message(b"C", b"SELECT 1\x00") + message(b"Z", b"I"))
PARSED = message(b"1", b"") * 16 + REPLY     # a first request also carries its Parse messages


class FakeTransport:
    """FAKE server: every write is answered with a point SELECT's reply on the next loop turn."""

    def __init__(self, conn: pgwire.PgConnection, loop: asyncio.AbstractEventLoop):
        self.conn, self.loop = conn, loop

    def write(self, data: bytes) -> None:
        self.loop.call_soon(self.conn.data_received, PARSED if data[:1] == b"P" else REPLY)

    def abort(self) -> None:
        pass

    def get_extra_info(self, name):
        return None


async def fake_connection(*args, **kwargs) -> pgwire.PgConnection:
    conn = pgwire.PgConnection("fake")
    conn.transport = FakeTransport(conn, asyncio.get_running_loop())
    conn.ready = True
    conn.params["server_version"] = "15 (fake)"
    return conn


async def no_validation(self) -> None:
    self._server_version = "15 (fake)"


def aifb(c: int, seconds: float) -> tuple[float, int]:
    postgres.open_connection = fake_connection
    postgres.PostgresClient.validate = no_validation
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "requests.jsonl"
        stats = run_load_sync(
            kind="postgres", endpoint="postgresql://127.0.0.1:5432/fake",
            workload={"ops": {"select": 1}, "scale": 1, "prepare": False},
            load={"clients": 1, "concurrency": c, "rate": None, "arrival": "poisson",
                  "duration_s": seconds, "requests": None, "warmup_s": 0.5, "cooldown_s": 0.0,
                  "timeout_s": 10.0},
            seed=42, records_path=path, clock=RunClock(), log=lambda m: None,
            secrets={"password": "unused"})
        with open(path) as fh:
            n = sum(1 for line in fh if '"phase":"measure"' in line)
    return stats["client_cpu"]["cpu_s"] * 1e6 / n, n


def floor(c: int, seconds: float) -> tuple[float, int]:
    import uvloop

    async def main():
        conns = [await fake_connection() for _ in range(c)]
        st = pgwire.Statement("floor_select", "SELECT abalance FROM accounts WHERE aid = $1", 1)
        done = asyncio.get_running_loop().create_future()
        n = [0]
        end = time.monotonic_ns() + int(seconds * 1e9)
        rnd = random.Random(1).random

        def sender(conn):
            def cb(rows, tag, error, t_end):
                n[0] += 1
                if t_end < end:
                    conn.send(st.bind(int(rnd() * 100000) + 1), cb)
                elif not done.done() and all(x.cb is None for x in conns):
                    done.set_result(None)
            return cb

        cpu0 = time.process_time()
        for conn in conns:
            conn.send(st.parse() + st.bind(1), sender(conn))
        await done
        return (time.process_time() - cpu0) * 1e6 / n[0], n[0]

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("variants", nargs="+", metavar="aifb:C|floor:C")
    ap.add_argument("--seconds", type=float, default=3.0, help="measure window (default 3)")
    args = ap.parse_args()
    for v in args.variants:
        kind, _, c = v.partition(":")
        if kind not in ("aifb", "floor") or not c.isdigit() or int(c) < 1:
            ap.error(f"{v!r}: give aifb:C or floor:C with C >= 1")
        us, n = (aifb if kind == "aifb" else floor)(int(c), args.seconds)
        print(f"{v:>8}: {us:6.2f} µs CPU per request ({n:,} requests)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
