#!/usr/bin/env python3
"""Can summary.json be computed from 10 million request records in <= 15 s and <= 2 GiB?

Generates a run directory with a realistic requests.jsonl (what the engine writes: the same
fields, order and 9-decimal times; 2 ops (get 90 % / set 10 %), 64 clients x 4 workers, ~0.5 %
errors of two types with messages, warmup 5 % and cooldown 2 % of the records, closed loop by
default or open loop with t_sched), and a run.json (recipe with SLO, load_stats). The writer is
vectorised (polars builds each line with concat_str and writes them as CSV without quoting):
~10 s for 10 M lines here, not json.dumps per row.

Then runs `aifb.analysis.summary.summarize(run_dir)` in a child process, --repeat times, and reports the
child's wall time (process start to exit, imports included), the time inside summarize(), and
the child's peak RSS (resource.getrusage of the child via os.wait4: ru_maxrss).

    .venv/bin/python benchmarks/summary_10m.py [--records 10000000] [--repeat 2] [--open-loop]
                                               [--dir DIR] [--keep] [--check]

--check exits 1 when the slowest child's wall time exceeds --max-seconds (15) or its peak RSS
exceeds --max-rss-gib (2). The generated directory is removed unless --keep or --dir is given
(an existing --dir with the same record count is reused).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

CHUNK = 1_000_000
G = 1_000_000_000


def _ns_text(col):
    """Integer ns column -> 'S.NNNNNNNNN' (exactly the engine's ns_to_s_text for ns >= 0)."""
    import polars as pl

    return pl.concat_str([(col // G).cast(pl.String), pl.lit("."),
                          (col % G).cast(pl.String).str.zfill(9)])


def generate(run_dir: Path, n: int, open_loop: bool, seed: int = 42) -> dict:
    import numpy as np
    import polars as pl

    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "requests.jsonl"
    rng = np.random.default_rng(seed)
    n_clients, n_workers = 64, 4
    slots = n_clients * n_workers
    rate = 100_000.0                      # completions per second overall
    duration_ns = int(n / rate * G)
    warm_end = int(duration_ns * 0.05)
    meas_end = int(duration_ns * 0.98)
    t_base = 1 * G                        # the load starts 1 s after t0
    t0 = time.perf_counter()
    with open(path, "wb") as fh:
        for start in range(0, n, CHUNK):
            m = min(CHUNK, n - start)
            idx = np.arange(start, start + m, dtype=np.int64)
            slot = idx % slots
            client = slot // n_workers
            worker = slot % n_workers
            # completion order = file order (as the engine writes); each client's seq counts
            # its records in that order: n_workers per round over all slots
            seq = (idx // slots) * n_workers + worker
            t_end = t_base + (idx * G / rate).astype(np.int64) + rng.integers(0, 5_000, m)
            lat = (rng.lognormal(np.log(180_000), 0.35, m)).astype(np.int64)   # ~0.18 ms
            slow = rng.random(m) < 0.001
            lat[slow] += rng.integers(1_000_000, 20_000_000, int(slow.sum()))  # tail
            t_start = t_end - lat
            is_set = rng.random(m) < 0.1
            err_draw = rng.random(m)
            timeout = err_draw < 0.003
            conn_err = (err_draw >= 0.003) & (err_draw < 0.005)
            ok = ~(timeout | conn_err)
            rel_end = t_end - t_base
            phase = np.where(rel_end < warm_end, 0, np.where(rel_end <= meas_end, 1, 2))
            df = pl.DataFrame({
                "client": client, "worker": worker, "seq": seq, "t_start": t_start,
                "t_end": t_end, "is_set": is_set, "ok": ok, "timeout": timeout,
                "phase": phase, "sched": t_start - rng.integers(2_000, 60_000, m),
            })
            op = pl.when(pl.col("is_set")).then(pl.lit('"set"')).otherwise(pl.lit('"get"'))
            err = (pl.when(pl.col("ok")).then(pl.lit("null"))
                   .when(pl.col("timeout"))
                   .then(pl.lit('{"type":"Timeout","message":"no reply within 2 s"}'))
                   .otherwise(pl.lit('{"type":"ConnectionError","message":"connection to '
                                     '127.0.0.1:6379 lost (closed by the server)"}')))
            bytes_out = pl.when(pl.col("is_set")).then(pl.lit("128")).otherwise(pl.lit("0"))
            bytes_in = (pl.when(~pl.col("ok")).then(pl.lit("null"))
                        .when(pl.col("is_set")).then(pl.lit("0")).otherwise(pl.lit("128")))
            ph = (pl.when(pl.col("phase") == 0).then(pl.lit("warmup"))
                  .when(pl.col("phase") == 1).then(pl.lit("measure")).otherwise(pl.lit("cooldown")))
            sched = _ns_text(pl.col("sched")) if open_loop else pl.lit("null")
            line = pl.concat_str([
                pl.lit('{"client":'), pl.col("client").cast(pl.String),
                pl.lit(',"worker":'), pl.col("worker").cast(pl.String),
                pl.lit(',"seq":'), pl.col("seq").cast(pl.String),
                pl.lit(',"op":'), op,
                pl.lit(',"t_sched":'), sched,
                pl.lit(',"t_start":'), _ns_text(pl.col("t_start")),
                pl.lit(',"t_first":null,"t_end":'), _ns_text(pl.col("t_end")),
                pl.lit(',"ok":'), pl.when(pl.col("ok")).then(pl.lit("true")).otherwise(pl.lit("false")),
                pl.lit(',"error":'), err,
                pl.lit(',"bytes_out":'), bytes_out,
                pl.lit(',"bytes_in":'), bytes_in,
                pl.lit(',"phase":"'), ph, pl.lit('"}'),
            ]).alias("line")
            df.select(line).write_csv(fh, include_header=False, quote_style="never")
    gen_s = time.perf_counter() - t0
    window_s = (meas_end - warm_end) / G
    recipe = {"name": "summary_10m", "category": "storage", "target": "local",
              "service": {"kind": "redis"},
              "workload": {"ops": {"get": 0.9, "set": 0.1}, "value_size": 128},
              "load": {"clients": n_clients, "concurrency": n_workers,
                       **({"rate": rate} if open_loop else {}),
                       "duration": f"{window_s}s", "warmup": f"{warm_end / G}s"},
              "slo": ["p99 < 100ms", "error_rate < 1%"], "seed": seed}
    load_stats = {"window_s": window_s, "warmup_end": 1 + warm_end / G,
                  "measure_end": 1 + meas_end / G, "stopped_by": "duration",
                  "client_cpu": {"cpu_s": 0.5 * window_s, "util_of_one_core": 0.5},
                  "loop_lag_s": {"n": 1000, "p50": 0.0001, "p99": 0.001, "max": 0.002}}
    if open_loop:
        load_stats.update({"offered_rate": rate, "achieved_rate": rate})
    run = {"benchmark_id": "BM-20260101-001", "status": "completed", "reason": None,
           "recipe": recipe, "recipe_hash": "sha256:0", "service": {"kind": "redis"},
           "load_stats": load_stats, "records": n}
    (run_dir / "run.json").write_text(json.dumps(run, indent=1))
    return {"records": n, "bytes": path.stat().st_size, "generate_s": gen_s}


CHILD = """
import os, sys, time, json
t = time.perf_counter()
from aifb.analysis import summary as S
from aifb.analysis.summary import summarize
t_imp = time.perf_counter() - t
if os.environ.get("AIFB_BENCH_PROPOSED"):
    # The change proposed for summary.stats_by_op (same output): sort each op's latencies on
    # their own instead of sorting (op, latency) rows by latency and gathering the strings.
    def stats_by_op(frame, col):
        if frame.height == 0:
            return {}
        parts = frame.select("op", col).drop_nulls(col).partition_by("op", as_dict=True)
        return {op: S.stats_sorted(parts[(op,)][col].sort().to_numpy())
                for op in sorted(k[0] for k in parts)}
    S.stats_by_op = stats_by_op
t = time.perf_counter()
s = summarize(sys.argv[1])
print(json.dumps({"import_s": t_imp, "summarize_s": time.perf_counter() - t,
                  "n": s["latency_s"]["n"], "total": s["requests"]["total"],
                  "p99": s["latency_s"]["p99"], "rps": s["throughput"]["rps"]}))
"""


def time_child(run_dir: Path, threads: int | None = None, proposed: bool = False) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    if proposed:
        env["AIFB_BENCH_PROPOSED"] = "1"
    if threads:
        env["POLARS_MAX_THREADS"] = str(threads)
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(run_dir)], stdout=subprocess.PIPE,
                            env=env)
    out = proc.stdout.read()
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"summarize failed (exit code {proc.returncode})")
    res = json.loads(out)
    res.update({"wall_s": wall, "max_rss_gib": ru.ru_maxrss * 1024 / 2**30,
                "cpu_s": ru.ru_utime + ru.ru_stime})
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=10_000_000)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--open-loop", action="store_true")
    ap.add_argument("--dir", type=Path, help="run directory to create (or reuse)")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--max-seconds", type=float, default=15.0)
    ap.add_argument("--max-rss-gib", type=float, default=2.0)
    ap.add_argument("--threads", type=int, nargs="+", default=[0],
                    help="POLARS_MAX_THREADS for the child, e.g. --threads 1 2 to compare "
                         "(interleaved per repeat); 0 = polars' default (one per CPU)")
    ap.add_argument("--proposed", action="store_true",
                    help="also time the proposed stats_by_op change (monkeypatched in the child; "
                         "same output), interleaved with the current code")
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()

    run_dir = args.dir or Path(tempfile.mkdtemp(prefix="aifb-sum10m-"))
    try:
        existing = run_dir / "run.json"
        if existing.is_file() and json.loads(existing.read_text()).get("records") == args.records \
                and (json.loads(existing.read_text())["recipe"]["load"].get("rate") is not None) \
                == args.open_loop:
            info = {"records": args.records, "bytes": (run_dir / "requests.jsonl").stat().st_size,
                    "generate_s": None}
            print(f"# reusing {run_dir}")
        else:
            info = generate(run_dir, args.records, args.open_loop)
            print(f"# generated {info['records']:,} records, {info['bytes'] / 2**30:.2f} GiB in "
                  f"{info['generate_s']:.1f} s -> {run_dir}")
        print(f"# {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start; "
              f"{'open' if args.open_loop else 'closed'} loop")
        runs, proposed_runs = [], []
        for i in range(args.repeat):
            for th, prop in [(th, p) for th in args.threads
                             for p in ((False, True) if args.proposed else (False,))]:
                r = time_child(run_dir, th, prop)
                (proposed_runs if prop else runs).append(r)
                print(f"run {i + 1}, threads {th or 'default'}"
                      f"{', PROPOSED stats_by_op' if prop else ''}: wall {r['wall_s']:.2f} s "
                      f"(import {r['import_s']:.2f} s, summarize {r['summarize_s']:.2f} s), cpu {r['cpu_s']:.1f} s, "
                      f"peak RSS {r['max_rss_gib']:.2f} GiB; n={r['n']:,} of {r['total']:,} "
                      f"measured, p99 {r['p99'] * 1e3:.3f} ms, {r['rps']:,.0f} req/s", flush=True)
        worst_wall = max(r["wall_s"] for r in runs)
        worst_rss = max(r["max_rss_gib"] for r in runs)
        print(f"worst: wall {worst_wall:.2f} s (limit {args.max_seconds:g}), peak RSS "
              f"{worst_rss:.2f} GiB (limit {args.max_rss_gib:g}); load average now "
              f"{os.getloadavg()[0]:.2f}")
        if proposed_runs:
            print(f"proposed stats_by_op: worst wall {max(r['wall_s'] for r in proposed_runs):.2f} s, "
                  f"mean cpu {sum(r['cpu_s'] for r in proposed_runs) / len(proposed_runs):.1f} s "
                  f"vs {sum(r['cpu_s'] for r in runs) / len(runs):.1f} s now")
        failed = worst_wall > args.max_seconds or worst_rss > args.max_rss_gib
        print("LIMITS MISSED" if failed else "limits met")
        return 1 if (failed and args.check) else 0
    finally:
        if not (args.keep or args.dir):
            shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
