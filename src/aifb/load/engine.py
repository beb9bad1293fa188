"""The async load engine: N logical clients x C workers, closed or open loop, every request
recorded to requests.jsonl as it completes.

    stats = await run_load(kind="redis", endpoint="redis://127.0.0.1:6379", workload={...},
                           load=aifb.workflow.recipe.load_settings(recipe), seed=42,
                           records_path=Path("results/BM-.../requests.jsonl"), clock=RunClock())

Order of events: create `clients` Client instances, startup(concurrency) + validate() each
(any failure raises ServiceError before a record is written or the file is even opened),
prepare() on client 0, `on_ready(info)`, then load; finally shutdown() of every client, also on
error and cancellation.

Hot path. Requests are callback driven: a worker ("slot") stamps t_start, calls
client.start(worker, done); the client stamps t_end when the reply is complete and calls done
with a result tuple; done appends one row tuple to a list and (closed loop) starts the next
request at once. No coroutine, task, future or dict per request. A flusher task turns rows
into JSON lines every `flush_interval_s` (0.25 s; at most 0.5 s is ever unwritten), in chunks
of FLUSH_CHUNK rows so that the event loop is never blocked for long; each chunk is one write()
of whole lines, issued by the RecordWriter's helper thread so a slow disk cannot stall the loop.
Objects that exist before the load are frozen out of the cyclic GC (gc.freeze) for its length.

Phases go by completion time t_end: < warmup_end -> warmup; <= measure_end -> measure; later
-> cooldown. Duration mode: measure_end = warmup_end + duration_s, new requests stop at
measure_end + cooldown_s, in-flight ones finish (bounded by the timeout) and are recorded.
Requests mode: the N-th completion at/after warmup_end ends the window (exactly N measured
records: rows are counted in completion order, the same order in which they are written).
Over several processes or Slurm client jobs N is shared instead (see RequestShare): each keeps
its load on until all together have completed N, and the window ends then for all.

Open loop (`rate`): each client draws its own arrivals at rate/clients (seeded Poisson or
constant, constant clients staggered); an arrival takes a free worker or waits in the
client's queue when all `concurrency` workers are busy, keeping its planned t_sched (no
coordinated omission). Queued arrivals older than the timeout are recorded as Timeout errors
without being sent. Arrivals are timed with a Linux timerfd at the planned ns (uvloop timers
have 1 ms resolution; this wakes the loop within tens of µs, without spinning); elsewhere a
task sleeps to ~1 ms before the planned time and then yields until it is due. sched_lag_s
(t_start - t_sched over measured requests) shows how well either did.

Failures: a request past timeout_s is recorded as error "Timeout" and its connection dropped;
a broken connection is re-opened with backoff (10 ms doubling to 1 s; reset after the first
good reply), each failed attempt recorded as op "connect"; when every completion has failed
for `unreachable_after_s` (5 s) the run stops with stopped_by="service_unreachable".
Cancellation writes every completed record, closes connections and re-raises.

Processes (`load.processes: P`, default 1): P worker processes each run this engine over a
contiguous block of the clients, started at one common instant on the parent's clock, all
appending whole lines to the one requests.jsonl; load_stats then sums the counts, pools the
scheduling lags, and reports the busiest process's client_cpu and loop_lag_s (every process's
in process_stats). See run_load_processes below. The engine raises its own RLIMIT_NOFILE when
the connections need it. Above ~1,000 busy connections in one process uvloop runs timers and
tasks late (libuv handles up to 48 x 1024 ready events per poll): the engine says so, the
flusher then writes whole batches when it gets a turn, and loop_lag_s shows it.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import hashlib
import inspect
import math
import random
import resource
import signal
import sys
import time
from pathlib import Path

from aifb.clients import get_client
from aifb.clients.base import RequestError, new_salt
from aifb.clock import RunClock, now_ns
from aifb.errors import ServiceError
from aifb.records import PHASES, RecordWriter
from aifb.stats import quantiles_sorted

G = 1_000_000_000
FLUSH_CHUNK = 128  # rows formatted per step of the flusher (~0.15 ms), then the loop runs
STARVED_NS = 20_000_000  # a flusher step that waited longer than this for its turn: loop starved
# Busy connections per process beyond which uvloop's batching delays timers and tasks (libuv
# reads up to 48 x 1024 ready events per poll phase; measured here: 1,000 connections -> loop
# lag p99 18 ms, 2,000 -> 0.77 s). Above it the engine says so and suggests load.processes.
CONNECTIONS_PER_PROCESS = 1000


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def client_seed(seed: int, client: int) -> int:
    """Each logical client's seed, derived from the recipe's seed and its index."""
    return int.from_bytes(hashlib.sha256(f"aifb:{seed}:{client}".encode()).digest()[:6], "big")


def _pct(sorted_vals: list, q: float):
    """Percentile of an ascending list of ns (None when empty), by the method of every other
    figure (aifb.stats.quantiles_sorted: linear interpolation, Hyndman-Fan 7)."""
    if not sorted_vals:
        return None
    return round(quantiles_sorted(sorted_vals, [q])[0])


def _s(ns: int | None) -> float | None:
    return None if ns is None else round(ns / G, 9)


class _TimerFd:
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


class _Arrivals:
    """One client's open-loop arrival process: seeded Poisson or constant gaps at rate_c."""

    __slots__ = ("eng", "cs", "t", "gap", "timer")

    def __init__(self, eng: "_Engine", cs: "_ClientState"):
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

    def dispatch_due(self) -> None:
        cs = self.cs
        free = cs.free
        backlog = cs.backlog
        now = now_ns()
        t = self.t
        while t <= now:
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
            self.timer = _TimerFd()
        except (OSError, AttributeError):
            self.timer = None
            return loop.create_task(self.run_sleeping())
        loop.add_reader(self.timer.fd, self.on_timer)
        self.timer.arm(self.t)
        return None

    def on_timer(self) -> None:
        if self.eng.running:
            self.dispatch_due()
            self.timer.arm(self.t)  # re-arming also resets the expiration count: no read needed
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
            wait = self.t - now_ns()
            if wait > 2_000_000:
                await asyncio.sleep((wait - 1_000_000) / G)
            else:
                await asyncio.sleep(0)


class _ClientState:
    __slots__ = ("ci", "client", "seq", "free", "backlog", "slots")

    def __init__(self, ci: int, client):
        self.ci = ci
        self.client = client
        self.seq = 0
        self.free: list = []
        self.backlog: collections.deque = collections.deque()
        self.slots: list = []


