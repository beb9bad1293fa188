"""Redis: a small RESP2 client written directly on asyncio.Protocol (run it under uvloop).

Why not redis-py: on a small machine it spends most of a request in its own code, and its own
queueing would dominate the latency it reports (README.md, design notes). What this client
reaches against redis-benchmark on one server, and the command that measures it:
benchmarks/README.md (benchmarks/redis_vs_redis_benchmark.py). This client keeps the
per-request path to a few attribute writes and one `transport.write` of a pre-encoded command:
each worker owns one connection with at most one request in flight, replies are parsed in
`data_received` (incrementally, tolerating any split of the byte stream), t_end is taken there,
and the engine's callback is called directly - no coroutine, task or future per request.

Endpoints: redis://[[user]:password@]host[:port][/db]. The password may also come from
secrets={"password": ..., "username": ...} (which wins over the URL). It is sent with AUTH and
never appears in a message, a record or describe().

Workload (recipe `workload:`; defaults as in recipe.schema.yaml): ops {get, set} weights,
value_size, keyspace, key_prefix, preload. Keys are `{key_prefix}{index:012d}` - the same
shape as redis-benchmark's `__rand_int__` keys, so `key_prefix: "key:"` shares its keyspace.
bytes_out / bytes_in count payload (the SET value out, the GET value in), not RESP framing.
"""

from __future__ import annotations

import asyncio
import random
import socket
from urllib.parse import unquote

from aifb import endpoints
from aifb.clock import now_ns
from aifb.errors import ServiceError
from aifb.units import parse_size
from aifb.clients import register
from aifb.clients.base import OpMix, RequestError

DEFAULT_PORT = 6379
CONNECT_TIMEOUT_S = 10.0
PRELOAD_BATCH = 1000
PRECOMPUTE_KEYS_MAX = 1 << 18     # pre-encode GET commands for keyspaces up to this size
_DEFAULTS = {"ops": {"get": 0.9, "set": 0.1}, "value_size": 128, "keyspace": 10000,
             "key_prefix": "aifb:", "preload": True}


# --------------------------------------------------------------------------- RESP2 parsing

class ReplyError(str):
    """An error reply (-ERR ...), as parsed; a str subclass holding the text after '-'."""

    @property
    def code(self) -> str:
        return self.split(" ", 1)[0] if self else "ERR"


class ProtocolError(Exception):
    """The byte stream is not RESP2."""


def parse_reply(buf: bytes, pos: int = 0):
    """Parse one RESP2 reply from buf[pos:].

    Returns (value, next_pos), or None when buf holds only part of the reply (call again with
    more bytes). Values: bulk string -> bytes, nil bulk/array -> None, simple string -> str,
    integer -> int, error -> ReplyError, array -> list. Raises ProtocolError on garbage.
    """
    end = buf.find(b"\r\n", pos)
    if end < 0:
        if pos < len(buf) and buf[pos] not in b"$+-:*":
            raise ProtocolError(f"unexpected reply type byte {bytes(buf[pos:pos + 1])!r}")
        return None
    t = buf[pos]
    if t == 36:  # $ bulk string
        n = _int(buf, pos, end)
        if n < 0:
            return None, end + 2
        stop = end + 2 + n
        if len(buf) < stop + 2:
            return None
        if buf[stop:stop + 2] != b"\r\n":
            raise ProtocolError("bulk string not terminated by CRLF")
        return bytes(buf[end + 2:stop]), stop + 2
    if t == 43:  # + simple string
        return bytes(buf[pos + 1:end]).decode("utf-8", "replace"), end + 2
    if t == 45:  # - error
        return ReplyError(bytes(buf[pos + 1:end]).decode("utf-8", "replace")), end + 2
    if t == 58:  # : integer
        return _int(buf, pos, end), end + 2
    if t == 42:  # * array
        n = _int(buf, pos, end)
        if n < 0:
            return None, end + 2
        items = []
        p = end + 2
        for _ in range(n):
            r = parse_reply(buf, p)
            if r is None:
                return None
            items.append(r[0])
            p = r[1]
        return items, p
    raise ProtocolError(f"unexpected reply type byte {bytes(buf[pos:pos + 1])!r}")


