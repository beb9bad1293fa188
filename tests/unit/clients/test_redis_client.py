"""The RESP2 client: parser units (split buffers, CRLF inside bulk strings, errors, nil), the
connection's fast path fed byte by byte, endpoints/secrets, and the lifecycle against a real
redis-server (plain and with --requirepass)."""

from __future__ import annotations

import asyncio
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aifb.clients import available_kinds, get_client
from aifb.clients.redis import (ProtocolError, RedisClient, RedisConnection, ReplyError,
                                encode_command, parse_endpoint, parse_reply)
from aifb.errors import NotImplementedKind, ServiceError
from support import redis_process, run_async


arun = run_async


# --------------------------------------------------------------------------- parser
def test_parse_each_reply_type():
    assert parse_reply(b"+OK\r\n") == ("OK", 5)
    assert parse_reply(b":-42\r\n") == (-42, 6)
    assert parse_reply(b"$5\r\nhello\r\n") == (b"hello", 11)
    assert parse_reply(b"$0\r\n\r\n") == (b"", 6)
    assert parse_reply(b"$-1\r\n") == (None, 5)
    assert parse_reply(b"*-1\r\n") == (None, 5)
    err, pos = parse_reply(b"-WRONGTYPE Operation against a key\r\n")
    assert isinstance(err, ReplyError) and err.code == "WRONGTYPE" and pos == 36
    assert parse_reply(b"*3\r\n$1\r\na\r\n:7\r\n*1\r\n$-1\r\n") == ([b"a", 7, [None]], 24)


def test_bulk_string_with_crlf_inside():
    data = b"$8\r\na\r\nb\r\n\r\n\r\n"
    assert parse_reply(data) == (b"a\r\nb\r\n\r\n", len(data))


def test_every_split_is_incomplete_until_the_end():
    data = encode_command("x") + b"$8\r\na\r\nb\r\n\r\n\r\n"  # array reply, then a bulk
    first_len = parse_reply(data)[1]
    for cut in range(first_len):
        assert parse_reply(data[:cut]) is None, cut
    for cut in range(first_len, len(data)):
        assert parse_reply(data[:cut], first_len) is None or cut == len(data)


def test_parse_continues_at_pos_and_rejects_garbage():
    data = b"+A\r\n:1\r\n"
    v, p = parse_reply(data)
    assert (v, parse_reply(data, p)) == ("A", (1, 8))
    with pytest.raises(ProtocolError):
        parse_reply(b"?what\r\n")
    with pytest.raises(ProtocolError):
        parse_reply(b"$3\r\nabcXY")  # bulk not followed by CRLF


def test_encode_command():
    assert encode_command("SET", "k", b"v\r\n", 5) == \
        b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\nv\r\n\r\n$1\r\n5\r\n"


resp_values = st.recursive(
    st.one_of(st.binary(max_size=40), st.none(), st.integers(-10**12, 10**12),
              st.text(alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=20)
              .map(lambda s: ("+", s)),
              st.text(alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), min_size=1, max_size=20)
              .map(lambda s: ("-", s))),
    lambda children: st.lists(children, max_size=4), max_leaves=10)


def _enc(v) -> bytes:
    if v is None:
        return b"$-1\r\n"
    if isinstance(v, bytes):
        return b"$%d\r\n%b\r\n" % (len(v), v)
    if isinstance(v, int):
        return b":%d\r\n" % v
    if isinstance(v, tuple):
        return (v[0] + v[1] + "\r\n").encode()
    return b"*%d\r\n" % len(v) + b"".join(_enc(x) for x in v)


def _expect(v):
    if isinstance(v, tuple):
        return v[1]
    if isinstance(v, list):
        return [_expect(x) for x in v]
    return v


