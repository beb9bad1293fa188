"""The one clock of a run: monotonic nanoseconds, reported as seconds since the run's start.

Every timestamp in requests.jsonl comes from `time.perf_counter_ns()` minus the run's t0 (also
from perf_counter_ns), so differences are exact to the nanosecond and immune to wall-clock
steps. The wall-clock time of t0 is recorded once in run.json to place the run in real time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

now_ns = time.perf_counter_ns


@dataclass(frozen=True)
class RunClock:
    t0_ns: int = field(default_factory=now_ns)
    t0_unix_ns: int = field(default_factory=time.time_ns)

    def since_start(self, t_ns: int) -> float:
        return (t_ns - self.t0_ns) / 1e9

    def describe(self) -> dict:
        return {
            "source": "time.perf_counter_ns (CLOCK_MONOTONIC)",
            "t0_unix_ns": self.t0_unix_ns,
            "units": "seconds since t0, 9 decimals",
        }


def ns_to_s_text(ns: int) -> str:
    """Format integer nanoseconds as seconds with 9 decimals, exactly (no float rounding)."""
    if ns < 0:
        return "-" + ns_to_s_text(-ns)
    s, frac = divmod(ns, 1_000_000_000)
    return f"{s}.{frac:09d}"