def _int(buf, pos: int, end: int) -> int:
    try:
        return int(buf[pos + 1:end])
    except ValueError:
        raise ProtocolError(f"bad length/integer {bytes(buf[pos + 1:end])[:20]!r}") from None


def _bulk(b: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(b), b)


def encode_command(*args: bytes | str | int) -> bytes:
    """RESP2 array of bulk strings: encode_command('SET', 'k', b'v')."""
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, str):
            a = a.encode()
        elif isinstance(a, int):
            a = str(a).encode()
        parts.append(_bulk(a))
    return b"".join(parts)


def payload_size(value) -> int:
    if isinstance(value, bytes):
        return len(value)
    if isinstance(value, list):
        return sum(payload_size(v) for v in value)
    return 0


# --------------------------------------------------------------------------- endpoint

class Endpoint:
    __slots__ = ("host", "port", "db", "username", "password")

    def __init__(self, host, port, db=0, username=None, password=None):
        self.host, self.port, self.db = host, port, db
        self.username, self.password = username, password

    @property
    def label(self) -> str:
        return f"{self.host}:{self.port}"

    def __repr__(self) -> str:  # never shows the password
        auth = "***@" if self.password else ""
        return f"redis://{auth}{self.label}/{self.db}"


def parse_endpoint(endpoint: str, secrets: dict | None = None) -> Endpoint:
    parts = endpoints.split("redis", endpoint)
    db = 0
    path = parts.path.strip("/")
    if path:
        if not path.isdigit():
            raise ServiceError(f"redis endpoint database {path!r} is not a number")
        db = int(path)
    secrets = secrets or {}
    username = secrets.get("username") or (unquote(parts.username) if parts.username else None)
    return Endpoint(parts.hostname, parts.port or DEFAULT_PORT, db, username,
                    secrets.get("password") or None)


# --------------------------------------------------------------------------- connection