@settings(max_examples=200, deadline=None)
@given(st.lists(resp_values, min_size=1, max_size=5), st.data())
def test_stream_of_replies_split_anywhere(values, data):
    stream = b"".join(_enc(v) for v in values)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    buf, out, prev = b"", [], 0
    for cut in cuts + [len(stream)]:
        buf += stream[prev:cut]
        prev = cut
        while True:
            r = parse_reply(buf)
            if r is None:
                break
            out.append(r[0])
            buf = buf[r[1]:]
    assert out == [_expect(v) for v in values]
    assert buf == b""
    errs = [o for o, v in zip(out, values) if isinstance(v, tuple) and v[0] == "-"]
    assert all(isinstance(e, ReplyError) for e in errs)


# --------------------------------------------------------------------------- connection
class FakeTransport:
    def __init__(self):
        self.sent = []
        self.closed = False

    def write(self, data):
        self.sent.append(data)

    def close(self):
        self.closed = True

    abort = close

    def get_extra_info(self, name, default=None):
        return default


def _conn():
    c = RedisConnection("h:1", secret="s3cret")
    c.connection_made(FakeTransport())
    return c


@pytest.mark.parametrize("reply,ok,bytes_in", [
    (b"$5\r\nhello\r\n", True, 5),
    (b"$-1\r\n", True, 0),
    (b"$0\r\n\r\n", True, 0),
    (b"$8\r\na\r\nb\r\n\r\n\r\n", True, 8),
    (b"+OK\r\n", True, 0),
    (b":12\r\n", True, 0),
    (b"*2\r\n$2\r\nab\r\n$-1\r\n", True, 2),
    (b"-ERR wrong password s3cret\r\n", False, None),
])
@pytest.mark.parametrize("value_size", [-1, 0, 5, 8])
def test_connection_fast_path_any_split(reply, ok, bytes_in, value_size):
    """Whatever value size the connection expects (expect_values: a whole reply of that size
    skips the parser), every reply gives the parser's result, however it is split."""
    for chunk in (1, 2, 3, len(reply)):
        got = []
        c = _conn()
        c.expect_values(value_size)
        c.op, c.bytes_out, c.cb = "get", 0, got.append
        for i in range(0, len(reply), chunk):
            assert not got
            c.data_received(reply[i:i + chunk])
        assert len(got) == 1, (chunk, got)
        op, rok, et, em, bo, bi, tf, te = got[0]
        assert (op, rok, bi, tf) == ("get", ok, bytes_in, None)
        assert isinstance(te, int) and c.cb is None and not c.broken
        if not ok:
            assert et == "RedisError" and "s3cret" not in em and "***" in em


def test_connection_extra_bytes_is_a_protocol_error_and_lost_connection_is_reported():
    got = []
    c = _conn()
    c.op, c.bytes_out, c.cb = "get", 0, got.append
    c.data_received(b"+OK\r\n+OK\r\n")
    assert got[0][1] is False and got[0][2] == "ProtocolError" and c.broken
    got.clear()
    c = _conn()
    c.op, c.bytes_out, c.cb = "set", 128, got.append
    c.data_received(b"$10\r\nabc")
    c.connection_lost(ConnectionResetError("reset"))
    assert got[0][:3] == ("set", False, "ConnectionError") and "h:1" in got[0][3]


# --------------------------------------------------------------------------- endpoints, registry
def test_endpoint_parsing_and_secrets_never_shown():
    ep = parse_endpoint("redis://10.0.0.5:6380/3", {"password": "hunter2"})
    assert (ep.host, ep.port, ep.db, ep.password) == ("10.0.0.5", 6380, 3, "hunter2")
    assert "hunter2" not in repr(ep) and ep.label == "10.0.0.5:6380"
    ep = parse_endpoint("redis://10.0.0.5", {"password": "pw", "username": "bench"})
    assert (ep.port, ep.db, ep.username, ep.password) == (6379, 0, "bench", "pw")
    with pytest.raises(ServiceError, match="rediss"):
        parse_endpoint("rediss://h:1")
    c = RedisClient("redis://127.0.0.1:1", {}, seed=1, secrets={"password": "hunter2"})
    assert "hunter2" not in repr(c.describe()) and c.describe()["protocol"] == "RESP2"


