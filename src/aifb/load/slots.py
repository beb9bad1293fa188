"""One worker ("slot") of the load engine: one connection of one client with at most one request
in flight - issuing it, its completion, its timeout, reconnecting with backoff - and the state
a client's slots share (ClientState: its sequence numbers, free slots, open-loop backlogs).
The per-request path of aifb.load.engine's docstring ("Hot path") runs here: Slot.issue stamps
t_start and calls the client's start(); the client calls Slot.done with its result tuple.
"""

from __future__ import annotations

import asyncio
import collections

from aifb.clients.base import R_OK, R_T_END, RequestError
from aifb.clock import now_ns
from aifb.errors import ServiceError

CONNECT_OP = "connect"   # the op of a failed reconnect attempt's record: not a request


class ClientState:
    __slots__ = ("ci", "client", "seq", "free", "backlog", "fu_backlog", "slots")

    def __init__(self, ci: int, client):
        self.ci = ci
        self.client = client
        self.seq = 0
        self.free: list = []
        self.backlog: collections.deque = collections.deque()      # queued arrivals: t_sched
        self.fu_backlog: collections.deque = collections.deque()   # follow-ups: (t_sched, token)
        self.slots: list = []


class Slot:
    """One worker: one connection of one client, at most one request in flight; `eng` is the
    aifb.load.engine.Engine it belongs to."""

    __slots__ = ("eng", "cs", "ci", "wi", "client", "start", "append", "cb", "seq", "t_start",
                 "t_sched", "busy", "backoff", "reconnecting")

    def __init__(self, eng, cs: ClientState, wi: int):
        self.eng = eng
        self.cs = cs
        self.ci = cs.ci
        self.wi = wi
        self.client = cs.client
        self.start = cs.client.start
        self.append = eng.rows.append
        self.cb = self.done
        self.seq = 0
        self.t_start = 0
        self.t_sched = None
        self.busy = False
        self.backoff = 0.01
        self.reconnecting = None

    # -- issuing ----------------------------------------------------------------------
    def issue(self) -> None:
        cs = self.cs
        self.seq = cs.seq
        cs.seq += 1
        self.busy = True
        self.t_start = now_ns()
        t = self.start(self.wi, self.cb)
        if t is not None:  # the client built its request first and stamped the send itself
            self.t_start = t

    def issue_follow_up(self, t_sched: int, token) -> None:
        """Open loop: the follow-up the client planned (aifb.clients.base, "Follow-ups")."""
        self.t_sched = t_sched
        self.client.adopt(self.wi, token)
        self.issue()

    # -- completions (called by the client, from the event loop) ------------------------
    def done(self, res: tuple) -> None:
        self.append((self.ci, self.wi, self.seq, self.t_sched, self.t_start, res))
        self.busy = False
        eng = self.eng
        if eng.count_target and res[R_T_END] >= eng.warmup_end_ns:
            eng.count_completion(res[R_T_END])
        if not res[R_OK]:
            self.failed()
        elif eng.open_loop:
            self.next_open()
        elif eng.running:
            eng.issue_soon(self)

    def next_open(self) -> None:
        cs = self.cs
        fb = cs.fu_backlog
        if fb and (not cs.backlog or fb[0][0] <= cs.backlog[0]):   # the earlier planned first
            self.issue_follow_up(*fb.popleft())
        elif cs.backlog:
            self.t_sched = cs.backlog.popleft()
            self.issue()
        else:
            cs.free.append(self)

    def done_probation(self, res: tuple) -> None:
        """The first completion after a reconnect: a good reply resets the backoff."""
        self.cb = self.done
        if res[R_OK]:
            self.backoff = 0.01
        self.cb(res)

    def failed(self) -> None:
        eng = self.eng
        if not self.client.connected(self.wi):
            if eng.running or eng.open_loop:
                self.reconnecting = eng.loop.create_task(self.reconnect_loop())
            return
        if eng.open_loop:
            self.next_open()
        elif eng.running:
            self.issue()

    def expire(self, now: int) -> None:
        """The in-flight request passed the timeout: record it, drop the connection."""
        op = self.client.abort(self.wi) or "?"
        self.busy = False
        eng = self.eng
        res = (op, False, "Timeout", f"no reply within {eng.timeout_s:g} s", None, None, None, now)
        self.append((self.ci, self.wi, self.seq, self.t_sched, self.t_start, res))
        if eng.count_target and now >= eng.warmup_end_ns:
            eng.count_completion(now)
        self.failed()

    async def reconnect_loop(self) -> None:
        eng = self.eng
        try:
            while eng.running or (eng.open_loop and (self.cs.backlog or self.cs.fu_backlog)):
                await asyncio.sleep(self.backoff)
                self.backoff = min(self.backoff * 2, 1.0)
                cs = self.cs
                seq = cs.seq
                cs.seq += 1
                eng.n_connect_attempts += 1
                t_start = now_ns()
                try:
                    async with asyncio.timeout(eng.timeout_s):
                        await self.client.reconnect(self.wi)
                except RequestError as exc:
                    res = (CONNECT_OP, False, exc.type, exc.message[:200], None, None, None, now_ns())
                except TimeoutError:
                    res = (CONNECT_OP, False, "Timeout",
                           f"no connection within {eng.timeout_s:g} s", None, None, None, now_ns())
                except ServiceError as exc:
                    res = (CONNECT_OP, False, "ConnectionError", str(exc)[:200], None, None, None,
                           now_ns())
                except OSError as exc:
                    res = (CONNECT_OP, False, "ConnectionError",
                           (exc.strerror or type(exc).__name__)[:200], None, None, None, now_ns())
                else:
                    self.reconnecting = None
                    self.cb = self.done_probation
                    if eng.open_loop:
                        self.next_open()
                    elif eng.running:
                        self.issue()
                    return
                # Recorded (op "connect"), but not a request: no count toward `requests: N`,
                # the error rate or the achieved rate (counted apart, see _phases).
                self.append((self.ci, self.wi, seq, None, t_start, res))
        finally:
            if self.reconnecting is asyncio.current_task():
                self.reconnecting = None