class RedisConnection(asyncio.Protocol):
    """One TCP connection. Two modes: the fast single-request path (`cb` set: one reply is
    expected, handed to `cb` as a result tuple) and `call()` (a pipeline of n commands whose n
    parsed replies resolve a future; used for AUTH, PING, preload)."""

    __slots__ = ("label", "transport", "cb", "op", "bytes_out", "buf", "need", "broken",
                 "reason", "waiter", "expect", "replies", "pbuf", "_secret", "value_head",
                 "value_reply_len", "value_size")

    def __init__(self, label: str, secret: str | None = None):
        self.label = label
        self._secret = secret
        self.transport = None
        self.cb = None
        self.op = "?"
        self.bytes_out = 0
        self.buf = None
        self.need = 0
        self.broken = False
        self.reason = None
        self.waiter = None
        self.expect = 0
        self.replies = []
        self.pbuf = b""
        self.expect_values(-1)

    def expect_values(self, size: int) -> None:
        """GETs will mostly answer a value of `size` bytes (the preloaded ones): such a reply,
        arriving whole, is recognised by its length and header alone (data_received)."""
        self.value_size = size
        self.value_head = b"$%d\r\n" % size
        self.value_reply_len = len(self.value_head) + size + 2 if size >= 0 else -1

    # -- asyncio callbacks ----------------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        t_end = now_ns()
        cb = self.cb
        if cb is None:
            self._pipeline_data(data)
            return
        if (len(data) == self.value_reply_len and self.buf is None
                and data.startswith(self.value_head)):   # the common case: no parse
            self.cb = None
            cb((self.op, True, None, None, self.bytes_out, self.value_size, None, t_end))
            return
        if self.buf is not None:
            buf = self.buf
            buf += data
            if len(buf) < self.need:
                return
            data = bytes(buf)
            self.buf = None
        t = data[0]
        if t == 36:  # $: the GET reply
            i = data.find(b"\r\n")
            if i > 0:
                n = int(data[1:i])
                total = i + 4 + n if n >= 0 else i + 2
                ln = len(data)
                if ln == total:
                    self.cb = None
                    cb((self.op, True, None, None, self.bytes_out, n if n > 0 else 0, None, t_end))
                    return
                if ln < total:
                    self.buf = bytearray(data)
                    self.need = total
                    return
        elif t == 43 and data[-2:] == b"\r\n" and data.find(b"\r\n") == len(data) - 2:  # +OK
            self.cb = None
            cb((self.op, True, None, None, self.bytes_out, 0, None, t_end))
            return
        self._generic_reply(data, cb, t_end)

    def _generic_reply(self, data: bytes, cb, t_end: int) -> None:
        try:
            r = parse_reply(data, 0)
        except (ProtocolError, ValueError) as exc:
            self._protocol_error(cb, t_end, str(exc))
            return
        if r is None:
            self.buf = bytearray(data)
            self.need = len(data) + 1
            return
        value, pos = r
        if pos != len(data):
            self._protocol_error(cb, t_end, f"{len(data) - pos} unexpected bytes after the reply")
            return
        self.cb = None
        if type(value) is ReplyError:
            cb((self.op, False, "RedisError", endpoints.scrub(value, self._secret)[:200], self.bytes_out, None, None,
                t_end))
        else:
            cb((self.op, True, None, None, self.bytes_out, payload_size(value), None, t_end))

    def _protocol_error(self, cb, t_end, message):
        self.cb = None
        self.broken = True
        self.reason = f"protocol error from {self.label}: {message}"
        if self.transport is not None:
            self.transport.abort()
        cb((self.op, False, "ProtocolError", self.reason[:200], self.bytes_out, None, None, t_end))

    def _pipeline_data(self, data):
        waiter = self.waiter
        buf = self.pbuf + data if self.pbuf else data
        if waiter is None or waiter.done():
            # Unsolicited bytes (e.g. "-ERR max number of clients reached" right after
            # connecting): the connection is unusable.
            self.broken = True
            try:
                r = parse_reply(buf, 0)
            except ProtocolError:
                r = None
            self.reason = (f"{self.label} sent: {endpoints.scrub(r[0], self._secret)[:120]}" if r and
                           isinstance(r[0], str) else f"{self.label} sent unexpected data")
            if self.transport is not None:
                self.transport.close()
            return
        pos = 0
        try:
            while len(self.replies) < self.expect:
                r = parse_reply(buf, pos)
                if r is None:
                    break
                self.replies.append(r[0])
                pos = r[1]
        except ProtocolError as exc:
            self.broken = True
            self.reason = f"protocol error from {self.label}: {exc}"
            waiter.set_exception(RequestError("ProtocolError", self.reason))
            self.transport.abort()
            return
        self.pbuf = buf[pos:]
        if len(self.replies) >= self.expect:
            replies, self.replies, self.waiter = self.replies, [], None
            waiter.set_result(replies)

    def connection_lost(self, exc):
        self.transport = None
        self.broken = True
        if self.reason is None:
            self.reason = f"connection to {self.label} lost" + (
                f": {endpoints.scrub(exc, self._secret)}" if exc else " (closed by the server)")
        cb = self.cb
        if cb is not None:
            self.cb = None
            cb((self.op, False, "ConnectionError", self.reason[:200], self.bytes_out, None, None,
                now_ns()))
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            self.waiter = None
            waiter.set_exception(RequestError("ConnectionError", self.reason))

    # -- helpers ----------------------------------------------------------------------
    def call(self, payload: bytes, n: int) -> asyncio.Future:
        """Send n pipelined commands (pre-encoded in payload); resolve to the n replies."""
        fut = asyncio.get_running_loop().create_future()
        if self.broken or self.transport is None:
            fut.set_exception(RequestError("ConnectionError", self.reason or
                                           f"connection to {self.label} is closed"))
            return fut
        self.waiter = fut
        self.expect = n
        self.replies = []
        self.transport.write(payload)
        return fut

    def close(self) -> None:
        self.cb = None
        if self.transport is not None:
            self.transport.close()


