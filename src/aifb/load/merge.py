"""THE one merge of several engines' load_stats into one: the worker processes of one client
host (aifb.load.processes) and the Slurm client jobs of one run (aifb.slurm.client_jobs.ClientJobs)
both call merge_stats, so a run's figures follow the same rules however its load was spread.

Rules: counts are summed; the window is the common one (earliest warmup end to latest measure
end); stopped_by is the most serious of the members' (STOP_RANK), and a member that reported
nothing makes it `lost` (client_process_failed / client_job_lost) unless a more serious stop
(cancelled) is known; client_cpu and loop_lag_s are the busiest member's, named by its index,
and client_cpu adds the sums over every member, cpu_s_all_<members> and util_all_<members>: a
member that is itself a merge (a Slurm client job of several processes) counts with its own sums,
and the sums are None when any member's CPU is unknown (a lost member, one without a sample),
never a part passed off as the whole.
Open loop: the scheduling-lag percentiles are over the pooled samples when every member sent
them (processes send raw samples); members that report only their summary (Slurm client jobs)
give n and mean exactly, max exactly, and each percentile as the largest of the members' (an
upper bound of the pooled percentile: no more than the fraction q of every member's samples,
hence of all, lies above it).
"""

from __future__ import annotations

import array

from aifb.load.figures import open_loop_stats
from aifb.load.settings import LoadSettings
from aifb.records import PHASES

STOP_RANK = {None: 0, "duration": 1, "requests": 1, "service_unreachable": 2,
             "client_process_failed": 3, "client_job_lost": 3, "cancelled": 4}

# What a member is called in the merged stats, and the stop of a run that lost one.
MEMBERS = {
    "process": {"plural": "processes", "id": "pid", "lost": "client_process_failed"},
    "client_job": {"plural": "client_jobs", "id": "job_id", "lost": "client_job_lost"},
}


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


def _pool_lags(raw_parts: list[bytes]) -> list[int]:
    out = array.array("q")
    for b in raw_parts:
        out.frombytes(b)
    return sorted(out)


def _worst(items: list[tuple[int, dict | None]], key: str, member: str) -> dict | None:
    best = None
    for k, d in items:
        if d and d.get(key) is not None and (best is None or d[key] > best[key]):
            best = {**d, member: k}
    return best


def _member_total(cpu: dict, key: str, own: str) -> float | None:
    """One member's CPU over all its processes: a merge's own sum (Slurm client jobs of several
    processes; None when unknown there), else the engine's own figure."""
    return cpu.get(f"{key}_all_processes", cpu.get(own))


def _summed_sched_lags(sts: list, n_measured: int, window_s: float, load: LoadSettings,
                       scheduled: int | None) -> dict:
    """The open-loop block from members' summaries only (see the module's docstring)."""
    out = open_loop_stats([], load.rate, load.arrival, n_measured, window_s, scheduled)
    blocks = [s["sched_lag_s"] for s in sts if (s.get("sched_lag_s") or {}).get("n")]
    if blocks:
        n = sum(b["n"] for b in blocks)
        lag = {"n": n}
        for q in ("p50", "p90", "p99", "max"):
            vals = [b[q] for b in blocks if b.get(q) is not None]
            lag[q] = max(vals) if vals else None
        means = [(b["mean"], b["n"]) for b in blocks if b.get("mean") is not None]
        lag["mean"] = (round(sum(m * k for m, k in means) / sum(k for _, k in means), 9)
                       if means else None)
        out["sched_lag_s"] = lag
    return out