class _Slot:
    """One worker: one connection of one client, at most one request in flight."""

    __slots__ = ("eng", "cs", "ci", "wi", "client", "start", "append", "cb", "seq", "t_start",
                 "t_sched", "busy", "backoff", "reconnecting")

    def __init__(self, eng: "_Engine", cs: _ClientState, wi: int):
        self.eng = eng
        self.cs = cs
        self.ci = cs.ci
        self.wi = wi
        self.client = cs.client
        self.start = cs.client.start
        self.append = eng.rows.append
        self.cb = self.done_open if eng.open_loop else self.done_closed
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

    # -- completions (called by the client, from the event loop) ------------------------
    def done_closed(self, res: tuple) -> None:
        self.append((self.ci, self.wi, self.seq, None, self.t_start, res))
        self.busy = False
        eng = self.eng
        if eng.count_target and res[7] >= eng.warmup_end_ns:
            eng.count_completion(res[7])
        if not res[1]:
            self.failed()
        elif eng.running:
            self.issue()

    def done_open(self, res: tuple) -> None:
        self.append((self.ci, self.wi, self.seq, self.t_sched, self.t_start, res))
        self.busy = False
        eng = self.eng
        if eng.count_target and res[7] >= eng.warmup_end_ns:
            eng.count_completion(res[7])
        if not res[1]:
            self.failed()
        else:
            self.next_open()

    def next_open(self) -> None:
        cs = self.cs
        if cs.backlog:
            self.t_sched = cs.backlog.popleft()
            self.issue()
        else:
            cs.free.append(self)

    def done_probation(self, res: tuple) -> None:
        """The first completion after a reconnect: a good reply resets the backoff."""
        self.cb = self.done_open if self.eng.open_loop else self.done_closed
        if res[1]:
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
            while eng.running or (eng.open_loop and self.cs.backlog):
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
                    res = ("connect", False, exc.type, exc.message[:200], None, None, None, now_ns())
                except TimeoutError:
                    res = ("connect", False, "Timeout",
                           f"no connection within {eng.timeout_s:g} s", None, None, None, now_ns())
                except ServiceError as exc:
                    res = ("connect", False, "ConnectionError", str(exc)[:200], None, None, None,
                           now_ns())
                except OSError as exc:
                    res = ("connect", False, "ConnectionError",
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


# --------------------------------------------------------------------------- shared requests
#
# `requests: N` over several engines (worker processes, Slurm client jobs): N is global. Every
# engine keeps its load on and reports its measured completions every SHARE_TICK_S to the root
# (RequestQuota: the parent process, or the benchmark job's coordinator), which answers every
# tick with "safe" (no end yet as of its time t) or, once the counts add up to N, "end" at its
# time T. The window ends at T for every engine, so no engine idles while others finish their
# share (a per-engine share of N made the window run to the slowest engine's end, under-reporting
# throughput when engines differ in speed). An engine labels a completion `measure` only when
# t_end <= the latest "safe" (or <= T once known), `cooldown` when after T, and holds the rows
# in between (at most a tick or two) so that no label is ever wrong. At least N requests are
# measured: the count reaches N between two ticks, so up to a tick's worth more.
# Times in messages are ns since the run's t0 (each Slurm job's t0 is the benchmark's on its
# own clock, see launch_slurm).

SHARE_TICK_S = 0.01


class RequestShare:
    """One member's link to the root of a shared `requests: N`: report(n) sends the member's
    measured completions up; deliver(kind, t) hands the root's "safe"/"end" to `target(kind, t)`
    (the engine, or a process parent relaying to its workers)."""

    def __init__(self, send):
        self.send = send
        self.target = None

    def report(self, n: int) -> None:
        self.send(n)

    def deliver(self, kind: str, t: int) -> None:
        if self.target is not None:
            self.target(kind, t)


class RequestQuota:
    """The root of a shared `requests: N`: sums the members' reported counts and, every tick,
    broadcasts ("safe", now) or, the first time the sum reaches N, ("end", now); times in ns
    since t0. `broadcast(kind, t)` reaches every member."""

    def __init__(self, n: int, members: int, t0_ns: int, broadcast):
        self.n, self.t0, self.broadcast = int(n), t0_ns, broadcast
        self.counts = [0] * members
        self.end: int | None = None

    def update(self, member: int, count: int) -> None:
        self.counts[member] = max(self.counts[member], int(count))

    def tick(self) -> None:
        now = now_ns() - self.t0
        if self.end is None and sum(self.counts) >= self.n:
            self.end = now
        self.broadcast("end" if self.end is not None else "safe",
                       self.end if self.end is not None else now)

    async def run(self) -> None:
        while True:
            self.tick()
            await asyncio.sleep(SHARE_TICK_S)

    def describe(self) -> dict:
        return {"target": self.n, "members": len(self.counts), "counted": sum(self.counts),
                "tick_s": SHARE_TICK_S,
                "rule": "requests: N shared by every client process/job: each keeps its load on "
                        "until the measured completions of all add up to N; the window ends "
                        "then for all (at least N measured, up to a tick's worth more)"}


class _Engine:
    def __init__(self, clients: list, load: dict, seed: int, writer: RecordWriter,
                 clock: RunClock, log, unreachable_after_s: float, flush_interval_s: float,
                 progress_interval_s: float, client_ids: list[int] | None = None,
                 n_clients_total: int | None = None, progress_cb=None,
                 share: RequestShare | None = None):
        self.loop = asyncio.get_running_loop()
        self.clients = clients
        self.n_clients = len(clients)
        # A worker process drives a share of the clients: their global indices (for records,
        # seeds and open-loop schedules) and the total (the rate is split over all clients).
        self.client_ids = list(client_ids) if client_ids is not None else list(range(len(clients)))
        self.n_clients_total = n_clients_total or len(clients)
        self.progress_cb = progress_cb
        self.conc = int(load.get("concurrency", 1))
        self.rate = load.get("rate")
        self.open_loop = self.rate is not None
        self.arrival = load.get("arrival") or "poisson"
        self.trace_ns = load.get("trace_ns") or []    # arrival: trace (aifb.workflow.recipe.load_settings)
        self.duration_s = load.get("duration_s")
        self.requests = load.get("requests")
        if (self.duration_s is None) == (self.requests is None):
            raise ValueError("load needs exactly one of duration_s and requests")
        self.warmup_s = float(load.get("warmup_s") or 0.0)
        self.cooldown_s = float(load.get("cooldown_s") or 0.0)
        self.timeout_s = float(load.get("timeout_s") or 30.0)
        self.timeout_ns = int(self.timeout_s * G)
        self.seed = seed
        self.writer = writer
        self.clock = clock
        self.t0 = clock.t0_ns
        self.log = log
        self.unreachable_ns = int(unreachable_after_s * G)
        self.flush_interval_s = min(flush_interval_s, 0.5)
        self.progress_interval_s = progress_interval_s

        self.rows: list = []
        self.running = False
        self.count_target = self.requests  # None in duration mode
        # A shared `requests: N` (see RequestShare): count, never end here; the root says when.
        self.share = share if self.requests is not None else None
        self.safe_ns = -1             # shared: completions up to here may be labelled measure
        if self.share is not None:
            self.count_target = math.inf
            self.share.target = self.shared_message
        self.n_counted = 0
        self.warmup_end_ns = 0
        self.measure_end_ns: int | None = None
        self.stop_ns: int | None = None
        self.stopped_by: str | None = None
        self.stop_event = asyncio.Event()

        self.states = [_ClientState(ci, c) for ci, c in zip(self.client_ids, clients)]
        self.slots: list[_Slot] = []
        for cs in self.states:
            for wi in range(self.conc):
                s = _Slot(self, cs, wi)
                cs.slots.append(s)
                self.slots.append(s)

        # flusher state
        self._pending: list | None = None
        self._pending_pos = 0
        self.f_counted = 0            # requests mode: measured rows seen by the flusher
        self.n_by_phase = {"warmup": [0, 0], "measure": [0, 0], "cooldown": [0, 0]}  # [ok, err]
        self.errors_by_type: dict[str, int] = {}
        # Failed reconnect attempts (op "connect" records): kept apart from the requests.
        self.connects_by_phase = {"warmup": 0, "measure": 0, "cooldown": 0}
        self.connect_errors: dict[str, int] = {}
        self.n_connect_attempts = 0
        self.sched_lags: list[int] = []
        self.streak_start: int | None = None
        self.last_rate_mark = (0, 0)
        # windows
        self.cpu_start = None
        self.cpu_end = None
        self.lags: list[int] = []
        self.tasks: list[asyncio.Task] = []
        self.handles: list[asyncio.TimerHandle] = []
        self.arrival_procs: list[_Arrivals] = []

    # -- requests mode --------------------------------------------------------------------
    def count_completion(self, t_end: int) -> None:
        self.n_counted += 1
        if self.n_counted == self.count_target:
            self._end_window(t_end)

    def _end_window(self, t_end: int) -> None:
        """Requests mode: the window ends at t_end (ns); the load stops after the cooldown."""
        self.measure_end_ns = t_end
        self.cpu_end = self._cpu_sample()
        self.count_target = None
        self.stop_ns = t_end + int(self.cooldown_s * G)
        if self.stopped_by is None:
            self.stopped_by = "requests"
        delay = max(0.0, (self.stop_ns - now_ns()) / G)
        self.handles.append(self.loop.call_later(delay, self.stop_event.set))

    # -- a shared requests count ------------------------------------------------------
    def shared_message(self, kind: str, t: int) -> None:
        """The root's "safe" or "end" at t (ns since t0)."""
        t_abs = self.t0 + t
        if kind == "safe":
            self.safe_ns = max(self.safe_ns, t_abs)
            return
        if self.measure_end_ns is None:
            self._end_window(t_abs)

    async def share_reporter(self) -> None:
        last = -1
        while True:
            if self.n_counted != last:
                last = self.n_counted
                self.share.report(last)
            await asyncio.sleep(SHARE_TICK_S)

    def _labelable(self, rows: list) -> int:
        """Shared requests mode, end not known yet: how many rows from the front can be labelled
        (a post-warmup completion after the root's latest "safe" might fall after the end)."""
        if self.measure_end_ns is not None:
            return len(rows)
        wu, safe = self.warmup_end_ns, self.safe_ns
        for i, row in enumerate(rows):
            te = row[5][7]
            if te >= wu and te > safe:
                return i
        return len(rows)

    def _take_rows(self) -> list:
        """The completed rows the flusher may write now (all but the held ones)."""
        rows = self.rows
        n = len(rows) if self.share is None or not self.running else self._labelable(rows)
        batch = rows[:n]
        del rows[:n]
        return batch

    # -- phases + accounting, in completion order ---------------------------------------
    def _phases(self, batch: list) -> list:
        wu = self.warmup_end_ns
        me = self.measure_end_ns
        phases = []
        add = phases.append
        nb = self.n_by_phase
        counting = self.requests is not None and self.share is None
        for row in batch:
            res = row[5]
            te = res[7]
            if te < wu:
                ph = "warmup"
            elif counting:  # the first N request completions (connect attempts are not requests)
                if self.f_counted < self.requests:
                    if res[0] != "connect":
                        self.f_counted += 1
                    ph = "measure"
                else:
                    ph = "cooldown"
            elif me is None:  # shared count before its end (te <= safe), or a cancelled run
                ph = "measure"
            elif te <= me:
                ph = "measure"
            else:
                ph = "cooldown"
            add(ph)
            if res[0] == "connect":  # a failed reconnect attempt, not a request
                self.connects_by_phase[ph] += 1
                if ph == "measure":
                    et = res[2]
                    self.connect_errors[et] = self.connect_errors.get(et, 0) + 1
                if self.streak_start is None:
                    self.streak_start = te
                continue
            if res[1]:
                nb[ph][0] += 1
                self.streak_start = None
            else:
                nb[ph][1] += 1
                et = res[2]
                self.errors_by_type[et] = self.errors_by_type.get(et, 0) + 1
                if self.streak_start is None:
                    self.streak_start = te
            if row[3] is not None and ph == "measure":
                self.sched_lags.append(row[4] - row[3])
        return phases

    def _write(self, batch: list) -> None:
        self.writer.write_rows(batch, self._phases(batch))

    async def flusher(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval_s)
            await self.flush_async()
            self.check_unreachable()

    async def flush_async(self) -> None:
        if not self.rows:
            return
        batch = self._take_rows()
        if not batch:
            return
        self._pending, self._pending_pos = batch, 0
        n = len(batch)
        step = FLUSH_CHUNK
        while self._pending_pos < n:
            i = self._pending_pos
            j = min(n, i + step)
            self._write(batch[i:j])
            self._pending_pos = j
            if j < n:
                t = now_ns()
                await asyncio.sleep(0)
                if now_ns() - t > STARVED_NS:
                    # A starved loop: libuv handles up to 48 x 1024 ready I/O events before it
                    # returns to tasks (with > ~1000 busy connections in one process), so this
                    # task gets a turn rarely; write the rest at once or the rows pile up.
                    step = n
        self._pending = None

    def flush_sync(self) -> None:
        """Write everything completed so far (also the rest of a batch the flusher was in)."""
        if self._pending is not None:
            self._write(self._pending[self._pending_pos:])
            self._pending = None
        if self.rows:
            batch = self.rows.copy()
            self.rows.clear()
            self._write(batch)

    def check_unreachable(self) -> None:
        if (self.streak_start is not None and self.running and self.stopped_by is None
                and now_ns() - self.streak_start >= self.unreachable_ns):
            self.log(f"every request has failed for {self.unreachable_ns / G:g} s: "
                     "stopping the load (service unreachable)")
            self.stopped_by = "service_unreachable"
            self.stop_event.set()

    # -- periodic tasks -------------------------------------------------------------------
    async def ticker(self) -> None:
        """Timeouts of in-flight and queued requests, and progress lines."""
        tick = min(0.05, max(0.001, self.timeout_s / 20))
        next_progress = now_ns() + int(self.progress_interval_s * G)
        while True:
            await asyncio.sleep(tick)
            now = now_ns()
            limit = now - self.timeout_ns
            for s in self.slots:
                if s.busy and s.t_start < limit:
                    s.expire(now)
            if self.open_loop:
                for cs in self.states:
                    bl = cs.backlog
                    while bl and bl[0] < limit:
                        self.expire_queued(cs, bl.popleft(), now)
            if now >= next_progress:
                next_progress += int(self.progress_interval_s * G)
                self.progress(now)

    def expire_queued(self, cs: _ClientState, t_sched: int, now: int) -> None:
        seq = cs.seq
        cs.seq += 1
        res = ("?", False, "Timeout",
               f"not sent: queued {(now - t_sched) / G:.3g} s behind the in-flight cap", None,
               None, None, now)
        self.rows.append((cs.ci, 0, seq, t_sched, now, res))
        if self.count_target and now >= self.warmup_end_ns:
            self.count_completion(now)

    def progress(self, now: int) -> None:
        ok = sum(v[0] for v in self.n_by_phase.values())
        err = sum(v[1] for v in self.n_by_phase.values())
        done = ok + err
        t_prev, n_prev = self.last_rate_mark
        rate = (done - n_prev) / ((now - t_prev) / G) if now > t_prev else 0.0
        self.last_rate_mark = (now, done)
        phase = ("warmup" if now < self.warmup_end_ns else
                 "measure" if self.measure_end_ns is None or now <= self.measure_end_ns else
                 "cooldown")
        if self.progress_cb is not None:  # a worker process: the parent logs the totals
            self.progress_cb(now, ok, err, phase)
            return
        self.log(f"[{(now - self.t_load_start) / G:7.1f} s] {phase:8s} {ok} ok, {err} errors, "
                 f"{rate:,.0f} ops/s")

    async def lag_sampler(self) -> None:
        period = 0.01
        pns = int(period * G)
        while True:
            t = now_ns()
            await asyncio.sleep(period)
            t2 = now_ns()
            if t2 >= self.warmup_end_ns and (self.measure_end_ns is None or t2 <= self.measure_end_ns):
                self.lags.append(max(0, t2 - t - pns))

    @staticmethod
    def _cpu_sample() -> tuple:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        return (now_ns(), time.process_time(), ru.ru_utime, ru.ru_stime)

    def _mark_window_start(self) -> None:
        self.cpu_start = self._cpu_sample()

    def _mark_window_end(self) -> None:
        if self.cpu_end is None:
            self.cpu_end = self._cpu_sample()

    # -- the run --------------------------------------------------------------------------
    async def run(self, stats_out: dict | None, t_load_start_ns: int | None = None) -> dict:
        """Run the load. `t_load_start_ns` (worker processes): start at this planned instant,
        shared by all processes, so that their warmup/measure/stop instants are identical."""
        loop = self.loop
        # Everything allocated so far (modules, clients, pre-encoded commands) goes to the
        # permanent generation: full collections during the load then scan only what the load
        # allocates (measured: gen-2 pauses 5-9 ms -> < 1 ms at ~100k requests/s).
        thawed = gc.get_freeze_count() == 0
        gc.collect()
        gc.freeze()
        if t_load_start_ns is not None:
            try:
                wait = t_load_start_ns - now_ns() - 2_000_000
                if wait > 0:
                    await asyncio.sleep(wait / G)
                while now_ns() < t_load_start_ns:   # the last <= 2 ms: yield until due
                    await asyncio.sleep(0)
            except BaseException:
                self.running = False
                self.stopped_by = "cancelled"
                self.t_load_start = self.warmup_end_ns = t_load_start_ns
                self.writer.close()
                if thawed:
                    gc.unfreeze()
                if stats_out is not None:
                    stats_out.update(self.stats(now_ns()))
                raise
            self.t_load_start = t_load_start_ns
        else:
            self.t_load_start = now_ns()
        self.last_rate_mark = (self.t_load_start, 0)
        self.warmup_end_ns = self.t_load_start + int(self.warmup_s * G)
        if self.duration_s is not None:
            self.measure_end_ns = self.warmup_end_ns + int(self.duration_s * G)
            self.stop_ns = self.measure_end_ns + int(self.cooldown_s * G)
            self.handles.append(loop.call_later((self.measure_end_ns - now_ns()) / G,
                                                self._mark_window_end))
        self.handles.append(loop.call_later(max(0.0, (self.warmup_end_ns - now_ns()) / G),
                                            self._mark_window_start))
        self.running = True
        cancelled = False
        try:
            self.tasks = [loop.create_task(self.flusher()), loop.create_task(self.ticker()),
                          loop.create_task(self.lag_sampler())]
            if self.share is not None:
                self.tasks.append(loop.create_task(self.share_reporter()))
            if self.open_loop:
                for cs in self.states:
                    cs.free = list(reversed(cs.slots))
                    arr = _Arrivals(self, cs)
                    self.arrival_procs.append(arr)
                    task = arr.start(loop)
                    if task is not None:
                        self.tasks.append(task)
            else:
                for s in self.slots:
                    s.issue()
            if self.stop_ns is not None:
                try:
                    async with asyncio.timeout((self.stop_ns - now_ns()) / G):
                        await self.stop_event.wait()
                except TimeoutError:
                    pass
            else:
                await self.stop_event.wait()
            if self.stopped_by is None:
                self.stopped_by = "duration"
            await self._drain()
        except asyncio.CancelledError:
            cancelled = True
            self.stopped_by = "cancelled"
            raise
        finally:
            self.running = False
            t_end = now_ns()
            for a in self.arrival_procs:
                a.stop(loop)
            for t in self.tasks:
                t.cancel()
            for h in self.handles:
                h.cancel()
            for s in self.slots:
                if s.reconnecting is not None:
                    s.reconnecting.cancel()
                if s.busy:  # only after cancellation or a failed drain; not a completed request
                    s.busy = False
                    try:
                        s.client.abort(s.wi)
                    except Exception:
                        pass
            self.flush_sync()
            self.writer.close()
            if thawed:
                gc.unfreeze()
            self._mark_window_end()
            stats = self.stats(t_end)
            if stats_out is not None:
                stats_out.update(stats)
            if cancelled:
                self.log(f"load cancelled: {self.writer.lines} records written")
        return stats

    async def _drain(self) -> None:
        """No new requests; wait for in-flight (and queued) ones, bounded by the timeout."""
        self.running = False
        deadline = now_ns() + self.timeout_ns + int(0.5 * G)
        while now_ns() < deadline:
            if not any(s.busy for s in self.slots) and not any(cs.backlog for cs in self.states):
                break
            await asyncio.sleep(0.001)
        for cs in self.states:
            while cs.backlog:
                self.expire_queued(cs, cs.backlog.popleft(), now_ns())

    def stats(self, t_end_ns: int) -> dict:
        t0 = self.t0
        measure_end = self.measure_end_ns
        if measure_end is None or measure_end > t_end_ns:
            measure_end = max(t_end_ns, self.warmup_end_ns)
        window_ns = max(0, measure_end - self.warmup_end_ns)
        window_s = window_ns / G
        ok_m, err_m = self.n_by_phase["measure"]
        cpu = None
        if self.cpu_start and self.cpu_end and self.cpu_end[0] > self.cpu_start[0]:
            wall = (self.cpu_end[0] - self.cpu_start[0]) / G
            cpu_s = self.cpu_end[1] - self.cpu_start[1]
            cpu = {"cpu_s": round(cpu_s, 6), "user_s": round(self.cpu_end[2] - self.cpu_start[2], 6),
                   "sys_s": round(self.cpu_end[3] - self.cpu_start[3], 6),
                   "wall_s": round(wall, 6), "util_of_one_core": round(cpu_s / wall, 4)}
        lags = sorted(self.lags)
        out = {
            "t_load_start": _s(self.t_load_start - t0),
            "warmup_end": _s(self.warmup_end_ns - t0),
            "measure_end": _s(measure_end - t0),
            "t_load_end": _s(t_end_ns - t0),
            "window_s": round(window_s, 9),
            "mode": "open" if self.open_loop else "closed",
            "clients": self.n_clients,
            "processes": 1,
            "concurrency": self.conc,
            "connections": len(self.slots),
            "requests_issued": sum(cs.seq for cs in self.states) - self.n_connect_attempts,
            "records_written": self.writer.lines,
            "records_by_phase": {ph: v[0] + v[1] for ph, v in self.n_by_phase.items()},
            "measured": {"ok": ok_m, "errors": err_m},
            "errors_by_type": dict(sorted(self.errors_by_type.items())),
            "connect_attempts": {"by_phase": dict(self.connects_by_phase),
                                 "measure_errors_by_type": dict(sorted(self.connect_errors.items()))},
            "stopped_by": self.stopped_by,
            "client_cpu": cpu,
            "loop_lag_s": {"n": len(lags), "period_s": 0.01,
                           "p50": _s(_pct(lags, 0.5)), "p99": _s(_pct(lags, 0.99)),
                           "max": _s(lags[-1] if lags else None)},
        }
        if self.open_loop:
            out.update(_open_loop_stats(sorted(self.sched_lags), self.rate, self.arrival,
                                        ok_m + err_m, window_s))
        return out


FD_MARGIN = 64  # descriptors beside the connections: files, pipes, epoll, timerfds, sockets


def _open_loop_stats(sorted_lags: list, rate, arrival: str, n_measured: int,
                     window_s: float) -> dict:
    """Offered vs achieved rate and the scheduling lag (t_start - t_sched, ns) percentiles."""
    sl = sorted_lags
    return {
        "offered_rate": rate,
        "arrival": arrival,
        "achieved_rate": round(n_measured / window_s, 3) if window_s else None,
        "sched_lag_s": {"n": len(sl), "p50": _s(_pct(sl, 0.5)), "p90": _s(_pct(sl, 0.9)),
                        "p99": _s(_pct(sl, 0.99)), "max": _s(sl[-1] if sl else None),
                        "mean": round(sum(sl) / len(sl) / G, 9) if sl else None},
    }


def raise_nofile_limit(connections: int) -> tuple[int, int]:
    """Make sure this process may hold `connections` sockets (plus a margin): raise the soft
    RLIMIT_NOFILE up to the hard limit, and - as root - the hard limit too (up to
    /proc/sys/fs/nr_open). Returns the (soft, hard) limits in force. Raises ServiceError naming
    `ulimit -n` when the limit cannot be raised far enough."""
    want = connections + FD_MARGIN
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    inf = resource.RLIM_INFINITY
    if soft == inf or want <= soft:
        return soft, hard
    try:
        if hard != inf and want > hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))  # needs CAP_SYS_RESOURCE
        else:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ValueError, OSError):
        if hard != inf and hard > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != inf and want > soft:
        raise ServiceError(
            f"{connections} connections in one client process need about {want} open files, "
            f"but `ulimit -n` is {soft} (hard limit {hard}) and cannot be raised here: raise the "
            "limit, or spread the connections over more processes (load.processes) or client jobs")
    return soft, hard


