"""The running load's figures for the progress file (aifb.progress): phase, elapsed, completed
requests, errors, the current rate and the p99 so far, written from the engine's ticker at most
every WRITE_INTERVAL_S.

Nothing here runs per request. The engine's flusher hands each batch it writes (<= 128 rows,
every 0.25 s) to `sample`, which keeps a strided subset of the measured ok latencies: at most
MAX_SAMPLES, and when full every other one is dropped and the stride doubles, so the sample
stays spread evenly over the run for the cost of a slice per batch. `tick` sorts that sample
(<= 4,096 numbers) and writes one small file: well under a millisecond, twice a second.
"""

from __future__ import annotations

import collections

from aifb.clients.base import R_OK, R_T_END
from aifb.load.figures import G, pct
from aifb.progress import ProgressFile

WRITE_INTERVAL_S = 0.5
RATE_WINDOW_S = 1.0
MAX_SAMPLES = 4096
LOAD_PHASES = {"warmup": "warmup", "measure": "measuring", "cooldown": "cooldown"}


class LiveLoad:
    def __init__(self, pfile: ProgressFile):
        self.pfile = pfile
        self.samples: list[int] = []
        self.stride = 1
        self.offset = 0
        self.marks: collections.deque = collections.deque()
        self.due = 0

    def plan(self, load) -> None:
        """The planned length of a load (LoadSettings), before it starts."""
        if load.duration_s is not None:
            self.pfile.update(planned_s=load.warmup_s + load.duration_s + load.cooldown_s,
                              planned_requests=None)
        else:
            self.pfile.update(planned_s=None, planned_requests=load.requests)

    def sample(self, batch: list, phases: list) -> None:
        """Keep every `stride`-th measured ok latency (t_end - t_sched in the open loop, else
        t_end - t_start: the summary's definition) of a batch of engine rows."""
        s = self.stride
        rows, phs = batch[self.offset::s], phases[self.offset::s]
        self.offset = (self.offset - len(batch)) % s
        add = self.samples.append
        for row, ph in zip(rows, phs):
            res = row[5]
            if ph == "measure" and res[R_OK]:
                add(res[R_T_END] - (row[3] if row[3] is not None else row[4]))
        if len(self.samples) > MAX_SAMPLES:
            del self.samples[::2]
            self.stride *= 2

    def tick(self, now: int, elapsed_ns: int, ok: int, err: int, phase: str) -> None:
        """Write the figures at `now` (ns) if WRITE_INTERVAL_S has passed since the last write."""
        if now < self.due:
            return
        self.due = now + int(WRITE_INTERVAL_S * G)
        done = ok + err
        marks = self.marks
        if not marks:   # the load started with nothing completed
            marks.append((now - elapsed_ns, 0))
        marks.append((now, done))
        while len(marks) > 2 and now - marks[1][0] >= RATE_WINDOW_S * G:
            marks.popleft()
        t_prev, n_prev = marks[0]
        rate = (done - n_prev) * G / (now - t_prev) if now > t_prev else None
        p99 = pct(sorted(self.samples), 0.99)
        self.pfile.update(phase=LOAD_PHASES.get(phase, phase), elapsed_s=round(elapsed_ns / G, 3),
                          requests=done, errors=err, rate=None if rate is None else round(rate, 3),
                          p99_s=None if p99 is None else round(p99 / G, 9))