def merge_stats(parts: list, *, blocks: list, pids: list, load: dict | LoadSettings,
                lost: list, member: str = "process") -> dict:
    """One load_stats from the members' (stats, raw) parts (None for a member that reported
    nothing; raw None where a member sends no raw samples). `blocks` and `pids` (process ids or
    Slurm job ids) are indexed like `parts`; `lost` describes the members that were lost.
    member "process" lists every process in `process_stats`; a caller merging client jobs
    lists them itself (ClientJobs keeps each job's whole stats)."""
    names = MEMBERS[member]
    load = LoadSettings.of(load)
    got = [(k, p[0], p[1]) for k, p in enumerate(parts) if p is not None]
    if not got:
        raise RuntimeError(f"no client {member.replace('_', ' ')} reported any statistics")
    sts = [s for _, s, _ in got]
    warmup_end = min(s["warmup_end"] for s in sts)
    measure_end = max(s["measure_end"] for s in sts)
    window_s = round(max(0.0, measure_end - warmup_end), 9)
    ok_m = sum(s["measured"]["ok"] for s in sts)
    err_m = sum(s["measured"]["errors"] for s in sts)
    by_phase = {ph: sum((s.get("records_by_phase") or {}).get(ph, 0) for s in sts)
                for ph in PHASES}
    errors: dict[str, int] = {}
    for s in sts:
        for t, c in (s.get("errors_by_type") or {}).items():
            errors[t] = errors.get(t, 0) + c
    stopped = max((s.get("stopped_by") for s in sts), key=lambda v: STOP_RANK.get(v, 2))
    if lost and STOP_RANK.get(stopped, 2) < STOP_RANK[names["lost"]]:
        stopped = names["lost"]
    per = []
    for k, s, _ in got:
        per.append({member: k, names["id"]: pids[k], "clients": list(blocks[k]),
                    "connections": s.get("connections"), "records_written": s.get("records_written"),
                    "measured": s["measured"], "stopped_by": s.get("stopped_by"),
                    "client_cpu": s.get("client_cpu"), "loop_lag_s": s.get("loop_lag_s")})
    cpu_worst = _worst([(p[member], p["client_cpu"]) for p in per], "util_of_one_core", member)
    if cpu_worst is not None:
        known = not lost and all(p["client_cpu"] for p in per)
        for key, own, digits in (("cpu_s", "cpu_s", 6), ("util", "util_of_one_core", 4)):
            vals = [_member_total(p["client_cpu"], key, own) for p in per] if known else [None]
            cpu_worst[f"{key}_all_{names['plural']}"] = (
                None if None in vals else round(sum(vals), digits))
    lag_worst = _worst([(p[member], p["loop_lag_s"]) for p in per], "p99", member)
    if lag_worst is None and sts[0].get("loop_lag_s") is not None:
        lag_worst = {**sts[0]["loop_lag_s"], member: got[0][0]}
    out = {
        "t_load_start": min(s["t_load_start"] for s in sts),
        "warmup_end": warmup_end,
        "measure_end": measure_end,
        "t_load_end": max(s["t_load_end"] for s in sts),
        "window_s": window_s,
        "mode": "open" if load.open_loop else "closed",
        "clients": load.clients,
    }
    if member == "process":
        out["processes"] = len(parts)
    out.update({
        "concurrency": load.concurrency,
        "connections": sum(s.get("connections") or 0 for s in sts),
        "requests_issued": sum(s.get("requests_issued") or 0 for s in sts),
        "records_written": sum(s.get("records_written") or 0 for s in sts),
        "records_by_phase": by_phase,
        "measured": {"ok": ok_m, "errors": err_m},
        "errors_by_type": dict(sorted(errors.items())),
        "connect_attempts": merge_connect_attempts(sts),
        "stopped_by": stopped,
        "client_cpu": cpu_worst,
        "loop_lag_s": lag_worst,
    })
    if member == "process":
        out["process_stats"] = per
    if lost:
        out[f"lost_{names['plural']}"] = lost
    if load.open_loop:
        raws = [raw.get("sched_lags") if raw else None for _, _, raw in got]
        counts = [s.get("scheduled") for s in sts]
        scheduled = sum(counts) if all(c is not None for c in counts) else None
        if all(r is not None for r in raws):
            out.update(open_loop_stats(_pool_lags(raws), load.rate, load.arrival,
                                       ok_m + err_m, window_s, scheduled))
        else:
            out.update(_summed_sched_lags(sts, ok_m + err_m, window_s, load, scheduled))
    return out

