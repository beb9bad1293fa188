"""FAKE Redis (RESP2) with exactly known reply delays. Not a Redis: it keeps no data.

For what a real server cannot show: connections that differ in speed by a known factor (the
known-answer test of a shared `requests: N` over several load processes), and exact service
times. PING -> +PONG, AUTH/SELECT/SET/... -> +OK at once; GET -> a 10-byte value after the
delay of its connection: `delays[i % len(delays)]` seconds for the i-th accepted connection.

    with serve_in_thread(delays=(0.002, 0.008)) as endpoint:   # "redis://127.0.0.1:PORT"
        ...
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

from aifb.clients.redis import parse_reply

VALUE = b"v" * 10


class FakeRedis(asyncio.Protocol):
    def __init__(self, delay_s: float):
        self.delay_s = delay_s
        self.buf = b""
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def _send(self, reply: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(reply)

    def data_received(self, data):
        self.buf += data
        loop = asyncio.get_running_loop()
        while True:
            r = parse_reply(self.buf)
            if r is None:
                return
            cmd, pos = r
            self.buf = self.buf[pos:]
            name = cmd[0].upper()
            if name == b"GET":
                reply = b"$%d\r\n%b\r\n" % (len(VALUE), VALUE)
                if self.delay_s:
                    loop.call_later(self.delay_s, self._send, reply)
                else:
                    self._send(reply)
            else:
                self._send(b"+PONG\r\n" if name == b"PING" else b"+OK\r\n")


@contextlib.contextmanager
def serve_in_thread(delays=(0.0,)):
    """A FakeRedis server on a free loopback port, on its own event loop in a thread; yields
    its endpoint and stops it on exit."""
    accepted = [0]

    def factory():
        i = accepted[0]
        accepted[0] += 1
        return FakeRedis(delays[i % len(delays)])

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
    ready.wait(10)
    try:
        yield f"redis://127.0.0.1:{box['port']}"
    finally:
        box["loop"].call_soon_threadsafe(box["loop"].stop)
        t.join(10)
