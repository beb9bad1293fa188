"""The postgres client's requests are each worker's seeded stream, in order: for every request
the op is drawn first, then the account, then the op's other values, from
random.Random("aifb-postgres:SEED:WORKER") (so a run is repeatable and a change that draws
differently shows here). Checked against connections that only capture what is written (no
server)."""

from __future__ import annotations

import random
import struct

import aifb.clients.postgres as pg
from aifb.clients.base import OpMix
from support import run_async


class CapturingConnection:
    """A stand-in for a pgwire connection that keeps each payload sent; never replies."""

    def __init__(self):
        self.sent: list[bytes] = []
        self.broken = False
        self.reason = None
        self.params = {}

    def send(self, payload: bytes, cb) -> bool:
        self.sent.append(payload)
        return True

    def close(self) -> None:
        self.broken = True


def binds(payload: bytes) -> list[tuple[str, tuple[int, ...]]]:
    """(statement, int4 parameters) of every Bind message in a payload."""
    out, pos = [], 0
    while pos < len(payload):
        tag = payload[pos:pos + 1]
        end = pos + 1 + struct.unpack_from("!I", payload, pos + 1)[0]
        if tag == b"B":
            body = payload[pos + 5:end]
            name_end = body.index(b"\x00", 1)
            name = body[1:name_end].decode()
            p = name_end + 1
            nfmt = struct.unpack_from("!H", body, p)[0]
            p += 2 + 2 * nfmt
            nparams = struct.unpack_from("!H", body, p)[0]
            p += 2
            values = []
            for _ in range(nparams):
                values.append(struct.unpack_from("!i", body, p + 4)[0])
                p += 8
            out.append((name, tuple(values)))
        pos = end
    return out


def expected(seed: int, worker: int, mix: OpMix, n: int) -> list[tuple[str, tuple[int, ...]]]:
    """The first n requests of a worker's stream, drawn the way the client documents it."""
    rnd = random.Random(f"aifb-postgres:{seed}:{worker}").random
    out = []
    for _ in range(n):
        op = mix.pick(rnd())
        aid = int(rnd() * 100_000) + 1
        if op == "select":
            out.append(("aifb_select", (aid,)))
        else:
            out.append(("aifb_update", (int(rnd() * 10001) - 5000, aid)))
    return out


def test_requests_follow_each_workers_seeded_stream_in_order(monkeypatch):
    conns: list[CapturingConnection] = []

    async def open_wire(ep, timeout_s=10.0):
        conns.append(CapturingConnection())
        return conns[-1]

    monkeypatch.setattr(pg, "open_wire", open_wire)
    ops = {"select": 0.5, "update": 0.5}
    client = pg.PostgresClient("postgresql://127.0.0.1:5432/db",
                               {"ops": ops, "scale": 1, "prepare": False}, seed=7)

    async def main():
        await client.startup(2)
        for _ in range(40):
            for worker in (0, 1):
                assert isinstance(client.start(worker, lambda res: None), int)

    run_async(main())
    mix = OpMix(ops, pg.OPS, "ops")
    for worker, conn in enumerate(conns):
        assert conn.sent[0].startswith(b"P")        # the first request prepares the statements
        sent = [b for payload in conn.sent for b in binds(payload)]
        assert sent == expected(7, worker, mix, 40)
        assert {name for name, _ in sent} == {"aifb_select", "aifb_update"}
