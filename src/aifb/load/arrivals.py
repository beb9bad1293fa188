"""Open-loop arrivals: each client's planned send instants (seeded Poisson, constant, or its
share of a trace), the follow-up requests its client plans (a conversation's next turn, see
aifb.clients.base, "Follow-ups"), and how the event loop is woken for them (a Linux timerfd at
the planned ns; elsewhere a task that sleeps, then yields until due). Driven by
aifb.load.engine."""

from __future__ import annotations

import asyncio
import heapq
import random

from aifb.clock import now_ns
from aifb.load.figures import G


class TimerFd:
    """A Linux timerfd armed at absolute CLOCK_MONOTONIC times (= perf_counter_ns): the event
    loop wakes within tens of microseconds of an arrival, where loop timers have 1 ms
    resolution, and without spinning. Built with ctypes (os.timerfd_* is Python 3.13+)."""

    _libc = None

    def __init__(self):
        import ctypes
        import os

        cls = type(self)
        if cls._libc is None:
            class _TS(ctypes.Structure):
                _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]

            class _ITS(ctypes.Structure):
                _fields_ = [("it_interval", _TS), ("it_value", _TS)]

            libc = ctypes.CDLL(None, use_errno=True)
            libc.timerfd_create  # noqa: B018  (AttributeError where there is none)
            cls._libc, cls._ITS, cls._byref = libc, _ITS, ctypes.byref
        self._os = os
        self.fd = cls._libc.timerfd_create(1, os.O_NONBLOCK | os.O_CLOEXEC)  # CLOCK_MONOTONIC
        if self.fd < 0:
            raise OSError("timerfd_create failed")
        self._spec = cls._ITS()
        self._ref = cls._byref(self._spec)
        self._settime = cls._libc.timerfd_settime

    def arm(self, t_ns: int) -> None:
        v = self._spec.it_value
        v.tv_sec, v.tv_nsec = divmod(max(t_ns, 1), G)
        if self._settime(self.fd, 1, self._ref, None) != 0:  # TFD_TIMER_ABSTIME
            raise OSError("timerfd_settime failed")

    def clear(self) -> None:
        try:
            self._os.read(self.fd, 8)
        except BlockingIOError:
            pass

    def close(self) -> None:
        if self.fd >= 0:
            self._os.close(self.fd)
            self.fd = -1


SLEEP_CAP_NS = 5_000_000  # no timerfd: a follow-up planned during a sleep waits at most this


class Arrivals:
    """One client's open-loop arrival process (seeded Poisson or constant gaps at rate_c, or a
    trace) and its client's planned follow-ups, both sent at their planned t_sched."""

    __slots__ = ("eng", "cs", "t", "gap", "timer", "followups", "n_followups", "armed")

    def __init__(self, eng, cs):
        """eng: the aifb.load.engine.Engine; cs: the ClientState of the client it serves."""
        self.eng = eng
        self.cs = cs
        rate_c = eng.rate / eng.n_clients_total   # the rate is over all clients of all processes
        mean_ns = G / rate_c
        if eng.arrival == "trace":
            # this client's share of the trace (aifb.clients.llm.trace): requests ci, ci + n, ci + 2n, ...
            times = iter(eng.trace_ns[cs.ci::eng.n_clients_total])
            last = [next(times, None)]
            never = 10 ** 15          # after the trace's last request: no more arrivals

            def gap() -> int:
                t = next(times, None)
                prev, last[0] = last[0], t
                return never if t is None or prev is None else t - prev
            self.t = eng.t_load_start + (never if last[0] is None else last[0])
        elif eng.arrival == "poisson":
            rng = random.Random(f"aifb-arrivals:{eng.seed}:{cs.ci}")
            expo = rng.expovariate

            def gap() -> int:
                return int(expo(rate_c) * G)
            self.t = eng.t_load_start + gap()
        else:
            k = [0]

            def gap() -> int:  # exact on average: the n-th arrival at int(n * mean)
                k[0] += 1
                return int(mean_ns * k[0]) - int(mean_ns * (k[0] - 1))
            self.t = eng.t_load_start + int(mean_ns * cs.ci / eng.n_clients_total)
        self.gap = gap
        self.timer = None
        self.followups: list = []     # heap of (t_sched, n, token): planned, not yet due
        self.n_followups = 0
        self.armed = 0                # the instant the timerfd is armed at

    # -- follow-ups (the client's hook) -------------------------------------------------
    def follow_up(self, t_sched: int, token) -> None:
        """One more request of this client at t_sched (ns, now_ns() clock) carrying token:
        sent on a free worker when due, or queued with its t_sched kept. Set as the client's
        `follow_up` for the length of the load; after the load's end it plans nothing."""
        if not self.eng.running:
            return
        if t_sched <= now_ns():
            self.send_follow_up(t_sched, token)
            return
        self.n_followups += 1
        heapq.heappush(self.followups, (t_sched, self.n_followups, token))
        if self.timer is not None and t_sched < self.armed:
            self.arm()

    def send_follow_up(self, t_sched: int, token) -> None:
        cs = self.cs
        if cs.free:
            cs.free.pop().issue_follow_up(t_sched, token)
        else:
            cs.fu_backlog.append((t_sched, token))

    def next_due(self) -> int:
        fu = self.followups
        return min(self.t, fu[0][0]) if fu else self.t

    def dispatch_due(self) -> None:
        cs = self.cs
        free = cs.free
        backlog = cs.backlog
        fu = self.followups
        now = now_ns()
        t = self.t
        while True:
            if fu and fu[0][0] <= now and fu[0][0] <= t:
                t_fu, _, token = heapq.heappop(fu)
                self.send_follow_up(t_fu, token)
                continue
            if t > now:
                break
            if free:
                s = free.pop()
                s.t_sched = t
                s.issue()
            else:
                backlog.append(t)
            t += self.gap()
        self.t = t

    def start(self, loop) -> asyncio.Task | None:
        """Drive by timerfd where there is one, else by a sleeping (then yielding) task."""
        try:
            self.timer = TimerFd()
        except (OSError, AttributeError):
            self.timer = None
            return loop.create_task(self.run_sleeping())
        loop.add_reader(self.timer.fd, self.on_timer)
        self.arm()
        return None

    def arm(self) -> None:
        self.armed = self.next_due()
        self.timer.arm(self.armed)

    def on_timer(self) -> None:
        if self.eng.running:
            self.dispatch_due()
            self.arm()  # re-arming also resets the expiration count: no read needed
        else:
            self.timer.clear()

    def stop(self, loop) -> None:
        if self.timer is not None:
            loop.remove_reader(self.timer.fd)
            self.timer.close()
            self.timer = None

    async def run_sleeping(self) -> None:
        while self.eng.running:
            self.dispatch_due()
            wait = self.next_due() - now_ns()
            if getattr(self.cs.client, "follow_up", None) is not None:  # one may come meanwhile
                wait = min(wait, SLEEP_CAP_NS)
            if wait > 2_000_000:
                await asyncio.sleep((wait - 1_000_000) / G)
            else:
                await asyncio.sleep(0)

