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
with a result tuple; done appends one row tuple to a list and (closed loop) queues the slot:
its next request goes out once every reply this poll of the event loop brought is stamped
(Engine.issue_soon; aifb.load.slots). No coroutine, task, future or dict per request. A
flusher task turns rows into JSON lines every `flush_interval_s` (0.25 s; at most 0.5 s is
ever unwritten), in chunks of FLUSH_CHUNK rows so that the event loop is never blocked for
long; each chunk is one write() of whole lines, issued by the RecordWriter's helper thread so
a slow disk cannot stall the loop. Objects that exist before the load are frozen out of the
cyclic GC (gc.freeze) for its length; young passes run less often (GC_YOUNG).

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
coordinated omission). A client may also plan follow-up requests at given instants (a
conversation's next turn: aifb.clients.base, "Follow-ups"); they are sent and queued the same
way, with their planned t_sched, the earlier planned first. Queued arrivals and follow-ups
older than the timeout are recorded as Timeout errors without being sent. Arrivals are timed
with a Linux timerfd at the planned ns (uvloop timers have 1 ms resolution; this wakes the
loop within tens of µs, without spinning); elsewhere a task sleeps to ~1 ms before the
planned time and then yields until it is due. sched_lag_s
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
in process_stats). See aifb.load.processes (coordinator), aifb.load.worker (each process) and
aifb.load.merge. The engine raises its own RLIMIT_NOFILE when the connections need it
(aifb.load.limits). Above ~1,000 busy connections in one process uvloop runs timers and
tasks late (libuv handles up to 48 x 1024 ready events per poll): the engine says so, the
flusher then writes whole batches when it gets a turn, and loop_lag_s shows it.
"""

from __future__ import annotations

import array
import asyncio
import gc
import math

from aifb.clients.base import R_ERR_TYPE, R_OK, R_OP, R_T_END
from aifb.clock import now_ns
from aifb.load.arrivals import Arrivals
from aifb.load.figures import G, cpu_figures, cpu_sample, open_loop_stats, pct, seconds
from aifb.load.processes import run_load_processes
from aifb.load.settings import LoadRun
from aifb.load.share import SHARE_TICK_S
from aifb.load.slots import CONNECT_OP, ClientState, Slot
from aifb.load.startup import (announce_ready, finish, prepare, run_identity, shut_down,
                               start_clients)
from aifb.records import RecordWriter

FLUSH_CHUNK = 128  # rows formatted per step of the flusher (~0.15 ms), then the loop runs
STARVED_NS = 20_000_000  # a flusher step that waited longer than this for its turn: loop starved
# Young objects between GC passes in the load (default 700): each request leaves 2 tuples, which
# a pass only untracks; ~0.15 us a request less, ~0.1 ms a pass (benchmarks/README.md)
GC_YOUNG = 2000

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

class Engine:
    """One process's load over its block of clients (see the module's docstring)."""

    def __init__(self, run: LoadRun, clients: list, writer: RecordWriter, *,
                 client_ids: list[int] | None = None, n_clients_total: int | None = None,
                 progress_cb=None):
        self.loop = asyncio.get_running_loop()
        self.clients = clients
        self.n_clients = len(clients)
        # A worker process drives a share of the clients: their global indices (for records,
        # seeds and open-loop schedules) and the total (the rate is split over all clients).
        self.client_ids = list(client_ids) if client_ids is not None else list(range(len(clients)))
        self.n_clients_total = n_clients_total or len(clients)
        self.progress_cb = progress_cb
        load = run.load
        self.conc = load.concurrency
        self.rate = load.rate
        self.open_loop = load.open_loop
        self.arrival = load.arrival
        self.trace_ns = load.trace_ns    # arrival: trace (aifb.workflow.recipe.load_settings)
        self.duration_s = load.duration_s
        self.requests = load.requests
        if (self.duration_s is None) == (self.requests is None):
            raise ValueError("load needs exactly one of duration_s and requests")
        self.warmup_s = load.warmup_s
        self.cooldown_s = load.cooldown_s
        self.timeout_s = load.timeout_s
        self.timeout_ns = int(self.timeout_s * G)
        self.seed = run.seed
        self.writer = writer
        self.clock = run.clock
        self.t0 = run.clock.t0_ns
        self.log = run.log
        self.unreachable_ns = int(run.unreachable_after_s * G)
        self.flush_interval_s = min(run.flush_interval_s, 0.5)
        self.progress_interval_s = run.progress_interval_s
        self.live = run.live          # aifb.load.live.LiveLoad: the progress file, or None
        share = run.share

        self.rows: list = []
        self.to_issue: list = []   # closed loop: slots to send again once this poll's replies are in
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

        self.states = [ClientState(ci, c) for ci, c in zip(self.client_ids, clients)]
        self.slots: list[Slot] = []
        for cs in self.states:
            for wi in range(self.conc):
                s = Slot(self, cs, wi)
                cs.slots.append(s)
                self.slots.append(s)
        self.single = len(self.slots) == 1   # one connection: issue_soon sends at once

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
        # t_sched of every open-loop request planned after the warmup (counted against the
        # window's end in stats(): the requests the schedule offered inside the window)
        self.sched_times = array.array("q")
        self.streak_start: int | None = None
        self.last_rate_mark = (0, 0)
        # windows
        self.cpu_start = None
        self.cpu_end = None
        self.lags: list[int] = []
        self.tasks: list[asyncio.Task] = []
        self.handles: list[asyncio.TimerHandle] = []
        self.arrival_procs: list[Arrivals] = []

    def issue_soon(self, slot: Slot) -> None:
        """Closed loop: send `slot`'s next request after every reply that this poll of the
        event loop brought is stamped. Sending at once (a system call of several us) would
        stamp the t_end of the replies still waiting behind it later by that much, up to
        concurrency x the cost of a send (measured +0.3 ms on the p50 at 32 connections).
        The open loop still sends from the reply's callback (not measured enough to change)."""
        if self.single:   # no other reply to wait for: a loop turn would only cost (~3 us)
            slot.issue()
            return
        q = self.to_issue
        q.append(slot)
        if len(q) == 1:
            self.loop.call_soon(self.issue_queued)

    def issue_queued(self) -> None:
        q, self.to_issue = self.to_issue, []
        if self.running:
            for s in q:
                s.issue()

    # -- requests mode --------------------------------------------------------------------
    def count_completion(self, t_end: int) -> None:
        self.n_counted += 1
        if self.n_counted == self.count_target:
            self._end_window(t_end)

    def _end_window(self, t_end: int) -> None:
        """Requests mode: the window ends at t_end (ns); the load stops after the cooldown."""
        self.measure_end_ns = t_end
        self.cpu_end = cpu_sample()
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
            te = row[5][R_T_END]
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
        oks = []        # the phase of each ok closed-loop request: counted at the end, in C
        ok = oks.append
        nb = self.n_by_phase
        streak = self.streak_start
        counting = self.requests is not None and self.share is None
        for row in batch:
            res = row[5]
            te = res[R_T_END]
            if te < wu:
                ph = "warmup"
            elif counting:  # the first N request completions (connect attempts are not requests)
                if self.f_counted < self.requests:
                    if res[R_OP] != CONNECT_OP:
                        self.f_counted += 1
                    ph = "measure"
                else:
                    ph = "cooldown"
            elif me is None or te <= me:  # me None: a shared count before its end (te <= safe),
                ph = "measure"               # or a cancelled run
            else:
                ph = "cooldown"
            add(ph)
            if res[R_OK] and row[3] is None:   # the common case (connect records never are ok)
                ok(ph)
                streak = None
                continue
            if res[R_OP] == CONNECT_OP:  # a failed reconnect attempt, not a request
                self.connects_by_phase[ph] += 1
                if ph == "measure":
                    et = res[R_ERR_TYPE]
                    self.connect_errors[et] = self.connect_errors.get(et, 0) + 1
                if streak is None:
                    streak = te
                continue
            if res[R_OK]:
                nb[ph][0] += 1
                streak = None
            else:
                nb[ph][1] += 1
                et = res[R_ERR_TYPE]
                self.errors_by_type[et] = self.errors_by_type.get(et, 0) + 1
                if streak is None:
                    streak = te
            if row[3] is not None:
                if ph == "measure":
                    self.sched_lags.append(row[4] - row[3])
                if row[3] >= wu:
                    self.sched_times.append(row[3])
        for ph, v in nb.items():
            v[0] += oks.count(ph)
        self.streak_start = streak
        return phases

    def _write(self, batch: list) -> None:
        phases = self._phases(batch)
        self.writer.write_rows(batch, phases)
        if self.live is not None:
            self.live.sample(batch, phases)

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
                    fb = cs.fu_backlog   # an expired follow-up's token is dropped
                    while fb and fb[0][0] < limit:
                        self.expire_queued(cs, fb.popleft()[0], now)
            if now >= next_progress:
                next_progress += int(self.progress_interval_s * G)
                self.progress(now)
            if self.live is not None and now >= self.live.due:
                self.live.tick(now, now - self.t_load_start, *self.counts(now))

    def expire_queued(self, cs: ClientState, t_sched: int, now: int) -> None:
        seq = cs.seq
        cs.seq += 1
        res = ("?", False, "Timeout",
               f"not sent: queued {(now - t_sched) / G:.3g} s behind the in-flight cap", None,
               None, None, now)
        self.rows.append((cs.ci, 0, seq, t_sched, now, res))
        if self.count_target and now >= self.warmup_end_ns:
            self.count_completion(now)

    def counts(self, now: int) -> tuple:
        """(ok, errors, phase) of the requests written so far, at `now`."""
        phase = ("warmup" if now < self.warmup_end_ns else
                 "measure" if self.measure_end_ns is None or now <= self.measure_end_ns else
                 "cooldown")
        return (sum(v[0] for v in self.n_by_phase.values()),
                sum(v[1] for v in self.n_by_phase.values()), phase)

    def progress(self, now: int) -> None:
        ok, err, phase = self.counts(now)
        done = ok + err
        t_prev, n_prev = self.last_rate_mark
        rate = (done - n_prev) / ((now - t_prev) / G) if now > t_prev else 0.0
        self.last_rate_mark = (now, done)
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

    def _mark_window_start(self) -> None:
        self.cpu_start = cpu_sample()

    def _mark_window_end(self) -> None:
        if self.cpu_end is None:
            self.cpu_end = cpu_sample()

    # -- the run --------------------------------------------------------------------------
    async def run(self, stats_out: dict | None, t_load_start_ns: int | None = None) -> dict:
        """Run the load. `t_load_start_ns` (worker processes): start at this planned instant,
        shared by all processes, so that their warmup/measure/stop instants are identical."""
        loop = self.loop
        # Everything allocated so far (modules, clients, pre-encoded commands) goes to the
        # permanent generation: full collections during the load then scan only what the load
        # allocates (measured: gen-2 pauses 5-9 ms -> < 1 ms at ~100k requests/s).
        thawed, gc_threshold = gc.get_freeze_count() == 0, gc.get_threshold()
        gc.collect()
        gc.freeze()
        gc.set_threshold(GC_YOUNG, *gc_threshold[1:])
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
                gc.set_threshold(*gc_threshold)
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
                    arr = Arrivals(self, cs)
                    self.arrival_procs.append(arr)
                    if hasattr(cs.client, "follow_up"):   # it may plan follow-ups
                        cs.client.follow_up = arr.follow_up
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
                if hasattr(a.cs.client, "follow_up"):
                    a.cs.client.follow_up = None
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
            if self.live is not None:   # the final counts, whenever the last write was
                self.live.due = 0
                self.live.tick(t_end, t_end - self.t_load_start, *self.counts(t_end))
            self.writer.close()
            if thawed:
                gc.unfreeze()
            gc.set_threshold(*gc_threshold)
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
            if not any(s.busy for s in self.slots) and not any(
                    cs.backlog or cs.fu_backlog for cs in self.states):
                break
            await asyncio.sleep(0.001)
        for cs in self.states:
            while cs.backlog:
                self.expire_queued(cs, cs.backlog.popleft(), now_ns())
            while cs.fu_backlog:
                self.expire_queued(cs, cs.fu_backlog.popleft()[0], now_ns())

    def stats(self, t_end_ns: int) -> dict:
        t0 = self.t0
        measure_end = self.measure_end_ns
        if measure_end is None or measure_end > t_end_ns:
            measure_end = max(t_end_ns, self.warmup_end_ns)
        window_ns = max(0, measure_end - self.warmup_end_ns)
        window_s = window_ns / G
        ok_m, err_m = self.n_by_phase["measure"]
        lags = sorted(self.lags)
        out = {
            "t_load_start": seconds(self.t_load_start - t0),
            "warmup_end": seconds(self.warmup_end_ns - t0),
            "measure_end": seconds(measure_end - t0),
            "t_load_end": seconds(t_end_ns - t0),
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
            "client_cpu": cpu_figures(self.cpu_start, self.cpu_end),
            "loop_lag_s": {"n": len(lags), "period_s": 0.01,
                           "p50": seconds(pct(lags, 0.5)), "p99": seconds(pct(lags, 0.99)),
                           "max": seconds(lags[-1] if lags else None)},
        }
        if self.open_loop:
            scheduled = sum(1 for t in self.sched_times if t <= measure_end)
            out.update(open_loop_stats(sorted(self.sched_lags), self.rate, self.arrival,
                                        ok_m + err_m, window_s, scheduled))
        return out