def _note_connections(n: int, log) -> None:
    if n > CONNECTIONS_PER_PROCESS:
        log(f"note: {n} connections in one process; above ~{CONNECTIONS_PER_PROCESS} busy "
            "connections per process the event loop runs its timers late (see loop_lag_s): "
            f"use load.processes >= {-(-n // CONNECTIONS_PER_PROCESS)} where the cores allow")


def _connections_needed(load: dict, n_clients: int) -> int:
    conc = int(load.get("concurrency", 1))
    timers = n_clients if load.get("rate") is not None else 0  # one timerfd per open-loop client
    return n_clients * conc + timers


def run_identity(identity: dict | None) -> dict:
    """What a client may stamp on its requests: {"benchmark_id", "salt", "client_offset"}.
    benchmark_id names the run in request ids (X-Request-Id); salt is one random value per run
    (LLM cache: cold prefixes every prompt with it), the same in every process and client job;
    client_offset: this job's first global client index. Missing fields get defaults here."""
    out = dict(identity or {})
    out.setdefault("benchmark_id", "aifb")
    if not out.get("salt"):
        out["salt"] = new_salt()
    out.setdefault("client_offset", 0)
    return out


async def _start_clients(kind: str, endpoint: str, workload: dict, load: dict, seed: int,
                         secrets: dict | None, ids, log, started: list,
                         identity: dict | None = None) -> list:
    """Clients `ids` (each seeded by its index), `concurrency` connections each, validated.
    `started` collects every client whose startup began: the caller shuts those down, whatever
    happens. Clients with an `identify(benchmark_id, client, salt)` method get the run's
    identity (run_identity) before startup."""
    cls = get_client(kind)
    conc = int(load.get("concurrency", 1))
    raise_nofile_limit(_connections_needed(load, len(ids)))
    _note_connections(len(ids) * conc, log)
    clients = [cls(endpoint, workload, client_seed(seed, ci), secrets) for ci in ids]
    ident = run_identity(identity)
    total = ident.get("clients_total") or int(load["clients"])
    for ci, c in zip(ids, clients):
        identify = getattr(c, "identify", None)
        if identify is not None:
            identify(ident["benchmark_id"], ident["client_offset"] + ci, ident["salt"],
                     clients=total)
    for c in clients:
        started.append(c)
        await c.startup(conc)
    for c in clients:
        await c.validate()
    return clients


