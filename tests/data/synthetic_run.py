"""Synthetic results/<id>/ directories (run.json + requests.jsonl) with known numbers, for the
summary and report tests. Written independently of aifb: it returns the exact latencies it
wrote, so tests can check the summary against numpy computed on the same values.

Run as a script to regenerate the small checked-in fixtures in tests/data/:
    python tests/data/synthetic_run.py
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ERROR_TYPES = ("TimeoutError", "ConnectionError")


@dataclass
class Expected:
    latencies: np.ndarray            # ok measure-phase latencies as written (rounded times)
    latencies_by_op: dict
    service_times: np.ndarray        # t_end - t_start of ok measure requests (open loop)
    sched_lags: np.ndarray           # t_start - t_sched of all measure requests (open loop)
    total: int
    ok: int
    errors_by_type: dict
    ok_by_op: dict
    errors_by_op: dict
    ok_bytes: int
    window_s: float | None
    measure_t_min: float = 0.0
    measure_t_max: float = 0.0
    phases: dict = field(default_factory=dict)


def _r9(x):
    return np.round(np.asarray(x, dtype=float), 9)


def run_json(bid="BM-20260109-001", *, status="completed", reason=None, open_loop=False,
             clients=2, concurrency=1, rate=None, slo=("p95 < 5ms", "error_rate < 5%"),
             load_stats=None, name="redis_synthetic") -> dict:
    load = {"clients": clients, "concurrency": concurrency, "duration": "10s", "warmup": "1s"}
    if open_loop:
        load["rate"] = rate or 200.0
        load["arrival"] = "poisson"
    return {
        "benchmark_id": bid,
        "created_at": "2026-01-09T10:00:00Z",
        "finished_at": "2026-01-09T10:00:12Z",
        "status": status,
        "reason": reason,
        "recipe": {"name": name, "category": "storage", "purpose": "Sweep baseline",
                   "target": "local", "service": {"kind": "redis"},
                   "workload": {"ops": {"get": 0.9, "set": 0.1}, "value_size": 128,
                                "keyspace": 10000},
                   "load": load, "slo": list(slo), "seed": 42},
        "recipe_hash": "sha256:" + "ab" * 32,
        "git_commit": "0123456789abcdef0123456789abcdef01234567",
        "git_dirty": True,
        "target": "local",
        "service": {"kind": "redis", "name": "redis-BM", "managed": True,
                    "endpoint": "redis://127.0.0.1:6390", "host": "127.0.0.1", "port": 6390,
                    "pid": 4242, "job_id": None, "binary": "/usr/bin/redis-server",
                    "version": "7.0.15", "started_at": "2026-01-09T10:00:00Z",
                    "ready_at": "2026-01-09T10:00:00.05Z"},
        "clients": {"count": clients, "concurrency": concurrency, "job_ids": [],
                    "hosts": ["localhost"], "command": ["aifb", "load", "--client", "0"]},
        "environment": {"framework": "aifb", "framework_version": "0.1.0", "python": "3.11.2",
                        "os": "Linux-6.1-x86_64", "hostname": "testhost",
                        "cpu_model": "Synthetic CPU @ 2.0GHz", "cpu_count": 2, "gpus": []},
        "load_stats": load_stats,
        "rerun_of": None,
    }


def write_run(run_dir: Path, *, per_client=500, clients=2, open_loop=False, n_errors=(12, 8),
              warmup_per_client=50, cooldown_per_client=30, seed=7, truncate=False,
              window_from_load_stats=True, status="completed", reason=None,
              slo=("p95 < 5ms", "error_rate < 5%"), load_stats_extra=None, t_first=False,
              extra_fields=True, latency_scale=1.0) -> Expected:
    """Write run.json and requests.jsonl. Per client: `warmup_per_client` warmup requests
    (latency 50 ms, above every measured one, so including them would show in max), `per_client` measure requests, and
    `cooldown_per_client` cooldown requests (latency 80 ms). Errors (measure phase) are spread
    over the measure requests: n_errors[i] of ERROR_TYPES[i]. Ops: every 10th request is 'set'.
    latency_scale multiplies every measured latency (a known difference between two runs)."""
    rng = np.random.default_rng(seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    lat_ok, svc_ok, lags, ops_ok = [], [], [], []
    ok_bytes = 0
    errors_by_type: dict = {}
    ok_by_op: dict = {}
    errors_by_op: dict = {}
    t_meas = []
    n_measure = per_client * clients
    # choose which measure requests fail (global index over all clients' measure requests)
    err_idx = rng.choice(n_measure, size=sum(n_errors), replace=False)
    err_type_of = {}
    k = 0
    for t, cnt in zip(ERROR_TYPES, n_errors):
        for i in err_idx[k:k + cnt]:
            err_type_of[int(i)] = t
        k += cnt
    phases = {"warmup": 0, "measure": 0, "cooldown": 0}
    gi = 0
    # The phases are common instants for all clients, as in the engine: every warmup request
    # ends before the first measured one starts, and the cooldown starts after the window, so
    # "started in the window" (the latency sample) and "completed in it" (throughput) agree.
    clock = {c: 0.001 * (c + 1) for c in range(clients)}
    seqs = {c: 0 for c in range(clients)}
    ends: list = []  # (phase, t_end) of every request so far
    for phase, count in (("warmup", warmup_per_client), ("measure", per_client),
                         ("cooldown", cooldown_per_client)):
        if phase != "warmup":
            barrier = max([*clock.values(), *(e for _, e in ends)]) + 0.02
            clock = {c: barrier + 0.001 * (c + 1) for c in range(clients)}
        for c in range(clients):
            t, seq = clock[c], seqs[c]
            for _ in range(count):
                op = "set" if seq % 10 == 9 else "get"
                if phase == "measure":
                    lat = (float(rng.lognormal(np.log(0.001), 0.6)) * (2.0 if op == "set" else 1.0)
                           * latency_scale)
                else:
                    lat = 0.05 if phase == "warmup" else 0.08
                queue = float(rng.exponential(0.0005)) if open_loop else 0.0
                t_sched = t if open_loop else None
                t_start = t + queue
                t_end = t_start + lat
                ts, te = float(_r9(t_start)), float(_r9(t_end))
                tsc = float(_r9(t_sched)) if open_loop else None
                ok = True
                error = None
                if phase == "measure" and gi in err_type_of:
                    ok = False
                    error = {"type": err_type_of[gi], "message": "synthetic failure"}
                bo, bi = (40, 128) if op == "get" else (168, 5)
                rec = {"client": c, "worker": 0, "seq": seq, "op": op, "t_sched": tsc,
                       "t_start": ts, "t_first": (float(_r9(t_start + lat / 2)) if t_first else None),
                       "t_end": te, "ok": ok, "error": error, "bytes_out": bo,
                       "bytes_in": bi if ok else 0, "phase": phase}
                if extra_fields:
                    rec["key"] = f"aifb:{seq}"  # a service-specific field the summary ignores
                lines.append(json.dumps(rec, separators=(",", ":")))
                phases[phase] += 1
                ends.append((phase, te))
                if phase == "measure":
                    t_meas.append((tsc if open_loop else ts, te))  # the window opens at the first (planned) start
                    if open_loop:
                        lags.append(ts - tsc)
                    if ok:
                        lat_ok.append(te - (tsc if open_loop else ts))
                        svc_ok.append(te - ts)
                        ops_ok.append(op)
                        ok_bytes += bo + bi
                        ok_by_op[op] = ok_by_op.get(op, 0) + 1
                    else:
                        errors_by_type[error["type"]] = errors_by_type.get(error["type"], 0) + 1
                        errors_by_op[op] = errors_by_op.get(op, 0) + 1
                    gi += 1
                seq += 1
                t = t_end + 0.0001 if not open_loop else t + 0.002
            clock[c], seqs[c] = t, seq
    # interleave clients by completion time, as a real writer appends on completion
    order = np.argsort([json.loads(line)["t_end"] for line in lines], kind="stable")
    text = "".join(lines[i] + "\n" for i in order)
    if truncate:
        text += lines[0][: len(lines[0]) // 2]  # a crash mid-line
    (run_dir / "requests.jsonl").write_text(text, encoding="utf-8")

    tmin = min(a for a, _ in t_meas) if t_meas else 0.0
    tmax = max(b for _, b in t_meas) if t_meas else 0.0
    window = round(tmax - tmin + 0.01, 6) if window_from_load_stats and t_meas else None
    load_stats = None
    if window is not None:
        load_stats = {"t_load_start": 0.0, "warmup_end": tmin, "measure_end": tmin + window,
                      "t_load_end": tmax + 40.0, "window_s": window,
                      "requests_issued": len(lines), "stopped_by": "duration",
                      "client_cpu": {"cpu_s": 1.2, "util_of_one_core": 0.35},
                      "loop_lag_s": {"p50": 0.0001, "p99": 0.0008, "max": 0.002},
                      "offered_rate": 200.0 if open_loop else None,
                      "achieved_rate": (len(lat_ok) / window) if open_loop else len(lat_ok) / window,
                      "sched_lag_s": {"p50": 0.0004, "p99": 0.002, "max": 0.004}}
        load_stats.update(load_stats_extra or {})
    run = run_json(status=status, reason=reason, open_loop=open_loop, clients=clients, slo=slo,
                   load_stats=load_stats)
    (run_dir / "run.json").write_text(json.dumps(run, indent=2), encoding="utf-8")

    lat_ok_a = np.array(lat_ok)
    ops_a = np.array(ops_ok)
    return Expected(
        latencies=lat_ok_a,
        latencies_by_op={op: lat_ok_a[ops_a == op] for op in sorted(set(ops_ok))},
        service_times=np.array(svc_ok), sched_lags=np.array(lags),
        total=n_measure, ok=len(lat_ok), errors_by_type=errors_by_type, ok_by_op=ok_by_op,
        errors_by_op=errors_by_op, ok_bytes=ok_bytes,
        window_s=window if window is not None else (tmax - tmin),
        measure_t_min=tmin, measure_t_max=tmax, phases=phases)


def write_failed_run(run_dir: Path, reason="redis-server did not become ready within 30 s "
                     "(port 6390 in use)") -> None:
    """A run that failed before any request: empty requests.jsonl, no load_stats."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "requests.jsonl").write_text("", encoding="utf-8")
    run = run_json(status="failed", reason=reason)
    run.pop("load_stats")
    (run_dir / "run.json").write_text(json.dumps(run, indent=2), encoding="utf-8")


if __name__ == "__main__":
    here = Path(__file__).resolve().parent
    write_run(here / "BM-20260109-001", per_client=100, warmup_per_client=10,
              cooldown_per_client=5, n_errors=(2, 1))
    write_failed_run(here / "BM-20260109-002")
    print("wrote", here / "BM-20260109-001", here / "BM-20260109-002")