def test_registry():
    assert get_client("redis") is RedisClient
    assert "redis" in available_kinds()
    with pytest.raises(NotImplementedKind, match="service kind 'mysql' is not implemented yet"):
        get_client("mysql")


def test_workload_defaults_and_key_format():
    c = RedisClient("redis://127.0.0.1:1", {"ops": {"get": 3, "set": 1}, "value_size": "1KiB"}, 7)
    assert c.ops == {"get": 0.75, "set": 0.25} and c.value_size == 1024
    assert c.keyspace == 10000 and c.key(42) == b"aifb:000000000042" and c.preload
    with pytest.raises(ServiceError, match="unsupported operation"):
        RedisClient("redis://127.0.0.1:1", {"ops": {"del": 1}}, 7)


# --------------------------------------------------------------------------- real server
pytestmark_redis = pytest.mark.redis


async def _one(client, worker=0):
    fut = asyncio.get_running_loop().create_future()
    client.start(worker, fut.set_result)
    return await asyncio.wait_for(fut, 5)


@pytestmark_redis
def test_lifecycle_against_redis(redis_server):
    async def go():
        await RedisClient.probe(redis_server, 2.0)
        c = RedisClient(redis_server, {"ops": {"get": 1, "set": 1}, "keyspace": 300,
                                       "value_size": 100}, seed=3)
        await c.startup(2)
        await c.validate()
        await c.prepare()
        (size,) = await c._conns[1].call(encode_command("DBSIZE"), 1)
        (val,) = await c._conns[1].call(encode_command("GET", c.key(299)), 1)
        results = [await _one(c, w % 2) for w in range(40)]
        await c.shutdown()
        return size, val, results, c

    size, val, results, c = arun(go())
    assert size == 300 and val == c.value and len(val) == 100
    assert {r[0] for r in results} == {"get", "set"}
    for op, ok, et, em, bo, bi, tf, te in results:
        assert ok and et is None and tf is None and isinstance(te, int)
        assert (bo, bi) == ((0, 100) if op == "get" else (100, 0))


@pytestmark_redis
def test_unreachable_endpoint_is_a_clear_service_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ServiceError, match=f"cannot reach redis at 127.0.0.1:{port}: connection refused"):
        arun(RedisClient.probe(f"redis://127.0.0.1:{port}", 1.0))
    c = RedisClient(f"redis://127.0.0.1:{port}", {}, seed=1)
    with pytest.raises(ServiceError, match="connection refused"):
        arun(c.startup(3))


@pytestmark_redis
def test_credentials():
    pw = "hunter2-secret"
    with redis_process("--requirepass", pw) as (port, _):
        arun(RedisClient.probe(f"redis://127.0.0.1:{port}", 2.0, {"password": pw}))

        async def session(endpoint, secrets=None):
            c = RedisClient(endpoint, {"ops": {"get": 1}, "keyspace": 10}, seed=1, secrets=secrets)
            try:
                await c.startup(1)
                await c.validate()
                return await _one(c)
            finally:
                await c.shutdown()

        assert arun(session(f"redis://127.0.0.1:{port}", {"password": pw}))[1] is True
        for endpoint, secrets in ((f"redis://127.0.0.1:{port}", {"password": f"wrong-{pw}"}),
                                  (f"redis://127.0.0.1:{port}", {"password": "nope"}),
                                  (f"redis://127.0.0.1:{port}", None)):
            with pytest.raises(ServiceError) as ei:
                arun(session(endpoint, secrets))
            msg = str(ei.value)
            assert f"redis at 127.0.0.1:{port} rejected the credentials (NOAUTH/WRONGPASS)" in msg
            assert pw not in msg and "nope" not in msg
