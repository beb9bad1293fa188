"""FAKE Redis (RESP2) servers with exactly known reply times. Not a Redis: they keep no data.

For what a real server cannot show: exact service times, replies that never come, connections
that differ in speed by a known factor (the known-answer test of a shared `requests: N` over
several load processes), a latency that grows with the open connections (a known capacity), and
the known-latency benchmark (benchmarks/known_latency.py). Every test and benchmark fake Redis is
this one protocol, `FakeRedis`, with the options its user needs:

    PING -> +PONG; AUTH, SELECT, SET, ... -> +OK at once; GET -> `value` after the delay:
    delay_s      seconds, or a callable giving this reply's delay (e.g. from `Connections.open`)
    exact        True: the reply leaves at that perf_counter instant or just after (timing.py);
                 False: loop.call_later (cheaper, up to 1 ms early)
    hang         GETs are never answered (timeouts)
    connections  a `Connections` counting the connections open now (shared by all of a server's)
    scheduler    replies handed to an outside scheduler (`add(due_ns, t_recv_ns, transport)`,
                 `draw() -> delay_ns`), which also answers DELAYSTATS (`stats()`, as JSON) and
                 DELAYRESET (`reset()`): the known-latency benchmark's timerfd scheduler

Servers:

    with serve_in_thread(delays=(0.002, 0.008)) as endpoint:   # "redis://127.0.0.1:PORT"
        ...      # its own loop in a thread; the i-th connection gets delays[i % len(delays)]
    server, endpoint = await start(delay_s=0.010, exact=True)  # on the running loop
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time

from aifb.clients.redis import parse_reply
from fakes.timing import call_at_instant

VALUE = b"v" * 10


class Connections:
    """How many connections are open now on the servers whose FakeRedis share this object."""

    def __init__(self):
        self.open = 0


class FakeRedis(asyncio.Protocol):
    def __init__(self, delay_s=0.0, *, exact: bool = False, hang: bool = False,
                 value: bytes = VALUE, connections: Connections | None = None, scheduler=None):
        self.delay_s, self.exact, self.hang, self.value = delay_s, exact, hang, value
        self.connections, self.scheduler = connections, scheduler
        self.buf = b""
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:  # asyncio and uvloop set it already; a timing fake must not rely on it
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.connections is not None:
            self.connections.open += 1

    def connection_lost(self, exc):
        if self.connections is not None:
            self.connections.open -= 1

    def _send(self, reply: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(reply)

    def data_received(self, data):
        t_recv = time.perf_counter_ns()
        self.buf += data
        while (r := parse_reply(self.buf)) is not None:
            cmd, pos = r
            self.buf = self.buf[pos:]
            name = cmd[0].upper()
            if name == b"GET":
                self._get(t_recv)
            elif self.scheduler is not None and name == b"DELAYSTATS":
                text = json.dumps(self.scheduler.stats()).encode()
                self._send(b"$%d\r\n%b\r\n" % (len(text), text))
            elif self.scheduler is not None and name == b"DELAYRESET":
                self.scheduler.reset()
                self._send(b"+OK\r\n")
            else:
                self._send(b"+PONG\r\n" if name == b"PING" else b"+OK\r\n")

    def _get(self, t_recv_ns: int) -> None:
        if self.hang:
            return
        if self.scheduler is not None:
            self.scheduler.add(t_recv_ns + self.scheduler.draw(), t_recv_ns, self.transport)
            return
        reply = b"$%d\r\n%b\r\n" % (len(self.value), self.value)
        delay = self.delay_s() if callable(self.delay_s) else self.delay_s
        if not delay:
            self._send(reply)
        elif self.exact:
            call_at_instant(time.perf_counter() + delay, self._send, reply)
        else:
            asyncio.get_running_loop().call_later(delay, self._send, reply)


async def start(**kw):
    """A FakeRedis(**kw) server on a free loopback port of the running loop: (server, endpoint)."""
    server = await asyncio.get_running_loop().create_server(lambda: FakeRedis(**kw),
                                                           "127.0.0.1", 0)
    return server, f"redis://127.0.0.1:{server.sockets[0].getsockname()[1]}"


@contextlib.contextmanager
def serve_in_thread(delays=(0.0,), **kw):
    """A FakeRedis server on a free loopback port, on its own event loop in a thread; the i-th
    accepted connection answers GETs after delays[i % len(delays)] (other options: **kw of
    FakeRedis). Yields its endpoint and stops it on exit."""
    accepted = [0]

    def factory():
        i = accepted[0]
        accepted[0] += 1
        return FakeRedis(delays[i % len(delays)], **kw)

    ready = threading.Event()
    box: dict = {}

    def run():
        loop = asyncio.new_event_loop()
        box["loop"] = loop
        server = loop.run_until_complete(loop.create_server(factory, "127.0.0.1", 0))
        box["port"] = server.sockets[0].getsockname()[1]
        ready.set()
        try:
            loop.run_forever()
        finally:
            server.close()
            loop.run_until_complete(server.wait_closed())
            loop.close()

    t = threading.Thread(target=run, name="fake-redis", daemon=True)
    t.start()
    assert ready.wait(10), "the fake Redis did not start"
    try:
        yield f"redis://127.0.0.1:{box['port']}"
    finally:
        box["loop"].call_soon_threadsafe(box["loop"].stop)
        t.join(10)