async def _prepare(client) -> dict:
    """The one-off preload (client 0 only), outside any measured window."""
    t_prep = now_ns()
    await client.prepare()
    return {"client": client.describe(), "prepare_s": round((now_ns() - t_prep) / G, 6)}


async def run_load(*, kind: str, endpoint: str, workload: dict, load: dict, seed: int,
                   records_path: Path, clock: RunClock, secrets: dict | None = None,
                   log=_stderr, on_ready=None, stats_out: dict | None = None,
                   unreachable_after_s: float = 5.0, flush_interval_s: float = 0.25,
                   progress_interval_s: float = 5.0, share: RequestShare | None = None,
                   identity: dict | None = None) -> dict:
    """Run one load against `endpoint`; stream records to `records_path`; return load_stats.

    Raises ServiceError (before any record is written) when a client cannot start, validate
    or prepare. On cancellation: completed records are written, connections closed, `stats_out`
    (if given) filled with stopped_by="cancelled", and CancelledError re-raised.
    `on_ready(info)` (sync or async) is called after prepare, just before the load starts,
    with {"client": describe(), "prepare_s": ..., "t_ready": seconds since t0}.

    `load["processes"]` (default 1) > 1 spreads the clients over that many worker processes
    (see run_load_processes); the contract above holds unchanged.
    `share`: this load is one member of a `requests: N` shared with other loads (Slurm client
    jobs; see RequestShare): the window ends when the root says so.
    `identity`: the run's benchmark id, cache salt and client offset (see run_identity).
    """
    identity = run_identity(identity)
    processes = int(load.get("processes") or 1)
    if processes > 1 and int(load["clients"]) > 1:
        return await run_load_processes(
            kind=kind, endpoint=endpoint, workload=workload, load=load, seed=seed,
            records_path=records_path, clock=clock, secrets=secrets, log=log, on_ready=on_ready,
            stats_out=stats_out, unreachable_after_s=unreachable_after_s,
            flush_interval_s=flush_interval_s, progress_interval_s=progress_interval_s,
            processes=processes, share=share, identity=identity)
    if processes > 1:
        log("load.processes > 1 with a single client: one process drives it")
    n_clients = int(load["clients"])
    started: list = []
    try:
        clients = await _start_clients(kind, endpoint, workload, load, seed, secrets,
                                       range(n_clients), log, started, identity)
        info = await _prepare(clients[0])
        info["t_ready"] = _s(now_ns() - clock.t0_ns)
        prepare_s = info["prepare_s"]
        log(f"{kind}: {n_clients} client(s) x {int(load.get('concurrency', 1))} connection(s) "
            "ready" + (f", preloaded in {prepare_s:.2f} s" if prepare_s > 0.01 else ""))
        if on_ready is not None:
            r = on_ready(info)
            if inspect.isawaitable(r):
                await r
        writer = RecordWriter(records_path, clock.t0_ns, background=True)
        try:
            eng = _Engine(clients, load, seed, writer, clock, log, unreachable_after_s,
                          flush_interval_s, progress_interval_s, share=share)
        except BaseException:
            writer.close()
            raise
        stats = await eng.run(stats_out)
        stats["client"] = info["client"]
        stats["prepare_s"] = info["prepare_s"]
        log(f"load done ({stats['stopped_by']}): {stats['records_written']} records, "
            f"{stats['measured']['ok']} ok / {stats['measured']['errors']} errors in the "
            f"{stats['window_s']:.3f} s window")
        return stats
    finally:
        for c in started:
            try:
                await c.shutdown()
            except Exception:
                pass


