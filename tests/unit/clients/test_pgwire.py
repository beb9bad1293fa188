"""The PostgreSQL protocol client (aifb.clients.pgwire): SCRAM-SHA-256 against RFC 7677's
example, the messages it writes byte for byte, replies fed split at every byte, errors named
as asyncpg names them, a lost connection, and start-up with clear-text and MD5 passwords
against a fake server (the real server, with SCRAM, is in tests/integration/test_postgres.py)."""

from __future__ import annotations

import asyncio
import hashlib
import struct

import pytest

from aifb.clients.base import RequestError
from aifb.clients.pgwire import (PgConnection, PgError, Scram, Statement, error_name,
                                 open_connection, query_message)
from support import run_async


def msg(tag: bytes, body: bytes) -> bytes:
    return tag + struct.pack("!I", len(body) + 4) + body


def test_scram_sha_256_matches_rfc_7677():
    s = Scram("pencil", nonce="rOprNGfwEbeRWgbNEkqO", user="user")
    assert s.first() == b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
    server_first = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    assert s.final(server_first) == (b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                                     b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
    s.verify("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
    with pytest.raises(RequestError, match="signature does not match"):
        s.verify("v=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
    with pytest.raises(RequestError, match="nonce"):
        Scram("pencil", nonce="abc").final("r=xyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")


def test_statement_messages_byte_for_byte():
    st = Statement("aifb_update", "UPDATE a SET b = b + $1 WHERE aid = $2", 2)
    assert st.parse() == msg(b"P", b"aifb_update\x00UPDATE a SET b = b + $1 WHERE aid = $2\x00"
                                   + struct.pack("!HII", 2, 23, 23))
    bind = msg(b"B", b"\x00aifb_update\x00" + struct.pack("!HHH", 1, 1, 2)
               + struct.pack("!iiii", 4, -5000, 4, 99_999) + struct.pack("!H", 0))
    execute, sync = msg(b"E", b"\x00" + struct.pack("!I", 0)), msg(b"S", b"")
    assert st.bind(-5000, 99_999) == bind + execute + sync
    begin = Statement("aifb_tpcb0", "BEGIN", 0)
    assert begin.bind() == msg(b"B", b"\x00aifb_tpcb0\x00" + struct.pack("!HHH", 0, 0, 0)) + execute + sync
    assert query_message("SELECT 1") == msg(b"Q", b"SELECT 1\x00")


def _ready_connection() -> tuple[PgConnection, list]:
    conn = PgConnection("127.0.0.1:1")
    conn.ready = True
    conn.transport = _Transport()
    calls = []
    assert conn.send(b"x", lambda *a: calls.append(a))
    return conn, calls


class _Transport:
    def __init__(self):
        self.written, self.aborted = [], False

    def write(self, data):
        self.written.append(data)

    def abort(self):
        self.aborted = True

    def get_extra_info(self, name):
        return None


SELECT_REPLY = (msg(b"1", b"") + msg(b"2", b"") + msg(b"D", struct.pack("!HI", 1, 3) + b"-42")
                + msg(b"C", b"SELECT 1\x00") + msg(b"Z", b"I"))
ERROR_REPLY = (msg(b"2", b"") + msg(b"E", b"SERROR\x00C40P01\x00Mdeadlock detected\x00\x00")
               + msg(b"Z", b"E"))


@pytest.mark.parametrize("reply,expect", [
    (SELECT_REPLY, (1, b"SELECT 1", None)),
    (msg(b"2", b"") + msg(b"C", b"UPDATE 0\x00") + msg(b"Z", b"T"), (0, b"UPDATE 0", None)),
    (ERROR_REPLY, (0, b"", "DeadlockDetectedError")),
])
def test_a_reply_split_anywhere_completes_once_with_the_same_result(reply, expect):
    for cut in range(len(reply) + 1):
        for parts in ([reply[:cut], reply[cut:]], [bytes([b]) for b in reply]):
            conn, calls = _ready_connection()
            for p in parts:
                if p:
                    conn.data_received(p)
            assert len(calls) == 1, (cut, calls)
            rows, tag, error, t_end = calls[0]
            assert (rows, tag, error.name if error else None) == expect and t_end > 0
            assert conn.buf == b"" and conn.cb is None


def test_errors_are_named_as_asyncpg_names_them():
    assert error_name("40P01") == "DeadlockDetectedError"
    assert error_name("23514") == "CheckViolationError"
    assert error_name("40999") == "TransactionRollbackError"  # unknown code: its class's name
    assert error_name("ZZ999") == "PostgresError"
    e = PgError({"S": "ERROR", "C": "42P01", "M": 'relation "x" does not exist'})
    assert e.name == "UndefinedTableError" and str(e) == 'relation "x" does not exist'


def test_a_lost_connection_completes_the_request_once_naming_the_servers_last_word():
    conn, calls = _ready_connection()
    conn.data_received(msg(b"E", b"SFATAL\x00C57P01\x00Mterminating connection due to "
                                 b"administrator command\x00\x00"))
    assert calls == []
    conn.connection_lost(None)
    assert len(calls) == 1 and calls[0][:3] == (0, b"", None)
    assert conn.broken and "ended the session: terminating connection" in conn.reason
    assert not conn.send(b"y", lambda *a: calls.append(a)) and len(calls) == 1


def test_garbage_drops_the_connection_and_fails_the_request():
    conn, calls = _ready_connection()
    conn.data_received(msg(b"?", b"junk"))
    assert conn.transport.aborted and conn.broken and "unexpected message '?'" in conn.reason
    assert len(calls) == 1 and calls[0][:3] == (0, b"", None)


# --------------------------------------------------------------------------- start-up (fake)

async def _fake_server(auth: str, password: str):
    """A FAKE PostgreSQL start-up: asks for a clear-text or MD5 password, checks it, says
    ReadyForQuery (or FATAL 28P01); records what the client sent."""
    seen = {}

    async def handle(reader, writer):
        n = struct.unpack("!I", await reader.readexactly(4))[0]
        body = await reader.readexactly(n - 4)
        kv = body[4:].split(b"\x00")
        seen["startup"] = dict(zip(kv[0::2], kv[1::2]))
        user = seen["startup"][b"user"].decode()
        salt = b"\x01\x02\x03\x04"
        writer.write(msg(b"R", struct.pack("!I", 3) if auth == "password" else struct.pack("!I", 5) + salt))
        tag = await reader.readexactly(1)
        n = struct.unpack("!I", await reader.readexactly(4))[0]
        sent = (await reader.readexactly(n - 4)).rstrip(b"\x00").decode()
        seen["password_message"] = (tag, sent)
        want = password if auth == "password" else "md5" + hashlib.md5(
            hashlib.md5((password + user).encode()).hexdigest().encode() + salt).hexdigest()
        if sent == want:
            writer.write(msg(b"R", struct.pack("!I", 0)) + msg(b"S", b"server_version\x0015.0\x00")
                         + msg(b"K", struct.pack("!II", 1, 2)) + msg(b"Z", b"I"))
        else:
            writer.write(msg(b"E", b"SFATAL\x00C28P01\x00Mpassword authentication failed\x00\x00"))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], seen


@pytest.mark.parametrize("auth", ["password", "md5"])
def test_start_up_with_clear_text_and_md5_passwords(auth):
    async def main():
        server, port, seen = await _fake_server(auth, "s3cret")
        async with server:
            conn = await open_connection("127.0.0.1", port, "alice", "db", "s3cret", 5, "x")
            assert conn.ready and conn.params["server_version"] == "15.0"
            assert seen["startup"][b"database"] == b"db" and seen["password_message"][0] == b"p"
            conn.close()
            with pytest.raises(PgError) as e:
                await open_connection("127.0.0.1", port, "alice", "db", "wrong", 5, "x")
            assert e.value.name == "InvalidPasswordError"
            with pytest.raises(RequestError) as e:
                await open_connection("127.0.0.1", port, "alice", "db", None, 5, "x")
            assert e.value.type == "NoPassword"

    run_async(main())
