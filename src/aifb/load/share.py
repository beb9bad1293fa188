"""A `requests: N` shared by several engines (worker processes, Slurm client jobs): each
member's link to the root (RequestShare) and the root that sums the counts and says when the
window ends (RequestQuota). See the comment below for the protocol."""

from __future__ import annotations

import asyncio

from aifb.clock import now_ns

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
# own clock, see aifb.slurm.client_jobs).

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