def run_load_sync(**kw) -> dict:
    """run_load on a fresh uvloop event loop (for scripts and tests)."""
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(run_load(**kw))


# --------------------------------------------------------------------------- processes
#
# `load.processes: P` (> 1): P worker processes, each a full engine on its own uvloop driving a
# contiguous block of the clients (global client indices, seeds and open-loop schedules are
# those of the one-process run). The parent only coordinates:
#
#   spawn P workers (`python -c "...engine._worker_main(FD)"`, a socketpair for messages)
#   -> each: startup + validate its clients -> "ready" (or "error": ServiceError in the parent,
#      before the records file is even opened)
#   -> worker 0 (which holds client 0): prepare -> "prepared"; on_ready(info)
#   -> parent truncates requests.jsonl and sends every worker "go" with one start instant
#      t_load_start (now + START_DELAY), so warmup_end / measure_end / stop are the same
#      CLOCK_MONOTONIC instants in every process (perf_counter_ns is CLOCK_MONOTONIC, one
#      clock for all processes of a host; t0 is the parent's)
#   -> each worker appends its records to the same requests.jsonl (O_APPEND, one write() of
#      whole lines per batch: the kernel serialises O_APPEND writes on a local file system, so
#      batches of different processes never interleave inside a line) and sends "done" with
#      its load_stats and raw samples; the parent merges them.
#
# Requests mode (`requests: N`): N is shared (RequestShare / RequestQuota above): every process
# keeps its load on until all of them together have completed N measured requests; the window
# ends then, for all (at least N measured records, up to a share tick's worth more).
# Stopping: cancellation of run_load (SIGINT/SIGTERM in the runner) sends "stop" to every
# worker, which cancels its engine (completed records are written) and reports; a worker that
# does not finish in time gets SIGTERM, then SIGKILL. A worker also stops on SIGTERM, when its
# socket to the parent closes (parent gone) and - PR_SET_PDEATHSIG - when the parent dies.

