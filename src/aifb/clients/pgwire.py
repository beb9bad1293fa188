"""PostgreSQL's frontend/backend protocol 3.0: the part a load generator's hot path needs, written
directly on asyncio.Protocol (run it under uvloop).

    conn = await open_connection(host, port, user, database, password, timeout_s, label)
    stmt = Statement("s_select", "SELECT abalance FROM accounts WHERE aid = $1", nparams=1)
    conn.send(stmt.parse() + stmt.bind(42), on_reply)   # on_reply(rows, tag, error, t_end_ns)

Why not asyncpg for the requests: its per-query path is a coroutine awaited in a task, which
on these machines costs more client CPU than the server spends on a point SELECT, so the
client's own queueing showed in the latencies (`benchmarks/postgres_vs_pgbench.py`;
benchmarks/README.md, "PostgreSQL client"). Here a request is one `transport.write` of Bind + Execute +
Sync for a statement prepared once per connection (as `pgbench -M prepared`), its reply is
parsed in data_received and handed to a callback: no coroutine, task or future per request.
asyncpg stays for everything off the hot path (loading tables with COPY, checks, probes).

What is implemented: start-up (protocol 3.0, no TLS) with trust, clear-text, MD5 and
SCRAM-SHA-256 password authentication (RFC 5802 / 7677, without channel binding); the
extended query protocol with int4 parameters sent in binary and results left in text (the hot
path only counts rows and reads the command tag); a simple Query for set-up checks. A server
error is a PgError carrying its SQLSTATE and asyncpg's class name for it (so records name
errors as before, e.g. DeadlockDetectedError). NoticeResponse, ParameterStatus and
NotificationResponse are accepted and ignored at any time. Anything else is a protocol error
that drops the connection.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import socket
import struct
import unicodedata

from aifb.clock import now_ns
from aifb.clients.base import RequestError

PROTOCOL_3_0 = 196608
INT4_OID = 23
SYNC = b"S\x00\x00\x00\x04"
_I = struct.Struct("!I")
_EXECUTE_SYNC = b"E\x00\x00\x00\x09\x00\x00\x00\x00\x00" + SYNC  # unnamed portal, all rows


class PgError(Exception):
    """An ErrorResponse: `fields` by their one-letter codes (C: SQLSTATE, M: message, ...)."""

    def __init__(self, fields: dict[str, str]):
        self.fields = fields
        self.sqlstate = fields.get("C", "XX000")
        super().__init__(fields.get("M", "error"))

    @property
    def name(self) -> str:
        """asyncpg's exception class name for the SQLSTATE (its class's, else PostgresError)."""
        return error_name(self.sqlstate)


_ERROR_NAMES: dict[str, str] | None = None


def error_name(sqlstate: str) -> str:
    global _ERROR_NAMES
    if _ERROR_NAMES is None:
        import asyncpg.exceptions as pe  # the names records have always used
        _ERROR_NAMES = {c.sqlstate: c.__name__ for c in vars(pe).values()
                        if isinstance(c, type) and isinstance(getattr(c, "sqlstate", None), str)}
    return (_ERROR_NAMES.get(sqlstate) or _ERROR_NAMES.get(sqlstate[:2] + "000")
            or "PostgresError")


def _cstr(s: str) -> bytes:
    return s.encode() + b"\x00"


def _msg(tag: bytes, body: bytes) -> bytes:
    return tag + _I.pack(len(body) + 4) + body


class Statement:
    """A named prepared statement whose parameters are all int4 (binary) and whose results
    are text: its Parse message and, per request, the Bind/Execute/Sync bytes."""

    __slots__ = ("name", "sql", "nparams", "_head", "_pack")

    def __init__(self, name: str, sql: str, nparams: int):
        self.name, self.sql, self.nparams = name, sql, nparams
        # Bind: portal "", statement, 1 format code (binary) for all parameters, n params of
        # 4 bytes each, 0 result format codes (text). Its length is the same for every request.
        body_len = 1 + len(name) + 1 + 2 + (2 if nparams else 0) + 2 + 8 * nparams + 2
        self._head = (b"B" + _I.pack(body_len + 4) + b"\x00" + _cstr(name)
                      + (b"\x00\x01\x00\x01" if nparams else b"\x00\x00") + struct.pack("!H", nparams))
        self._pack = struct.Struct("!" + "ii" * nparams + "H").pack

    def parse(self) -> bytes:
        """Parse (no Sync): prepare the statement on the connection."""
        return _msg(b"P", _cstr(self.name) + _cstr(self.sql) + struct.pack("!H", self.nparams)
                    + _I.pack(INT4_OID) * self.nparams)

    def bind(self, *values: int) -> bytes:
        """Bind + Execute + Sync for one request (values are int4)."""
        args = []
        for v in values:
            args += (4, v)
        return self._head + self._pack(*args, 0) + _EXECUTE_SYNC


def query_message(sql: str) -> bytes:
    """A simple Query (one round trip; text results), for set-up checks."""
    return _msg(b"Q", _cstr(sql))


# --------------------------------------------------------------------------- SCRAM-SHA-256

def _saslprep(password: str) -> bytes:
    # Printable ASCII is unchanged by SASLprep (RFC 4013); otherwise its mapping step, NFKC,
    # which PostgreSQL also applies when it stores a SCRAM secret.
    return (password if password.isascii() else unicodedata.normalize("NFKC", password)).encode()


class Scram:
    """The client side of SCRAM-SHA-256 (no channel binding)."""

    def __init__(self, password: str, nonce: str | None = None, user: str = ""):
        # PostgreSQL takes the user from the start-up message; libpq too sends "n=," here
        self.password = password
        self.nonce = nonce or base64.b64encode(os.urandom(18)).decode()
        self.first_bare = f"n={user},r={self.nonce}"
        self.server_signature = b""

    def first(self) -> bytes:
        return ("n,," + self.first_bare).encode()

    def final(self, server_first: str) -> bytes:
        attrs = dict(a.split("=", 1) for a in server_first.split(","))
        nonce, salt, iters = attrs["r"], base64.b64decode(attrs["s"]), int(attrs["i"])
        if not nonce.startswith(self.nonce):
            raise RequestError("AuthError", "SCRAM: the server's nonce does not extend ours")
        salted = hashlib.pbkdf2_hmac("sha256", _saslprep(self.password), salt, iters)
        without_proof = f"c=biws,r={nonce}"
        auth = f"{self.first_bare},{server_first},{without_proof}".encode()
        client_key = hmac.digest(salted, b"Client Key", "sha256")
        signature = hmac.digest(hashlib.sha256(client_key).digest(), auth, "sha256")
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        self.server_signature = hmac.digest(hmac.digest(salted, b"Server Key", "sha256"), auth,
                                            "sha256")
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify(self, server_final: str) -> None:
        attrs = dict(a.split("=", 1) for a in server_final.split(","))
        if base64.b64decode(attrs.get("v", "")) != self.server_signature:
            raise RequestError("AuthError", "SCRAM: the server's signature does not match "
                               "(not the server that holds this password)")


# --------------------------------------------------------------------------- connection

class PgConnection(asyncio.Protocol):
    """One connection. Before `ready`, messages queue for the start-up coroutine; after, one
    request at a time: send(payload, cb) and cb(rows, tag, error, t_end_ns) at ReadyForQuery."""

    __slots__ = ("label", "transport", "cb", "rows", "tag", "error", "buf", "broken", "reason",
                 "ready", "inbox", "waiter", "status", "params")

    def __init__(self, label: str):
        self.label = label
        self.transport = None
        self.cb = None
        self.rows = 0
        self.tag = b""
        self.error: PgError | None = None
        self.buf = b""
        self.broken = False
        self.reason: str | None = None
        self.ready = False
        self.inbox: list[tuple[int, bytes]] = []
        self.waiter: asyncio.Future | None = None
        self.status = b"I"          # the last ReadyForQuery's transaction status
        self.params: dict[str, str] = {}

    # -- asyncio callbacks ----------------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data):
        if self.buf:
            data = self.buf + data
            self.buf = b""
        n = len(data)
        pos = 0
        unpack = _I.unpack_from
        if not self.ready:                     # start-up: every message to the coroutine
            while n - pos >= 5:
                end = pos + 1 + unpack(data, pos + 1)[0]
                if end > n:
                    break
                self._startup_message(data[pos], data[pos + 5:end])
                pos = end
        else:
            while n - pos >= 5:
                end = pos + 1 + unpack(data, pos + 1)[0]
                if end > n:
                    break
                t = data[pos]
                if t == 68:                        # D DataRow
                    self.rows += 1
                elif t == 50:                      # 2 BindComplete (every request)
                    pass
                elif t == 67:                      # C CommandComplete
                    self.tag = data[pos + 5:end - 1]
                elif t == 90:                      # Z ReadyForQuery: the reply is complete
                    self.status = data[pos + 5:end]
                    cb = self.cb
                    rows, tag, error = self.rows, self.tag, self.error
                    self.cb = None
                    self.rows = 0
                    self.tag = b""
                    self.error = None
                    if cb is not None:
                        cb(rows, tag, error, now_ns())
                elif t == 69:                      # E ErrorResponse
                    self.error = PgError(parse_fields(data[pos + 5:end]))
                elif t not in _IGNORED:
                    self._protocol_error(f"unexpected message {chr(t)!r}")
                    return
                pos = end
        if pos < n:
            self.buf = data[pos:]

    def _startup_message(self, t: int, body: bytes) -> None:
        self.inbox.append((t, body))
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _protocol_error(self, message: str) -> None:
        self.broken = True
        self.reason = f"protocol error from postgres at {self.label}: {message}"
        if self.transport is not None:
            self.transport.abort()
        self._fail()

    def connection_lost(self, exc):
        self.transport = None
        self.broken = True
        if self.reason is None and self.error is not None:  # e.g. FATAL: terminating connection
            self.reason = f"postgres at {self.label} ended the session: {self.error}"
        if self.reason is None:
            self.reason = (f"connection to postgres at {self.label} lost"
                           + (f": {exc}" if exc else " (closed by the server)"))
        self._fail()

    def _fail(self) -> None:
        cb = self.cb
        if cb is not None:
            self.cb = None
            cb(0, b"", None, now_ns())
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    # -- requests ---------------------------------------------------------------------
    def send(self, payload: bytes, cb) -> bool:
        """One request; cb(rows, tag, error, t_end_ns) once its ReadyForQuery arrives, or with
        error None and tag b"" if the connection is lost first. False: not connected."""
        tr = self.transport
        if tr is None or self.broken:
            return False
        self.cb = cb
        tr.write(payload)
        return True

    def call(self, payload: bytes) -> asyncio.Future:
        """send() as a future of (rows, tag); PgError / RequestError as its exception."""
        fut = asyncio.get_running_loop().create_future()

        def done(rows, tag, error, t_end):
            if fut.done():
                return
            if error is not None:
                fut.set_exception(error)
            elif not tag and self.broken:
                fut.set_exception(RequestError("ConnectionError", self.reason or "lost"))
            else:
                fut.set_result((rows, tag))

        if not self.send(payload, done):
            fut.set_exception(RequestError("ConnectionError", self.reason or
                                           f"not connected to postgres at {self.label}"))
        return fut

    def close(self) -> None:
        """Drop the connection at once (a request in flight is abandoned, cb not called)."""
        self.cb = None
        self.broken = True
        if self.transport is not None:
            self.transport.abort()

    # -- start-up ---------------------------------------------------------------------
    async def _next(self) -> tuple[int, bytes]:
        while not self.inbox:
            if self.broken:
                raise RequestError("ConnectionError", self.reason or "connection lost")
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter
        return self.inbox.pop(0)

    async def start(self, user: str, database: str, password: str | None) -> None:
        params = {"user": user, "database": database, "application_name": "aifb",
                  "client_encoding": "UTF8"}
        body = _I.pack(PROTOCOL_3_0) + b"".join(_cstr(k) + _cstr(v) for k, v in params.items()) + b"\x00"
        self.transport.write(_I.pack(len(body) + 4) + body)
        scram = None
        while True:
            t, body = await self._next()
            if t == 69:                                          # E
                raise PgError(parse_fields(body))
            if t == 83:                                          # S ParameterStatus
                k, v, _ = body.split(b"\x00", 2)
                self.params[k.decode()] = v.decode()
            elif t == 90:                                        # Z
                self.status = body
                self.ready = True
                self.inbox.clear()
                return
            elif t == 82:                                        # R Authentication*
                code = _I.unpack_from(body)[0]
                if code == 0:
                    continue
                if password is None and code in (3, 5, 10):
                    raise RequestError("NoPassword", "the server asks for a password")
                if code == 3:                                    # clear text
                    self.transport.write(_msg(b"p", _cstr(password)))
                elif code == 5:                                  # MD5
                    inner = hashlib.md5((password + user).encode()).hexdigest()
                    outer = hashlib.md5(inner.encode() + body[4:8]).hexdigest()
                    self.transport.write(_msg(b"p", _cstr("md5" + outer)))
                elif code == 10:                                 # SASL: mechanisms offered
                    if b"SCRAM-SHA-256\x00" not in body[4:]:
                        raise RequestError("AuthError", "the server offers no SASL mechanism "
                                           "this client speaks (SCRAM-SHA-256)")
                    scram = Scram(password)
                    first = scram.first()
                    self.transport.write(_msg(b"p", _cstr("SCRAM-SHA-256") + _I.pack(len(first)) + first))
                elif code == 11 and scram is not None:           # SASLContinue
                    self.transport.write(_msg(b"p", scram.final(body[4:].decode())))
                elif code == 12 and scram is not None:           # SASLFinal
                    scram.verify(body[4:].decode())
                else:
                    raise RequestError("AuthError", f"authentication method {code} is not supported "
                                       "(trust, password, md5 and scram-sha-256 are)")
            elif t not in _IGNORED:
                raise RequestError("ProtocolError", f"unexpected message {chr(t)!r} at start-up")


_IGNORED = frozenset(b"12nItTsNSAK")  # Parse/BindComplete, NoData, EmptyQuery, descriptions,
#                                       PortalSuspended, Notice, ParameterStatus, Notification, BackendKeyData


def parse_fields(body: bytes) -> dict[str, str]:
    fields = {}
    for part in body.split(b"\x00"):
        if part:
            fields[chr(part[0])] = part[1:].decode("utf-8", "replace")
    return fields


async def open_connection(host: str, port: int, user: str, database: str, password: str | None,
                          timeout_s: float, label: str) -> PgConnection:
    """A started connection (ReadyForQuery seen). Raises PgError (a server's refusal),
    RequestError, OSError or TimeoutError; the caller turns them into messages."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout_s):
        _, conn = await loop.create_connection(lambda: PgConnection(label), host, port)
        try:
            await conn.start(user, database, password)
        except BaseException:
            conn.close()
            raise
    return conn