async def _connect(ep: Endpoint, timeout_s: float) -> RedisConnection:
    """Open one connection, AUTH and SELECT; raise RequestError with a short, secret-free text."""
    loop = asyncio.get_running_loop()
    label = ep.label
    try:
        async with asyncio.timeout(timeout_s):
            _, conn = await loop.create_connection(
                lambda: RedisConnection(label, ep.password), ep.host, ep.port)
    except ConnectionRefusedError:
        raise RequestError("ConnectionRefused", f"cannot reach redis at {label}: connection refused") from None
    except TimeoutError:
        raise RequestError("Timeout", f"cannot reach redis at {label}: no connection within "
                           f"{timeout_s:g} s") from None
    except socket.gaierror:
        raise RequestError("ConnectionError", f"cannot reach redis at {label}: cannot resolve "
                           f"host {ep.host!r}") from None
    except OSError as exc:
        raise RequestError("ConnectionError",
                           f"cannot reach redis at {label}: {exc.strerror or type(exc).__name__}") from None
    try:
        sock = conn.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass
    cmds = []
    if ep.password:
        cmds.append(encode_command("AUTH", ep.username, ep.password) if ep.username
                    else encode_command("AUTH", ep.password))
    if ep.db:
        cmds.append(encode_command("SELECT", ep.db))
    if cmds:
        try:
            async with asyncio.timeout(timeout_s):
                replies = await conn.call(b"".join(cmds), len(cmds))
        except TimeoutError:
            conn.close()
            raise RequestError("Timeout", f"redis at {label} did not answer AUTH/SELECT within "
                               f"{timeout_s:g} s") from None
        except RequestError:
            conn.close()
            raise
        for reply in replies:
            if isinstance(reply, ReplyError):
                conn.close()
                if ep.password and reply is replies[0]:
                    raise RequestError("AuthError", _auth_message(label, reply, conn))
                raise RequestError("RedisError", f"redis at {label}: SELECT {ep.db} failed: "
                                   f"{endpoints.scrub(reply, conn._secret)[:120]}")
    return conn


def _auth_message(label: str, reply: ReplyError, conn: RedisConnection) -> str:
    return (f"redis at {label} rejected the credentials (NOAUTH/WRONGPASS): "
            f"{endpoints.scrub(reply, conn._secret)[:120]}")


async def _ping(conn: RedisConnection, label: str, timeout_s: float) -> None:
    try:
        async with asyncio.timeout(timeout_s):
            (reply,) = await conn.call(b"*1\r\n$4\r\nPING\r\n", 1)
    except TimeoutError:
        raise ServiceError(f"redis at {label} did not answer PING within {timeout_s:g} s") from None
    except RequestError as exc:
        raise ServiceError(f"redis at {label} did not answer PING: {exc.message}") from None
    if isinstance(reply, ReplyError):
        if reply.code in ("NOAUTH", "WRONGPASS"):
            raise ServiceError(_auth_message(label, reply, conn))
        if reply.code == "LOADING":
            raise ServiceError(f"redis at {label} is still loading its dataset")
        raise ServiceError(f"redis at {label} answered PING with an error: {endpoints.scrub(reply, conn._secret)[:120]}")
    if reply != "PONG":
        raise ServiceError(f"redis at {label} answered PING with {str(reply)[:40]!r}")


# --------------------------------------------------------------------------- client

