"""FAKE client kind for engine unit tests: requests complete in-process, no server, no socket.

The engine's logic (phases, modes, arrivals, stop conditions, timeouts, records) needs only "a
client that answers"; this one answers after a known delay, and fails or hangs on request, so
those tests run without a redis-server. Register it for a test with the `memory_kind` fixture
(conftest.py; it uses `register_kind`, which restores the registries afterwards). Configured
through the workload, like every client:

    delay_s     seconds each request takes (0: it completes on the next loop turn)
    exact       True (default): never earlier than delay_s (tests/fakes/timing.py); False: asyncio.sleep
    fail_every  N: every N-th request of a client fails (error type "Injected"); 0: none
    hang_every  N: every N-th request of a client never completes (the engine's timeout ends it)
    op          the op name recorded ("get")
    value_size  bytes_in of a completed request (10)
"""

from __future__ import annotations

import asyncio
import time

from aifb.clients.base import CoroutineClient, RequestError
from aifb.clock import now_ns
from fakes.timing import call_at_instant


class NoServerClient(CoroutineClient):
    """The lifecycle of a client without a server: nothing to open, check, preload or close.
    Test clients subclass it and write only `request` (and `build`)."""

    async def startup(self, connections):
        pass

    async def validate(self):
        pass

    async def prepare(self):
        pass

    async def shutdown(self):
        pass

    def describe(self):
        return {"protocol": "none"}


class MemoryClient(NoServerClient):
    def __init__(self, endpoint: str, workload: dict, seed: int, secrets: dict | None = None):
        super().__init__(endpoint, workload, seed, secrets)
        self.delay_s = float(workload.get("delay_s", 0.0))
        self.exact = bool(workload.get("exact", True))
        self.fail_every = int(workload.get("fail_every", 0))
        self.hang_every = int(workload.get("hang_every", 0))
        self.op = str(workload.get("op", "get"))
        self.value_size = int(workload.get("value_size", 10))
        self.n = 0

    def describe(self):
        return {"protocol": "memory", "delay_s": self.delay_s}

    def _op_name(self, worker):
        return self.op

    async def request(self, worker):
        self.n += 1
        n = self.n
        loop = asyncio.get_running_loop()
        if self.hang_every and n % self.hang_every == 0:
            await loop.create_future()  # never set: only the engine's timeout ends it
        if self.delay_s and self.exact:
            due = loop.create_future()
            call_at_instant(time.perf_counter() + self.delay_s,
                            lambda: due.done() or due.set_result(None))  # done: cancelled
            await due
        else:
            await asyncio.sleep(self.delay_s)
        if self.fail_every and n % self.fail_every == 0:
            raise RequestError("Injected", f"request {n} fails (fail_every={self.fail_every})")
        return (self.op, True, None, None, 0, self.value_size, None, now_ns())
