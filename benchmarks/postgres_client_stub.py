#!/usr/bin/env python3
"""What the PostgreSQL client costs in Python alone: aifb's engine + postgres client, and the
bare protocol loop, against an in-memory FAKE server (no sockets, no system calls).

The fake is a transport whose write() answers a point SELECT's reply (BindComplete, one DataRow,
CommandComplete, ReadyForQuery) on the next turn of the event loop; the client's connections and
its validate() are swapped for it, so what runs per request is exactly the code that runs
against a real server, minus the kernel and the server. It prints CPU µs per request (getrusage
over the measure window / the requests measured in it) for each variant given:

    .venv/bin/python benchmarks/postgres_client_stub.py [--seconds 3] floor:1 aifb:1 floor:4 aifb:4

`aifb:C` and `floor:C` are postgres_vs_pgbench.py's own runs, on the fake: its aifb_run (the
engine, closed loop, one client, C connections, records to a temporary file) and its floor_run
(`--floor`: the same protocol code with nothing else). Caches stay hot here, so against a real server the same code costs
about twice as much (benchmarks/README.md, "PostgreSQL client"); what this isolates is the
difference between the two, quickly and with little noise, for A-B work on the hot path.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import struct
import sys
import tempfile
from pathlib import Path

import postgres_vs_pgbench as pvp   # this directory: its floor_run and aifb_run, on the fake

import aifb.clients.pgwire as pgwire  # noqa: E402 (src/ is on the path since the import above)
import aifb.clients.postgres as postgres  # noqa: E402


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


def use_the_fake() -> None:
    """Every connection the engine's client or the bare loop opens is a fake one."""
    postgres.open_connection = fake_connection
    pgwire.open_connection = fake_connection
    postgres.PostgresClient.validate = no_validation
    os.environ.setdefault(pvp.PASSWORD_ENV, "unused")


def run(kind: str, c: int, seconds: float) -> tuple[float, int]:
    if kind == "floor":
        r = pvp.floor_run(0, "fake", c, seconds, 100_000)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            r = pvp.aifb_run("postgresql://127.0.0.1:5432/fake", c, seconds, 1, Path(tmp), 0)
    return r["cpu_us_per_query"], r["n"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("variants", nargs="+", metavar="aifb:C|floor:C")
    ap.add_argument("--seconds", type=float, default=3.0, help="measure window (default 3)")
    args = ap.parse_args()
    use_the_fake()
    for v in args.variants:
        kind, _, c = v.partition(":")
        if kind not in ("aifb", "floor") or not c.isdigit() or int(c) < 1:
            ap.error(f"{v!r}: give aifb:C or floor:C with C >= 1")
        us, n = run(kind, int(c), args.seconds)
        print(f"{v:>8}: {us:6.2f} µs CPU per request ({n:,} requests)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