@register("redis")
class RedisClient:
    """One logical client: `connections` connections, one per worker, one request in flight
    on each."""

    kind = "redis"

    def __init__(self, endpoint: str, workload: dict, seed: int, secrets: dict | None = None):
        self._ep = parse_endpoint(endpoint, secrets)
        self.label = self._ep.label
        wl = {**_DEFAULTS, **(workload or {})}
        mix = OpMix(wl["ops"], ("get", "set"), "redis workload.ops")
        self.ops = mix.weights
        self.p_get = mix.share("get")
        self.value_size = parse_size(wl["value_size"])
        self.keyspace = int(wl["keyspace"])
        self.key_prefix = str(wl["key_prefix"])
        self.preload = bool(wl["preload"])
        self.seed = seed
        rng = random.Random(f"aifb-redis-value:{seed}")
        self.value = rng.randbytes(self.value_size)
        self._val_enc = _bulk(self.value)
        self._prefix = self.key_prefix.encode()
        self._get_cmds = None
        self._key_encs = None
        if self.keyspace <= PRECOMPUTE_KEYS_MAX:
            self._key_encs = [self._key_enc(i) for i in range(self.keyspace)]
            self._get_cmds = [b"*2\r\n$3\r\nGET\r\n" + k for k in self._key_encs]
        self._get_only = self.p_get >= 1.0 and self._get_cmds is not None
        self._conns: list[RedisConnection] = []
        self._rnds: list = []
        self._loop = None

    def _key_enc(self, i: int) -> bytes:
        return _bulk(self.key(i))

    def key(self, i: int) -> bytes:
        return b"%b%012d" % (self._prefix, i)

    # -- lifecycle ------------------------------------------------------------------
    async def startup(self, connections: int) -> None:
        self._loop = asyncio.get_running_loop()
        self._conns = [None] * connections
        self._rnds = [random.Random(f"aifb-redis:{self.seed}:{w}").random for w in range(connections)]
        results = await asyncio.gather(*(_connect(self._ep, CONNECT_TIMEOUT_S)
                                         for _ in range(connections)), return_exceptions=True)
        for i, r in enumerate(results):
            if isinstance(r, BaseException):
                for c in results:
                    if isinstance(c, RedisConnection):
                        c.close()
                if isinstance(r, RequestError):
                    raise ServiceError(r.message) from None
                raise r
            r.expect_values(self.value_size)
            self._conns[i] = r

    async def validate(self) -> None:
        await asyncio.gather(*(_ping(c, self.label, CONNECT_TIMEOUT_S) for c in self._conns))

    async def prepare(self) -> None:
        if not self.preload:
            return
        conn = self._conns[0]
        head = b"*3\r\n$3\r\nSET\r\n"
        val = self._val_enc
        for start in range(0, self.keyspace, PRELOAD_BATCH):
            stop = min(start + PRELOAD_BATCH, self.keyspace)
            payload = b"".join(head + self._key_enc(i) + val for i in range(start, stop))
            try:
                replies = await conn.call(payload, stop - start)
            except RequestError as exc:
                raise ServiceError(f"preloading redis at {self.label} failed: {exc.message}") from None
            for r in replies:
                if isinstance(r, ReplyError):
                    raise ServiceError(f"preloading redis at {self.label} failed: "
                                       f"{endpoints.scrub(r, conn._secret)[:160]}")

    async def set_many(self, pairs: list[tuple[bytes, bytes]]) -> None:
        """SET every (key, value), PRELOAD_BATCH per round trip, outside any measurement (a
        pipeline's corpus); ServiceError on failure."""
        conn = self._conns[0]
        for start in range(0, len(pairs), PRELOAD_BATCH):
            batch = pairs[start:start + PRELOAD_BATCH]
            try:
                replies = await conn.call(b"".join(encode_command(b"SET", k, v) for k, v in batch),
                                          len(batch))
            except RequestError as exc:
                raise ServiceError(f"loading redis at {self.label} failed: {exc.message}") from None
            bad = [r for r in replies if isinstance(r, ReplyError)]
            if bad:
                raise ServiceError(f"loading redis at {self.label} failed: "
                                   f"{endpoints.scrub(bad[0], conn._secret)[:160]}")

    async def mget(self, worker: int, keys: list[bytes]) -> tuple[tuple, list]:
        """One MGET on `worker`'s connection (a pipeline's fetch stage): (the result tuple with
        op "mget", the values, None for a missing key; [] on failure). t_end is taken when
        the awaiting coroutine resumes, one event-loop step after the reply's bytes."""
        conn = self._conns[worker]
        cmd = encode_command(b"MGET", *keys)
        try:
            replies = await conn.call(cmd, 1)
        except RequestError as exc:
            return ("mget", False, exc.type, exc.message[:200], len(cmd), None, None, now_ns()), []
        t_end = now_ns()
        values = replies[0]
        if isinstance(values, ReplyError) or not isinstance(values, list):
            return ("mget", False, "RedisError", endpoints.scrub(str(values), conn._secret)[:200],
                    len(cmd), None, None, t_end), []
        return ("mget", True, None, None, len(cmd), sum(len(v) for v in values if v), None,
                t_end), values

    async def shutdown(self) -> None:
        for c in self._conns:
            if c is not None:
                c.close()

    @classmethod
    async def probe(cls, endpoint: str, timeout_s: float, secrets: dict | None = None) -> None:
        ep = parse_endpoint(endpoint, secrets)
        try:
            conn = await _connect(ep, timeout_s)
        except RequestError as exc:
            raise ServiceError(exc.message) from None
        try:
            await _ping(conn, ep.label, timeout_s)
        finally:
            conn.close()

    def describe(self) -> dict:
        return {
            "kind": "redis",
            "protocol": "RESP2",
            "implementation": "aifb asyncio.Protocol client on uvloop (no redis-py)",
            "in_flight_per_connection": 1,
            "endpoint": repr(self._ep),
            "ops": self.ops,
            "value_size": self.value_size,
            "keyspace": self.keyspace,
            "key_format": f"{self.key_prefix}{{index:012d}}",
            "preload": self.preload,
            "bytes": "payload: the SET value out, the GET value in (RESP framing excluded)",
        }

    # -- per request -------------------------------------------------------------------
    def start(self, worker: int, done) -> None:
        conn = self._conns[worker]
        rnd = self._rnds[worker]
        if self._get_only:   # one draw, a pre-encoded command
            cmd = self._get_cmds[int(rnd() * self.keyspace)]
            op = "get"
            bytes_out = 0
        elif self.p_get >= 1.0 or rnd() < self.p_get:
            k = int(rnd() * self.keyspace)
            cmd = self._get_cmds[k] if self._get_cmds is not None else (
                b"*2\r\n$3\r\nGET\r\n" + self._key_enc(k))
            op = "get"
            bytes_out = 0
        else:
            k = int(rnd() * self.keyspace)
            cmd = b"*3\r\n$3\r\nSET\r\n" + (self._key_encs[k] if self._key_encs is not None
                                             else self._key_enc(k)) + self._val_enc
            op = "set"
            bytes_out = self.value_size
        tr = conn.transport
        if tr is None or conn.broken:
            self._loop.call_soon(done, (op, False, "ConnectionError",
                                        (conn.reason or f"not connected to {self.label}")[:200],
                                        bytes_out, None, None, now_ns()))
            return
        conn.op = op
        conn.bytes_out = bytes_out
        conn.cb = done
        tr.write(cmd)

    def abort(self, worker: int) -> str | None:
        conn = self._conns[worker]
        op = conn.op if conn.cb is not None else None
        conn.cb = None
        conn.broken = True
        conn.reason = f"connection to {self.label} dropped after a timed-out request"
        if conn.transport is not None:
            conn.transport.abort()
        return op

    def connected(self, worker: int) -> bool:
        conn = self._conns[worker]
        return not conn.broken and conn.transport is not None

    async def reconnect(self, worker: int) -> None:
        old = self._conns[worker]
        if old is not None:
            old.close()
        conn = await _connect(self._ep, CONNECT_TIMEOUT_S)
        conn.expect_values(self.value_size)
        self._conns[worker] = conn
