"""The client contract the load engine drives: one class per protocol, registered by `kind`.

Lifecycle (all async, called by the engine in this order):

    c = Client(endpoint, workload, seed, secrets)   # parse only; no I/O, no password in str()
    await c.startup(connections)     # open `connections` connections (worker i owns connection i)
    await c.validate()               # a real request; ServiceError naming the endpoint on failure
    await c.prepare()                # preload data (called on one client only)
    ... c.start(worker, done) ...    # the per-request path, see below
    await c.shutdown()               # close everything; idempotent, never raises

The per-request path is callback based, so that a fast client costs no coroutine, task or
future per request:

    c.start(worker, done)   send one request on `worker`'s connection and return at once; later,
                            from the event loop (never synchronously inside start()), call
                            done(result) exactly once, unless abort(worker) came first.
                            start() may return the t_start (now_ns()) it took itself after
                            building the request (prompt, body, signature, payload), just
                            before handing it to the transport; the engine then records that
                            instead of its own stamp, so client-side preparation is never part
                            of a latency, TTFT or E2EL. None: the engine's stamp stands.
    c.abort(worker)         give up on the in-flight request (the engine records the timeout);
                            done must not be called for it afterwards; the connection may close.
                            Returns the op name of the aborted request (None if none).
    c.connected(worker)     False once the worker's connection is known to be broken.
    await c.reconnect(worker)   replace the worker's connection; raise RequestError (or OSError,
                            TimeoutError) on failure - the engine records it and backs off.

`result` is a plain tuple (cheaper than any object), in this order (see the R_* indices):

    (op, ok, error_type, error_message, bytes_out, bytes_in, t_first_ns, t_end_ns)

An optional 9th element is a dict of service-specific record fields (LLM prompt_tokens,
output_tokens, token_source; vector-search recall; ...) written into the record as they are,
except `chunk_times`: a list of now_ns() values, written as seconds since t0.

op is the operation name ("get"); error_type/error_message are None when ok; bytes_* count
payload bytes (None where meaningless); t_first_ns is the first byte/token time or None;
t_end_ns is `aifb.clock.now_ns()` taken when the response was complete (or the error seen).
Service-level failures (error replies, a lost connection) are results with ok=False, never
exceptions. Messages are short and never contain secrets.

Follow-ups (open loop only): a client may plan one more request at an instant of its choosing,
e.g. a conversation's next turn at (this turn's t_end + think time). A client that can declares
an attribute `follow_up = None`; for an open-loop load the engine sets it to a callable

    c.follow_up(t_sched_ns, token)   plan one request of this client at t_sched_ns (now_ns()
                            clock). It is sent like an arrival of the load.rate process: on a
                            free worker when due, else queued keeping t_sched (the earlier
                            planned first), so its recorded t_sched is the planned instant and
                            any lateness counts in its latency. Just before its start(), the
                            engine calls
    c.adopt(worker, token)  the next start() on `worker` is the follow-up carrying token.

and back to None when the load ends. Closed loop leaves it None (the client then waits inside
its own request instead). A follow-up due after the load stops is never sent; one queued past
the timeout is recorded as a Timeout (not sent) and its token dropped.

Coroutine-style clients (aiohttp and friends) subclass `CoroutineClient` and implement only
`async request(worker) -> result`; it provides start/abort/connected/reconnect on top. A client
whose requests take work to build implements `build(worker) -> req` (everything the request
needs: prompt and JSON body, signature, payload) and `async request(worker, req)`; the adapter
builds first and stamps t_start after, so that work never counts in a latency.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Callable, ClassVar, Protocol, runtime_checkable

from aifb.clock import now_ns
from aifb.errors import ServiceError

# Result tuple layout.
R_OP, R_OK, R_ERR_TYPE, R_ERR_MSG, R_BYTES_OUT, R_BYTES_IN, R_T_FIRST, R_T_END = range(8)

Result = tuple  # (op, ok, err_type, err_msg, bytes_out, bytes_in, t_first_ns, t_end_ns)
Done = Callable[[Result], None]


class RequestError(Exception):
    """A failed request or connection attempt, as it goes into a record: error type + message."""

    def __init__(self, type_: str, message: str):
        super().__init__(message)
        self.type = type_
        self.message = message


@runtime_checkable
class Client(Protocol):
    kind: ClassVar[str]

    def __init__(self, endpoint: str, workload: dict, seed: int,
                 secrets: dict | None = None) -> None: ...

    async def startup(self, connections: int) -> None: ...
    async def validate(self) -> None: ...
    async def prepare(self) -> None: ...
    async def shutdown(self) -> None: ...

    @classmethod
    async def probe(cls, endpoint: str, timeout_s: float) -> None: ...

    def describe(self) -> dict: ...

    def start(self, worker: int, done: Done) -> None: ...
    def abort(self, worker: int) -> str | None: ...
    def connected(self, worker: int) -> bool: ...
    async def reconnect(self, worker: int) -> None: ...


class OpMix:
    """A workload's `ops:` weights (e.g. {get: 0.9, set: 0.1}): checked, normalised to sum to 1
    (in name order, so a seeded draw picks the same op on every machine), and drawn from."""

    __slots__ = ("weights", "_cum")

    def __init__(self, ops, supported: tuple, where: str):
        """where: the field's name in messages, e.g. "redis workload.ops"."""
        if not isinstance(ops, dict):
            raise ServiceError(f"{where}: expected a mapping of operation to weight, got {ops!r}")
        unknown = sorted(set(ops) - set(supported))
        if unknown:
            raise ServiceError(f"{where}: unsupported operation(s) {unknown} (supported: "
                               f"{', '.join(supported)})")
        try:
            weights = {k: float(v) for k, v in ops.items() if float(v) > 0}
        except (TypeError, ValueError):
            raise ServiceError(f"{where}: weights must be numbers, got {ops!r}") from None
        total = sum(weights.values())
        if total <= 0:
            raise ServiceError(f"{where}: the weights sum to zero")
        self.weights = {k: v / total for k, v in sorted(weights.items())}
        cum, acc = [], 0.0
        for k, v in self.weights.items():
            acc += v
            cum.append((acc, k))
        cum[-1] = (2.0, cum[-1][1])  # no float gap at the top
        self._cum = cum

    def share(self, op: str) -> float:
        return self.weights.get(op, 0.0)

    def pick(self, u: float) -> str:
        """The op for a uniform draw u in [0, 1)."""
        for edge, op in self._cum:
            if u < edge:
                return op
        return self._cum[-1][1]


