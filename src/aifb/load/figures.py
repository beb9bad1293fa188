"""How the load statistics express their samples: ns -> seconds, percentiles by the method of
every other figure, the client's CPU over the window, and the open-loop block (offered vs
achieved rate, scheduling lag). Used by
the engine for its own stats and by the merge of several engines' stats."""

from __future__ import annotations

import resource
import time

from aifb.clock import now_ns
from aifb.stats import quantiles_sorted

G = 1_000_000_000  # ns per second


def pct(sorted_vals: list, q: float):
    """Percentile of an ascending list of ns (None when empty), by the method of every other
    figure (aifb.stats.quantiles_sorted: linear interpolation, Hyndman-Fan 7)."""
    if not sorted_vals:
        return None
    return round(quantiles_sorted(sorted_vals, [q])[0])


def seconds(ns: int | None) -> float | None:
    return None if ns is None else round(ns / G, 9)


def cpu_sample() -> tuple:
    """This process's clock and CPU times now: (ns, cpu s, user s, system s)."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return (now_ns(), time.process_time(), ru.ru_utime, ru.ru_stime)


def cpu_figures(start: tuple | None, end: tuple | None) -> dict | None:
    """The load's client_cpu between two cpu_sample()s (None without a window)."""
    if not (start and end and end[0] > start[0]):
        return None
    wall = (end[0] - start[0]) / G
    cpu_s = end[1] - start[1]
    return {"cpu_s": round(cpu_s, 6), "user_s": round(end[2] - start[2], 6),
            "sys_s": round(end[3] - start[3], 6), "wall_s": round(wall, 6),
            "util_of_one_core": round(cpu_s / wall, 4)}


def open_loop_stats(sorted_lags: list, rate, arrival: str, n_measured: int,
                    window_s: float, scheduled: int | None = None) -> dict:
    """Offered vs achieved rate and the scheduling lag (t_start - t_sched, ns) percentiles.

    `rate` is the arrival rate asked for (a trace's: its requests over its span; with
    conversations: their starts). `scheduled` counts the requests actually planned inside the
    measurement window (t_sched in it: arrivals and follow-up turns alike), so scheduled_rate
    is what the achieved rate must keep up with, whatever the trace's end or the turns do."""
    sl = sorted_lags
    return {
        "offered_rate": rate,
        "arrival": arrival,
        "achieved_rate": round(n_measured / window_s, 3) if window_s else None,
        "scheduled": scheduled,
        "scheduled_rate": (round(scheduled / window_s, 3)
                           if window_s and scheduled is not None else None),
        "sched_lag_s": {"n": len(sl), "p50": seconds(pct(sl, 0.5)), "p90": seconds(pct(sl, 0.9)),
                        "p99": seconds(pct(sl, 0.99)), "max": seconds(sl[-1] if sl else None),
                        "mean": round(sum(sl) / len(sl) / G, 9) if sl else None},
    }
