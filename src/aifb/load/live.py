"""The running load's figures for the progress file (aifb.progress): phase, elapsed, completed
requests, errors, the current rate and the p99 so far, written from the engine's ticker at most
every WRITE_INTERVAL_S.

Nothing here runs per request. The engine's flusher hands each batch it writes (<= 128 rows,
every 0.25 s) to `sample`, which keeps a strided subset of the measured ok latencies: at most
MAX_SAMPLES, and when full every other one is dropped and the stride doubles, so the sample
stays spread evenly over the run for the cost of a slice per batch. `tick` sorts that sample
(<= 4,096 numbers) and writes one small file: well under a millisecond, twice a second.

Several processes (`load.processes > 1`, aifb.load.processes): each worker's engine has a
LiveRelay instead, which samples the same way and, at most every WRITE_INTERVAL_S, sends the
parent its counts and the sample values added since its last message (at most MAX_SEND, thinned
by a power of two with their stride multiplied to match). The parent's LiveLoad pools them per
worker (`pool`, each worker's values at one stride, bounded like the sample) and its p99 weighs
each value by its stride, so every worker's measured requests count the same however fast it ran.
"""

from __future__ import annotations

import collections

from aifb.clients.base import R_OK, R_T_END
from aifb.load.figures import G
from aifb.progress import ProgressFile

WRITE_INTERVAL_S = 0.5
RATE_WINDOW_S = 1.0
MAX_SAMPLES = 4096
MAX_SEND = 512
LOAD_PHASES = {"warmup": "warmup", "measure": "measuring", "cooldown": "cooldown"}


class Sampler:
    """A strided, bounded sample of the measured ok latencies (ns) of the engine's rows."""

    def __init__(self):
        self.samples: list[int] = []
        self.stride = 1
        self.offset = 0    # rows (sample) or pooled values (add) to skip before the next kept
        self.sent = 0      # samples[:sent] were handed on already (LiveRelay)
        self.due = 0       # the engine's ticker calls tick once now >= due

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
            self.halve()

    def halve(self) -> None:
        del self.samples[::2]
        self.stride *= 2
        self.sent //= 2    # of the first `sent`, the odd-indexed half is left

    def add(self, values: list, stride: int) -> None:
        """Pool `values` taken every `stride`-th request: kept at this sample's stride."""
        while self.stride < stride:
            self.halve()
        r = self.stride // stride   # keep every r-th, counting on across messages (`offset`)
        self.samples.extend(values[self.offset % r::r])
        self.offset = (self.offset - len(values)) % r
        if len(self.samples) > MAX_SAMPLES:
            self.halve()


def pooled_pct(parts: list[Sampler], q: float):
    """The percentile of the union of the samples, each value weighed by its sample's stride
    (as if each were repeated stride / the smallest stride times), by figures.pct's method (linear
    interpolation, Hyndman-Fan 7); None when all are empty. Twice a second over up to
    processes x MAX_SAMPLES values: one sort of plain ints (a value and the log2 of its weight
    in one), then a walk down from the top, which for a p99 is ~1% of them."""
    parts = [p for p in parts if p.samples]
    if not parts:
        return None
    low = min(p.stride for p in parts)
    enc = sorted([v << 6 | (p.stride // low).bit_length() - 1 for p in parts for v in p.samples])
    total = sum(len(p.samples) * (p.stride // low) for p in parts)
    h = (total - 1) * q
    i = int(h)
    j = min(i + 1, total - 1)
    seen, hi = 0, None
    for e in reversed(enc):
        seen += 1 << (e & 63)
        first = total - seen        # the lowest position of this value in the repeated list
        if hi is None and first <= j:
            hi = e >> 6
        if first <= i:
            return round((e >> 6) + (h - i) * (hi - (e >> 6)))
    raise AssertionError("unreachable: the walk ends at position 0")


class LiveLoad(Sampler):
    def __init__(self, pfile: ProgressFile):
        super().__init__()
        self.pfile = pfile
        self.marks: collections.deque = collections.deque()
        self.workers: dict[int, Sampler] = {}

    def plan(self, load) -> None:
        """The planned length of a load (LoadSettings), before it starts."""
        if load.duration_s is not None:
            self.pfile.update(planned_s=load.warmup_s + load.duration_s + load.cooldown_s,
                              planned_requests=None)
        else:
            self.pfile.update(planned_s=None, planned_requests=load.requests)

    def pool(self, worker: int, values: list, stride: int) -> None:
        """Worker `worker`'s new sample values (a LiveRelay's message), taken every `stride`-th."""
        self.workers.setdefault(worker, Sampler()).add(values, stride)

    def p99(self):
        """Of this process's sample, or pooled over the workers' (load.processes > 1)."""
        return pooled_pct(list(self.workers.values()) or [self], 0.99)

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
        p99 = self.p99()
        self.pfile.update(phase=LOAD_PHASES.get(phase, phase), elapsed_s=round(elapsed_ns / G, 3),
                          requests=done, errors=err, rate=None if rate is None else round(rate, 3),
                          p99_s=None if p99 is None else round(p99 / G, 9))


class LiveRelay(Sampler):
    """A worker's side (aifb.load.worker): `send(now, ok, err, phase, values, stride)` at most
    every WRITE_INTERVAL_S with the values sampled since the last send (<= MAX_SEND)."""

    def __init__(self, send):
        super().__init__()
        self.send = send

    def tick(self, now: int, elapsed_ns: int, ok: int, err: int, phase: str) -> None:
        if now < self.due:
            return
        self.due = now + int(WRITE_INTERVAL_S * G)
        new, stride = self.samples[self.sent:], self.stride
        self.sent = len(self.samples)
        k = 1
        while len(new) > MAX_SEND * k:
            k *= 2
        self.send(now, ok, err, phase, new[::k], stride * k)