def error_result(op: str, type_: str, message: str, t_end_ns: int | None = None,
                 bytes_out: int | None = None) -> Result:
    return (op, False, type_, message, bytes_out, None, None,
            now_ns() if t_end_ns is None else t_end_ns)


def new_salt() -> str:
    """A per-run random value (never seeded: two runs of one recipe must differ); the LLM
    clients' cache: cold prefixes every prompt with it (see aifb.load.startup.run_identity)."""
    return secrets.token_hex(4)


class CoroutineClient:
    """Adapter for clients written as `async def request(self, worker) -> result`.

    Costs one task per request, which is fine for services whose requests take milliseconds
    (LLM, HTTP object stores, vector search). Subclasses implement the lifecycle methods and
    `request`; `reconnect` defaults to a no-op (pooled HTTP clients reconnect by themselves).
    """

    kind: ClassVar[str] = "?"

    def __init__(self, endpoint: str, workload: dict, seed: int, secrets: dict | None = None):
        self.endpoint = endpoint
        self.workload = workload
        self.seed = seed
        self._tasks: dict[int, asyncio.Task] = {}

    async def request(self, worker: int) -> Result:  # pragma: no cover - abstract
        raise NotImplementedError

    def _op_name(self, worker: int) -> str:
        return "request"

    def build(self, worker: int):
        """The next request of `worker`, built before t_start (None: nothing to build)."""
        return None

    def adopt(self, worker: int, token) -> None:
        """Open loop: the next request on `worker` is the follow-up `token` (see "Follow-ups");
        only clients that declare `follow_up` are ever asked."""

    def start(self, worker: int, done: Done) -> int | None:
        loop = asyncio.get_running_loop()
        try:
            req = self.build(worker)
        except Exception as exc:  # noqa: BLE001 - a bad request is a failed request
            loop.call_soon(done, error_result(self._op_name(worker), type(exc).__name__,
                                              str(exc)[:200]))
            return None
        t_start = now_ns()
        task = loop.create_task(self.request(worker) if req is None else self.request(worker, req))
        self._tasks[worker] = task

        def finished(t: asyncio.Task, worker=worker) -> None:
            if self._tasks.get(worker) is t:
                del self._tasks[worker]
            if t.cancelled():
                return  # aborted: the engine already recorded it
            exc = t.exception()
            if exc is None:
                done(t.result())
            elif isinstance(exc, RequestError):
                done(error_result(self._op_name(worker), exc.type, exc.message))
            else:
                done(error_result(self._op_name(worker), type(exc).__name__, str(exc)[:200]))

        task.add_done_callback(finished)
        return t_start

    def abort(self, worker: int) -> str | None:
        task = self._tasks.pop(worker, None)
        if task is not None:
            task.cancel()
            return self._op_name(worker)
        return None

    def connected(self, worker: int) -> bool:
        return True

    async def reconnect(self, worker: int) -> None:
        return None