async def run_load(**kw) -> dict:
    """Run one load against `endpoint`; stream records to `records_path`; return load_stats.
    The keywords are those of aifb.load.settings.LoadRun (kind, endpoint, workload, load, seed,
    records_path, clock, and optional secrets, log, on_ready, stats_out, share, identity and
    engine tuning); `load` is a dict or a LoadSettings.

    Raises ServiceError (before any record is written) when a client cannot start, validate
    or prepare. On cancellation: completed records are written, connections closed, `stats_out`
    (if given) filled with stopped_by="cancelled", and CancelledError re-raised.
    `on_ready(info)` (sync or async) is called after prepare, just before the load starts,
    with {"client": describe(), "prepare_s": ..., "t_ready": seconds since t0}.

    `load["processes"]` (default 1) > 1 spreads the clients over that many worker processes
    (see aifb.load.processes); the contract above holds unchanged.
    `share`: this load is one member of a `requests: N` shared with other loads (Slurm client
    jobs; see aifb.load.share): the window ends when the root says so.
    `identity`: the run's benchmark id, cache salt and client offset (see run_identity).
    """
    run = LoadRun(**kw)
    run = run.replace(identity=run_identity(run.identity))
    load = run.load
    if load.processes > 1 and load.clients > 1:
        return await run_load_processes(run)
    if load.processes > 1:
        run.log("load.processes > 1 with a single client: one process drives it")
    return await _run_here(run)


async def _run_here(run: LoadRun) -> dict:
    """run_load in this process."""
    log, load = run.log, run.load
    started: list = []
    try:
        clients = await start_clients(run, range(load.clients), started)
        info = await prepare(clients[0])
        info["t_ready"] = seconds(now_ns() - run.clock.t0_ns)
        prepare_s = info["prepare_s"]
        log(f"{run.kind}: {load.clients} client(s) x {load.concurrency} connection(s) "
            "ready" + (f", preloaded in {prepare_s:.2f} s" if prepare_s > 0.01 else ""))
        await announce_ready(run, info)
        writer = RecordWriter(run.records_path, run.clock.t0_ns, background=True)
        try:
            eng = Engine(run, clients, writer)
        except BaseException:
            writer.close()
            raise
        return finish(await eng.run(run.stats_out), info, log)
    finally:
        await shut_down(started)


def run_load_sync(**kw) -> dict:
    """run_load on a fresh uvloop event loop (for scripts and tests)."""
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(run_load(**kw))