START_DELAY_NS = 100_000_000     # "go" -> the common start instant
WORKER_GRACE_S = 5.0             # after "stop": time to write records and report


def _split(n: int, parts: int) -> list[tuple[int, int]]:
    """Contiguous, near-equal [lo, hi) blocks of range(n)."""
    return [(n * k // parts, n * (k + 1) // parts) for k in range(parts)]


class _Channel:
    """Pickled messages between the parent and a worker over one socket (8-byte length +
    pickle), read by the event loop as bytes arrive. The event loop makes the socket
    non-blocking (libuv does), so frames are reassembled here; a send switches the socket to
    blocking for the length of one frame (messages from the parent are small; a worker's final
    report may be megabytes, which the parent's reader drains as it comes). Messages go to
    `handler(msg)` when it returns True, else to the queue as (tag, msg); EOF (the peer is gone)
    is the message ("eof",)."""

    def __init__(self, fd: int, loop, queue: asyncio.Queue, tag=None, handler=None):
        self.fd, self.loop, self.queue, self.tag, self.handler = fd, loop, queue, tag, handler
        self.closed = False
        self.buf = bytearray()
        loop.add_reader(fd, self._readable)

    def _deliver(self, msg) -> None:
        if self.handler is None or not self.handler(msg):
            self.queue.put_nowait((self.tag, msg))

    def _readable(self) -> None:
        import os
        import pickle

        eof = False
        while True:
            try:
                data = os.read(self.fd, 1 << 20)
            except BlockingIOError:
                break
            except OSError:
                eof = True
                break
            if not data:
                eof = True
                break
            self.buf += data
        buf = self.buf
        while len(buf) >= 8:
            n = int.from_bytes(buf[:8], "little")
            if len(buf) < 8 + n:
                break
            msg = pickle.loads(bytes(buf[8:8 + n]))
            del buf[:8 + n]
            self._deliver(msg)
        if eof:
            self._stop_reading()
            self._deliver(("eof",))

    def _stop_reading(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                self.loop.remove_reader(self.fd)
            except (ValueError, OSError):
                pass

    def send(self, *msg) -> bool:
        import os
        import pickle

        data = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
        frame = memoryview(len(data).to_bytes(8, "little") + data)
        try:
            blocking = os.get_blocking(self.fd)
            os.set_blocking(self.fd, True)
            try:
                while frame:
                    frame = frame[os.write(self.fd, frame):]
            finally:
                os.set_blocking(self.fd, blocking)
            return True
        except OSError:
            return False

    def close(self) -> None:
        import os

        self._stop_reading()
        if self.fd >= 0:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = -1


def _pool_lags(raw_parts: list[bytes]) -> list[int]:
    import array

    out = array.array("q")
    for b in raw_parts:
        out.frombytes(b)
    return sorted(out)


def _worst(items: list[tuple[int, dict | None]], key: str) -> dict | None:
    best = None
    for k, d in items:
        if d and d.get(key) is not None and (best is None or d[key] > best[key]):
            best = {**d, "process": k}
    return best


_STOP_RANK = {None: 0, "duration": 1, "requests": 1, "service_unreachable": 2,
              "client_process_failed": 3, "cancelled": 4}


def merge_connect_attempts(parts: list) -> dict:
    """The sum of several engines' connect_attempts blocks (processes or Slurm client jobs)."""
    by_phase = {ph: 0 for ph in PHASES}
    errs: dict[str, int] = {}
    for s in parts:
        ca = s.get("connect_attempts") or {}
        for ph, c in (ca.get("by_phase") or {}).items():
            by_phase[ph] = by_phase.get(ph, 0) + c
        for t, c in (ca.get("measure_errors_by_type") or {}).items():
            errs[t] = errs.get(t, 0) + c
    return {"by_phase": by_phase, "measure_errors_by_type": dict(sorted(errs.items()))}


def merge_stats(parts: list, *, blocks: list, pids: list, load: dict, lost: list) -> dict:
    """One load_stats from the workers' (stats, raw) parts (None for a worker that reported
    nothing). Counts are summed, the window is the common one (latest end in requests mode),
    sched_lag percentiles are over the pooled samples, and client_cpu / loop_lag_s are those of
    the busiest process, with every process's in `process_stats`."""
    got = [(k, p[0], p[1]) for k, p in enumerate(parts) if p is not None]
    if not got:
        raise RuntimeError("no client process reported any statistics")
    sts = [s for _, s, _ in got]
    open_loop = load.get("rate") is not None
    warmup_end = min(s["warmup_end"] for s in sts)
    measure_end = max(s["measure_end"] for s in sts)
    window_s = round(max(0.0, measure_end - warmup_end), 9)
    ok_m = sum(s["measured"]["ok"] for s in sts)
    err_m = sum(s["measured"]["errors"] for s in sts)
    by_phase = {ph: sum(s["records_by_phase"].get(ph, 0) for s in sts)
                for ph in PHASES}
    errors: dict[str, int] = {}
    for s in sts:
        for t, c in s["errors_by_type"].items():
            errors[t] = errors.get(t, 0) + c
    connects = merge_connect_attempts(sts)
    stopped = max((s["stopped_by"] for s in sts), key=lambda v: _STOP_RANK.get(v, 2))
    if lost and _STOP_RANK.get(stopped, 2) < _STOP_RANK["client_process_failed"]:
        stopped = "client_process_failed"
    per = []
    for k, s, _ in got:
        cpu = s.get("client_cpu")
        per.append({"process": k, "pid": pids[k], "clients": list(blocks[k]),
                    "connections": s["connections"], "records_written": s["records_written"],
                    "measured": s["measured"], "stopped_by": s["stopped_by"],
                    "client_cpu": cpu, "loop_lag_s": s["loop_lag_s"]})
    cpu_worst = _worst([(p["process"], p["client_cpu"]) for p in per], "util_of_one_core")
    if cpu_worst is not None:
        cpus = [p["client_cpu"] for p in per if p["client_cpu"]]
        cpu_worst["cpu_s_all_processes"] = round(sum(c["cpu_s"] for c in cpus), 6)
        cpu_worst["util_all_processes"] = round(sum(c["util_of_one_core"] for c in cpus), 4)
    lag_worst = _worst([(p["process"], p["loop_lag_s"]) for p in per], "p99")
    if lag_worst is None:
        lag_worst = {**sts[0]["loop_lag_s"], "process": got[0][0]}
    out = {
        "t_load_start": min(s["t_load_start"] for s in sts),
        "warmup_end": warmup_end,
        "measure_end": measure_end,
        "t_load_end": max(s["t_load_end"] for s in sts),
        "window_s": window_s,
        "mode": "open" if open_loop else "closed",
        "clients": int(load["clients"]),
        "processes": len(parts),
        "concurrency": int(load.get("concurrency", 1)),
        "connections": sum(s["connections"] for s in sts),
        "requests_issued": sum(s["requests_issued"] for s in sts),
        "records_written": sum(s["records_written"] for s in sts),
        "records_by_phase": by_phase,
        "measured": {"ok": ok_m, "errors": err_m},
        "errors_by_type": dict(sorted(errors.items())),
        "connect_attempts": connects,
        "stopped_by": stopped,
        "client_cpu": cpu_worst,
        "loop_lag_s": lag_worst,
        "process_stats": per,
    }
    if lost:
        out["lost_processes"] = lost
    if open_loop:
        out.update(_open_loop_stats(_pool_lags([raw["sched_lags"] for _, _, raw in got]),
                                    load.get("rate"), load.get("arrival") or "poisson",
                                    ok_m + err_m, window_s))
    return out


def _worker_argv(fd: int) -> list[str]:
    return [sys.executable, "-c",
            "import sys; from aifb.load.engine import _worker_main; sys.exit(_worker_main(int(sys.argv[1])))",
            str(fd)]


async def run_load_processes(*, kind: str, endpoint: str, workload: dict, load: dict, seed: int,
                             records_path: Path, clock: RunClock, secrets: dict | None, log,
                             on_ready, stats_out: dict | None, unreachable_after_s: float,
                             flush_interval_s: float, progress_interval_s: float,
                             processes: int, share: RequestShare | None = None,
                             identity: dict | None = None) -> dict:
    """run_load over `processes` worker processes (see the comment above)."""
    import os
    import socket
    import subprocess

    get_client(kind)  # an unknown kind fails here, before any process starts
    n_clients = int(load["clients"])
    conc = int(load.get("concurrency", 1))
    n_proc = min(processes, n_clients)
    if n_proc < processes:
        log(f"load.processes={processes} but only {n_clients} clients: using {n_proc} processes")
    blocks = _split(n_clients, n_proc)
    loads = [dict(load) for _ in blocks]
    shared = load.get("requests") is not None  # one N for all the workers (RequestShare)
    quota: RequestQuota | None = None
    quota_task: asyncio.Task | None = None
    counts = [0] * n_proc

    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    procs: list[subprocess.Popen] = []
    chans: list[_Channel] = []
    parts: list = [None] * n_proc
    finished = [False] * n_proc
    lost: list[dict] = []
    ticks: dict[int, dict] = {}
    last_mark = [None]
    t_go = None

    def progress(k: int, msg) -> None:
        _, tick, now, ok, err, phase = msg
        row = ticks.setdefault(tick, {})
        row[k] = (now, ok, err, phase)
        if len(row) < n_proc:
            return
        del ticks[tick]
        now = max(v[0] for v in row.values())
        ok = sum(v[1] for v in row.values())
        err = sum(v[2] for v in row.values())
        phase = max((v[3] for v in row.values()), key=PHASES.index)
        prev = last_mark[0] or (t_go or now, 0)
        rate = (ok + err - prev[1]) / ((now - prev[0]) / G) if now > prev[0] else 0.0
        last_mark[0] = (now, ok + err)
        log(f"[{(now - (t_go or now)) / G:7.1f} s] {phase:8s} {ok} ok, {err} errors, "
            f"{rate:,.0f} ops/s ({n_proc} processes)")

    def handler_for(k: int):
        def handle(msg) -> bool:
            if msg[0] == "log":
                log(f"[process {k}] {msg[1]}")
                return True
            if msg[0] == "progress":
                progress(k, msg)
                return True
            if msg[0] == "count":
                counts[k] = msg[1]
                if quota is not None:
                    quota.update(k, msg[1])
                return True
            return False
        return handle

    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")

    pending_other: list = []

    async def next_msg(k: int):
        for i, (tag, msg) in enumerate(pending_other):
            if tag == k:
                del pending_other[i]
                return msg
        while True:
            tag, msg = await queue.get()
            if tag == k:
                return msg
            pending_other.append((tag, msg))

    async def expect(k: int, what: str):
        """The next message of worker k, which must be `what`; ServiceError on its error or exit."""
        msg = await next_msg(k)
        if msg[0] == what:
            return msg
        if msg[0] == "error":
            raise ServiceError(msg[1])
        if msg[0] == "eof":
            finished[k] = True
            await asyncio.sleep(0.05)
            rc = procs[k].poll()
            raise ServiceError(f"client process {k} (pid {procs[k].pid}) exited before the "
                               f"load started (exit code {rc}); see its messages above")
        if msg[0] == "failed":
            raise RuntimeError(f"client process {k} failed: {msg[1]}")
        raise RuntimeError(f"client process {k}: unexpected message {msg[0]!r}")

    def take(tag, msg) -> None:
        """A message that arrives once the load runs: done, failed, eof."""
        if msg[0] == "done":
            parts[tag] = (msg[1], msg[2])
        elif msg[0] == "failed":
            log(f"[process {tag}] failed: {msg[1]}")
        elif msg[0] == "error":
            log(f"[process {tag}] {msg[1]}")
        elif msg[0] == "eof":
            if not finished[tag]:
                finished[tag] = True
                if parts[tag] is None:
                    rc = procs[tag].poll()
                    lost.append({"process": tag, "pid": procs[tag].pid, "exit_code": rc})
                    log(f"client process {tag} (pid {procs[tag].pid}) ended without reporting "
                        f"(exit code {rc}): stopping the others")
                    for ch in chans:
                        ch.send("stop")

    async def collect(deadline_s: float | None) -> None:
        for tag, msg in pending_other:
            take(tag, msg)
        pending_other.clear()
        end = None if deadline_s is None else loop.time() + deadline_s
        while not all(finished):
            timeout = None if end is None else end - loop.time()
            if timeout is not None and timeout <= 0:
                return
            if timeout is None:
                tag, msg = await queue.get()
            else:
                getter = loop.create_task(queue.get())
                done, _ = await asyncio.wait({getter}, timeout=timeout)
                if not done:
                    getter.cancel()
                    return
                tag, msg = getter.result()
            take(tag, msg)

    started = False
    cancelled = False
    try:
        for k, (lo, hi) in enumerate(blocks):
            mine, theirs = socket.socketpair()
            try:
                proc = subprocess.Popen(_worker_argv(theirs.fileno()), pass_fds=(theirs.fileno(),),
                                        stdin=subprocess.DEVNULL, env=env)
            finally:
                theirs.close()
            procs.append(proc)
            ch = _Channel(mine.detach(), loop, queue, tag=k, handler=handler_for(k))
            chans.append(ch)
            ch.send("init", {
                "index": k, "kind": kind, "endpoint": endpoint, "workload": workload,
                "load": loads[k], "seed": seed, "records_path": str(records_path),
                "t0_ns": clock.t0_ns, "t0_unix_ns": clock.t0_unix_ns, "clients": (lo, hi),
                "n_clients_total": n_clients, "secrets": secrets, "shared": shared,
                "unreachable_after_s": unreachable_after_s, "flush_interval_s": flush_interval_s,
                "progress_interval_s": progress_interval_s,
                "identity": run_identity(identity)})
        pids = [p.pid for p in procs]
        for k in range(n_proc):
            await expect(k, "ready")
        chans[0].send("prepare")
        _, info = await expect(0, "prepared")
        info["t_ready"] = _s(now_ns() - clock.t0_ns)
        log(f"{kind}: {n_clients} client(s) x {conc} connection(s) ready in {n_proc} processes "
            f"(pids {', '.join(map(str, pids))})"
            + (f", preloaded in {info['prepare_s']:.2f} s" if info["prepare_s"] > 0.01 else ""))
        if on_ready is not None:
            r = on_ready(info)
            if inspect.isawaitable(r):
                await r
        RecordWriter(records_path, clock.t0_ns).close()  # create / truncate; workers append
        t_go = now_ns() + START_DELAY_NS
        for ch in chans:
            ch.send("go", t_go)
        started = True
        if shared:
            def relay(kind: str, t: int) -> None:
                for ch in chans:
                    ch.send(kind, t)

            if share is None:  # the root: this parent decides the end
                quota = RequestQuota(int(load["requests"]), n_proc, clock.t0_ns, relay)
                for k, c in enumerate(counts):
                    quota.update(k, c)
                quota_task = loop.create_task(quota.run())
            else:  # a member of a larger share (a Slurm client job): report the sum, relay
                share.target = relay

                async def report_up():
                    last = -1
                    while True:
                        if sum(counts) != last:
                            last = sum(counts)
                            share.report(last)
                        await asyncio.sleep(SHARE_TICK_S)

                quota_task = loop.create_task(report_up())
        await collect(None)
    except asyncio.CancelledError:
        cancelled = True
        raise
    finally:
        if quota_task is not None:
            quota_task.cancel()
        for ch, done in zip(chans, finished):
            if not done:
                ch.send("stop")
        if started:
            try:
                await collect(float(load.get("timeout_s") or 30.0) + WORKER_GRACE_S if cancelled
                              else WORKER_GRACE_S)
            except asyncio.CancelledError:
                pass
        _reap(procs)
        for ch in chans:
            ch.close()
        if started and any(p is not None for p in parts):
            merged = merge_stats(parts, blocks=blocks, pids=[p.pid for p in procs], load=load,
                                 lost=lost)
            if quota is not None:
                merged["shared_requests"] = quota.describe()
            if cancelled:
                merged["stopped_by"] = "cancelled"
            if stats_out is not None:
                stats_out.update(merged)
            if cancelled:
                log(f"load cancelled: {merged['records_written']} records written")
    if not any(p is not None for p in parts):
        raise RuntimeError("no client process reported its statistics (see the log above)")
    stats = merged
    stats["client"] = info["client"]
    stats["prepare_s"] = info["prepare_s"]
    log(f"load done ({stats['stopped_by']}): {stats['records_written']} records, "
        f"{stats['measured']['ok']} ok / {stats['measured']['errors']} errors in the "
        f"{stats['window_s']:.3f} s window ({n_proc} processes)")
    return stats


def _reap(procs: list, grace_s: float = WORKER_GRACE_S) -> None:
    """Wait for the workers to exit; SIGTERM, then SIGKILL the ones that do not. None is left."""
    import subprocess

    deadline = time.monotonic() + grace_s
    for sig in (None, signal.SIGTERM, signal.SIGKILL):
        for p in procs:
            if sig is not None and p.poll() is None:
                try:
                    p.send_signal(sig)
                except ProcessLookupError:
                    pass
        for p in procs:
            try:
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        if all(p.poll() is not None for p in procs):
            return
        deadline = time.monotonic() + grace_s


def _worker_main(fd: int) -> int:
    """Entry point of a worker process (see run_load_processes)."""
    import os

    import uvloop

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C: the parent coordinates
    from aifb.process import _die_with_parent

    _die_with_parent()
    if os.getppid() == 1:
        return 1
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(_worker(fd))
    except (asyncio.CancelledError, KeyboardInterrupt):
        return 0


async def _worker(fd: int) -> int:
    import array
    import os
    import traceback

    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    main = asyncio.current_task()
    stopper = [main.cancel]
    stop_msgs = ("stop", "eof")

    share_box: list = [None]

    def handle(msg) -> bool:
        if msg[0] in stop_msgs:
            stopper[0]()
            return True
        if msg[0] in ("safe", "end"):
            if share_box[0] is not None:
                share_box[0].deliver(msg[0], msg[1])
            return True
        return False

    ch = _Channel(fd, loop, queue, handler=handle)
    loop.add_signal_handler(signal.SIGTERM, lambda: stopper[0]())
    _, (_, p) = await queue.get()
    lo, hi = p["clients"]
    load = p["load"]

    def log(msg: str) -> None:
        ch.send("log", msg)

    clients, started = [], []
    try:
        try:
            clients = await _start_clients(p["kind"], p["endpoint"], p["workload"], load,
                                           p["seed"], p["secrets"], range(lo, hi), log, started,
                                           p.get("identity"))
        except ServiceError as exc:
            ch.send("error", str(exc))
            return 0
        ch.send("ready", {"pid": os.getpid()})
        _, msg = await queue.get()
        if msg[0] == "prepare":
            try:
                info = await _prepare(clients[0])
            except ServiceError as exc:
                ch.send("error", str(exc))
                return 0
            ch.send("prepared", info)
            _, msg = await queue.get()
        if msg[0] != "go":
            return 0
        clock = RunClock(t0_ns=p["t0_ns"], t0_unix_ns=p["t0_unix_ns"])
        writer = RecordWriter(p["records_path"], clock.t0_ns, truncate=False, background=True)
        interval = p["progress_interval_s"]

        def progress_cb(now, ok, err, phase):
            ch.send("progress", round((now - msg[1]) / G / interval), now, ok, err, phase)

        share = RequestShare(lambda n: ch.send("count", n)) if p.get("shared") else None
        share_box[0] = share
        try:
            eng = _Engine(clients, load, p["seed"], writer, clock, log, p["unreachable_after_s"],
                          p["flush_interval_s"], interval, client_ids=range(lo, hi),
                          n_clients_total=p["n_clients_total"], progress_cb=progress_cb,
                          share=share)
        except BaseException:
            writer.close()
            raise
        stats_out: dict = {}
        run = loop.create_task(eng.run(stats_out, t_load_start_ns=msg[1]))
        stopper[0] = run.cancel
        try:
            stats = await run
        except asyncio.CancelledError:
            if main.cancelling():
                raise
            stats = stats_out
        raw = {"sched_lags": array.array("q", eng.sched_lags).tobytes()}
        ch.send("done", stats, raw)
        return 0
    except asyncio.CancelledError:
        return 0
    except BaseException as exc:
        ch.send("failed", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")
        return 1
    finally:
        for c in started:
            try:
                await c.shutdown()
            except Exception:
                pass
        ch.close()
