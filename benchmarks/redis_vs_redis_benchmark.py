#!/usr/bin/env python3
"""How fast is aifb's Redis load generator? Compare it with redis-benchmark on one server.

Starts ONE redis-server (127.0.0.1, free port, no persistence), preloads the keyspace with the
same keys redis-benchmark uses (`key:` + 12-digit index), then for each concurrency C runs,
back to back and interleaved (redis-benchmark, aifb, aifb, redis-benchmark, ... per --repeat):

    redis-benchmark -t get -c C -n N -r KEYSPACE -d SIZE --csv     (N sized to ~--seconds)
    aifb engine:    GET only, clients=1, concurrency=C  (C connections, like -c C), --seconds

and prints ops/s and p50 of both with their ratios. aifb's figures come from the records it
wrote (requests.jsonl, measure phase only): ops/s = measured completions / window, p50 =
nearest-rank median of t_end - t_start pooled over all workers. redis-benchmark's p50 is its
own (HDR histogram, 1 µs resolution in --csv).

--processes 1 2 runs aifb with load.processes = 1 and 2 (clients = processes, concurrency =
C / processes: the same C connections, spread over the worker processes).

--open-loop adds, per concurrency and process count, aifb open-loop runs at rates of
--rate-fraction (0.9; several allowed) x redis-benchmark's closed-loop ops/s of that concurrency
(its first measured run; constant
arrivals, C connections as the in-flight cap) and reports the achieved rate, the latency from
t_sched (includes queueing: no coordinated omission), the service time t_end - t_start and the
scheduling lag. Near saturation, latency from t_sched exceeds the closed-loop latency: the
closed loop stops sending while it waits, the open loop does not.

    .venv/bin/python benchmarks/redis_vs_redis_benchmark.py [--seconds 3] [--repeat 1] [--check]
        [--processes 1 2] [--open-loop [--rate-fraction 0.9]] [--compare CHECKOUT]

Client CPU per request: aifb's CPU time over the measurement window (getrusage, all its
processes) / measured requests, in µs ("cpu us/req"): what one request costs the load
generator, the figure to compare between versions on a shared machine.

--compare CHECKOUT adds closed-loop runs of aifb imported from another checkout (e.g.
`git archive 8b0a9c8 | tar -x -C /tmp/old`), alternated with this checkout's, each run in a
fresh process (both sides), and prints both sides' CPU us per request, ops/s and p50.

--check exits 1 unless (issue 20's targets): at concurrency 32 aifb's ops/s >= 0.95x
redis-benchmark's and its p50 <= 1.3x; at concurrency 1 its p50 <= 1.2x; with --open-loop also: the best achieved open-loop rate at
concurrency 32 >= 0.8 x redis-benchmark's ops/s, and the open-loop p50 (from t_sched) at
concurrency 1, at the lightest --rate-fraction, <= 2x redis-benchmark's closed-loop p50. The server is stopped at the end, also on error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# --compare runs each aifb load in a child of this script with AIFB_BENCH_SRC naming the checkout's
# src/ to import aifb from (this one's, or the other's)
sys.path.insert(0, os.environ.get("AIFB_BENCH_SRC") or str(ROOT / "src"))

from aifb import process  # noqa: E402
from aifb.clock import RunClock  # noqa: E402
from aifb.load.engine import run_load_sync  # noqa: E402

# --check's targets, closed loop, against redis-benchmark in the same run (issue 20)
OPS_RATIO_MIN_C32 = 0.95   # aifb's ops/s at concurrency 32, at least this x redis-benchmark's
P50_RATIO_MAX_C32 = 1.3    # its p50 at concurrency 32, at most this x redis-benchmark's
P50_RATIO_MAX_C1 = 1.2     # its p50 at concurrency 1


def redis_benchmark(port: int, c: int, n: int, keyspace: int, size: int) -> dict:
    cmd = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-t", "get", "-c", str(c),
           "-n", str(n), "-r", str(keyspace), "-d", str(size), "--csv"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True).stdout
    rows = [r for r in csv.DictReader(io.StringIO(out)) if r.get("test") == "GET"]
    if not rows:
        raise RuntimeError(f"cannot parse redis-benchmark output:\n{out}")
    r = rows[0]
    return {"ops_s": float(r["rps"]), "p50_s": float(r["p50_latency_ms"]) / 1e3,
            "p99_s": float(r["p99_latency_ms"]) / 1e3, "cmd": " ".join(cmd)}


def aifb_run(port: int, c: int, seconds: float, keyspace: int, size: int, workdir: Path,
             processes: int = 1, rate: float | None = None) -> dict:
    path = workdir / f"requests_c{c}_p{processes}_{'open' if rate else 'closed'}.jsonl"
    logs: list[str] = []
    try:
        stats = _run(path, port, c, seconds, keyspace, size, processes, rate, logs.append)
    except Exception:
        print("\n".join(logs), file=sys.stderr)
        raise
    return _figures(path, stats, rate)


def aifb_run_in(src: Path, port: int, c: int, seconds: float, keyspace: int, size: int,
                workdir: Path) -> dict:
    """aifb_run (closed loop, one process) in a fresh child importing aifb from `src`."""
    out = subprocess.run([sys.executable, __file__, "--one-run", json.dumps(
        [port, c, seconds, keyspace, size, str(workdir)])], capture_output=True, text=True,
        timeout=600, env={**os.environ, "AIFB_BENCH_SRC": str(src)})
    if out.returncode != 0:
        raise RuntimeError(f"aifb from {src} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _run(path, port, c, seconds, keyspace, size, processes, rate, log) -> dict:
    return run_load_sync(
        kind="redis", endpoint=f"redis://127.0.0.1:{port}",
        workload={"ops": {"get": 1}, "keyspace": keyspace, "value_size": size,
                  "key_prefix": "key:", "preload": False},
        load={"clients": processes, "concurrency": max(1, c // processes), "rate": rate,
              "arrival": "constant", "duration_s": seconds, "requests": None, "warmup_s": 0.5,
              "cooldown_s": 0.0, "timeout_s": 5.0, "processes": processes},
        seed=42, records_path=path, clock=RunClock(), log=log)


def _figures(path: Path, stats: dict, rate: float | None) -> dict:
    import polars as pl

    df = pl.read_ndjson(path, schema={"t_sched": pl.Float64, "t_start": pl.Float64,
                                      "t_end": pl.Float64, "ok": pl.Boolean, "phase": pl.String})
    path.unlink()
    m = df.filter(pl.col("phase") == "measure")
    ok = m.filter(pl.col("ok"))
    n_err = m.height - ok.height
    svc = (ok["t_end"] - ok["t_start"]).sort().to_list()
    lat = (ok["t_end"] - ok["t_sched"]).sort().to_list() if rate else svc
    lag = (m["t_start"] - m["t_sched"]).sort().to_list() if rate else []

    def p(xs: list, q: float) -> float:  # nearest rank
        return xs[max(0, math.ceil(q * len(xs)) - 1)] if xs else float("nan")

    cpu = stats["client_cpu"] or {}
    cpu_s = cpu.get("cpu_s_all_processes", cpu.get("cpu_s"))
    return {"ops_s": m.height / stats["window_s"], "p50_s": p(lat, 0.5), "p99_s": p(lat, 0.99),
            "cpu_us_per_req": cpu_s / m.height * 1e6 if cpu_s is not None and m.height else None,
            "svc_p50_s": p(svc, 0.5), "svc_p99_s": p(svc, 0.99),
            "sched_lag_p99_s": p(lag, 0.99) if rate else None, "errors": n_err,
            "cpu": (stats["client_cpu"] or {}).get("util_of_one_core"),
            "cpu_all": (stats["client_cpu"] or {}).get("util_all_processes",
                                                        (stats["client_cpu"] or {}).get("util_of_one_core")),
            "lag_p99_s": (stats.get("loop_lag_s") or {}).get("p99"),
            "offered": rate, "n": m.height, "processes": stats.get("processes", 1)}


def preload(port: int, keyspace: int, size: int) -> None:
    import asyncio

    import uvloop

    from aifb.clients.redis import RedisClient

    async def go():
        c = RedisClient(f"redis://127.0.0.1:{port}", {"ops": {"get": 1}, "keyspace": keyspace,
                        "value_size": size, "key_prefix": "key:"}, seed=42)
        await c.startup(1)
        await c.validate()
        await c.prepare()
        await c.shutdown()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as r:
        r.run(go())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="length of each run (default 3)")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--keyspace", type=int, default=10000)
    ap.add_argument("--size", type=int, default=128, help="value size in bytes (default 128)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="pairs of runs per tool and concurrency, interleaved A-B-B-A")
    ap.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--compare", type=Path, metavar="CHECKOUT",
                    help="also run the closed loop with aifb from another checkout (e.g. one made "
                         "with `git archive`), alternating with this one, each run in a fresh "
                         "process: its CPU us per request, ops/s and p50 against this one's")
    ap.add_argument("--one-run", help=argparse.SUPPRESS)   # a child of --compare
    ap.add_argument("--processes", type=int, nargs="+", default=[1],
                    help="load.processes values to run aifb with (e.g. 1 2)")
    ap.add_argument("--open-loop", action="store_true",
                    help="also run aifb open loop at --rate-fraction x redis-benchmark's ops/s")
    ap.add_argument("--rate-fraction", type=float, nargs="+", default=[0.9],
                    help="open-loop rates as fractions of redis-benchmark's ops/s (first run of "
                         "that concurrency), e.g. 0.3 0.6 0.9")
    ap.add_argument("--open-min-concurrency", type=int, default=8,
                    help="open loop only at concurrencies >= this (one connection cannot carry "
                         "an open-loop rate near its closed-loop throughput without queueing)")
    args = ap.parse_args()
    if args.one_run:
        port, c, seconds, keyspace, size, workdir = json.loads(args.one_run)
        print(json.dumps(aifb_run(port, c, seconds, keyspace, size, Path(workdir))))
        return 0
    if args.compare and not (args.compare / "src" / "aifb").is_dir():
        print(f"--compare {args.compare}: no src/aifb there", file=sys.stderr)
        return 2
    for b in ("redis-server", "redis-benchmark"):
        if not shutil.which(b):
            print(f"{b} not found on PATH (apt-get install redis-server redis-tools)", file=sys.stderr)
            return 2

    def on_term(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_term)
    workdir = Path(tempfile.mkdtemp(prefix="aifb-rvrb-"))
    port = process.free_port()
    # maxclients above the largest concurrency (redis-benchmark and aifb each open C, plus the
    # preload connection); redis lowers it by itself when its `ulimit -n` does not allow it.
    maxclients = max(10000, max(args.concurrency) + 100)
    proc = process.spawn(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                         "--appendonly", "no", "--maxclients", str(maxclients),
                         "--dir", str(workdir)], workdir / "redis.log")
    results = {}
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                preload(port, args.keyspace, args.size)
                break
            except Exception:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.05)
        version = subprocess.run(["redis-server", "--version"], capture_output=True,
                                 text=True).stdout.strip()
        print(f"# {version}; port {port}; GET, keyspace {args.keyspace}, value {args.size} B, "
              f"{args.seconds:g} s per run, repeat {args.repeat}; {os.cpu_count()} CPUs, load "
              f"average {' '.join(f'{x:.2f}' for x in os.getloadavg())} at start", flush=True)
        for c in args.concurrency:
            est = redis_benchmark(port, c, 20000, args.keyspace, args.size)  # warm-up + sizing
            n = max(10000, int(est["ops_s"] * args.seconds))
            rb = []
            ours: dict[tuple, list] = {}
            modes = [("closed", P) for P in args.processes]
            if args.open_loop:
                # Below --open-min-concurrency only the lightest rate: one connection cannot carry
                # a rate near its closed-loop throughput without queueing, but at a light rate
                # its latency from t_sched is comparable with the closed-loop p50.
                fracs = args.rate_fraction if c >= args.open_min_concurrency \
                    else [min(args.rate_fraction)]
                modes += [(f"open{f:g}", P) for f in fracs for P in args.processes]
            if args.compare:
                modes.append(("compare", 1))

            def ours_once():
                for mode, P in modes:
                    ref = rb[0]["ops_s"] if rb else est["ops_s"]
                    rate = float(mode[4:]) * ref if mode.startswith("open") else None
                    if args.compare and (mode, P) in (("closed", 1), ("compare", 1)):
                        src = ROOT / "src" if mode == "closed" else args.compare / "src"
                        run = aifb_run_in(src, port, c, args.seconds, args.keyspace, args.size,
                                          workdir)
                    else:
                        run = aifb_run(port, c, args.seconds, args.keyspace, args.size, workdir,
                                       P, rate)
                    ours.setdefault((mode, P), []).append(run)

            for _ in range(args.repeat):   # A-B-B-A: redis-benchmark, aifb x2, redis-benchmark
                rb.append(redis_benchmark(port, c, n, args.keyspace, args.size))
                ours_once()
                ours_once()
                rb.append(redis_benchmark(port, c, n, args.keyspace, args.size))
            mean = lambda xs, k: sum(x[k] for x in xs) / len(xs)  # noqa: E731
            entry = {"redis_benchmark": {"ops_s": mean(rb, "ops_s"), "p50_s": mean(rb, "p50_s"),
                                         "p99_s": mean(rb, "p99_s"), "runs": rb}}
            for (mode, P), runs in ours.items():
                entry[f"aifb_{mode}_p{P}"] = {
                    k: (mean(runs, k) if runs[0][k] is not None else None)
                    for k in ("ops_s", "p50_s", "p99_s", "svc_p50_s", "svc_p99_s",
                              "sched_lag_p99_s", "cpu", "cpu_all", "cpu_us_per_req", "lag_p99_s")}
                entry[f"aifb_{mode}_p{P}"].update(
                    {"errors": sum(o["errors"] for o in runs), "offered": runs[0]["offered"],
                     "runs": runs})
            results[c] = entry
            print(f"  c={c}: redis-benchmark {[round(x['ops_s']) for x in rb]} ops/s; "
                  + "; ".join(f"aifb {m} P={P} {[round(x['ops_s']) for x in r]}"
                              for (m, P), r in ours.items()), flush=True)
    finally:
        process.stop(proc)
        shutil.rmtree(workdir, ignore_errors=True)

    print()
    print("closed loop (latency = t_end - t_start); ratio = aifb / redis-benchmark")
    print(f"{'conc':>4} {'P':>2} | {'rb ops/s':>10} | {'aifb ops/s':>10} | {'ratio':>5} | "
          f"{'rb p50 ms':>9} | {'aifb p50 ms':>11} | {'p50 ratio':>9} | {'rb p99 ms':>9} | "
          f"{'aifb p99 ms':>11} | {'cpu max':>7} | {'cpu sum':>7} | {'us/req':>6} | {'lag99 ms':>8}")
    print("-" * 144)
    for c, r in results.items():
        rb = r["redis_benchmark"]
        for P in args.processes:
            ou = r[f"aifb_closed_p{P}"]
            print(f"{c:>4} {P:>2} | {rb['ops_s']:>10,.0f} | {ou['ops_s']:>10,.0f} | "
                  f"{ou['ops_s'] / rb['ops_s']:>5.2f} | {rb['p50_s'] * 1e3:>9.3f} | "
                  f"{ou['p50_s'] * 1e3:>11.3f} | {ou['p50_s'] / rb['p50_s']:>9.2f} | "
                  f"{rb['p99_s'] * 1e3:>9.3f} | {ou['p99_s'] * 1e3:>11.3f} | {ou['cpu']:>7.2f} | "
                  f"{ou['cpu_all']:>7.2f} | {ou['cpu_us_per_req'] or float('nan'):>6.1f} | "
                  f"{(ou['lag_p99_s'] or 0) * 1e3:>8.2f}")
    if args.open_loop:
        print()
        print("open loop at a fraction of redis-benchmark's ops/s (its first run at that "
              "concurrency; constant arrivals; latency = t_end - t_sched, service = t_end - t_start)")
        print(f"{'conc':>4} {'P':>2} {'frac':>4} | {'offered/s':>10} | {'achieved/s':>10} | {'ach/off':>7} | "
              f"{'lat p50 ms':>10} | {'lat p99 ms':>10} | {'svc p50 ms':>10} | {'svc p99 ms':>10} | "
              f"{'sched lag p99':>13} | {'rb p50/p99 ms':>13} | {'cpu sum':>7}")
        print("-" * 140)
        for c, r in results.items():
            rb = r["redis_benchmark"]
            for f, P in [(f, P) for f in args.rate_fraction for P in args.processes]:
                ou = r.get(f"aifb_open{f:g}_p{P}")
                if ou is None:
                    continue
                print(f"{c:>4} {P:>2} {f:>4g} | {ou['offered']:>10,.0f} | {ou['ops_s']:>10,.0f} | "
                      f"{ou['ops_s'] / ou['offered']:>7.2f} | {ou['p50_s'] * 1e3:>10.3f} | "
                      f"{ou['p99_s'] * 1e3:>10.3f} | {ou['svc_p50_s'] * 1e3:>10.3f} | "
                      f"{ou['svc_p99_s'] * 1e3:>10.3f} | {ou['sched_lag_p99_s'] * 1e3:>10.3f} ms | "
                      f"{rb['p50_s'] * 1e3:>5.3f}/{rb['p99_s'] * 1e3:<7.3f} | {ou['cpu_all']:>7.2f}")
    if args.compare:
        print(f"\nthis checkout against {args.compare} (closed loop, one process, runs alternated)")
        for c, r in results.items():
            a, b = r["aifb_closed_p1"], r["aifb_compare_p1"]
            print(f"  c={c}: CPU us/request {a['cpu_us_per_req']:.2f} vs {b['cpu_us_per_req']:.2f} "
                  f"(each run: {[round(x['cpu_us_per_req'], 2) for x in a['runs']]} vs "
                  f"{[round(x['cpu_us_per_req'], 2) for x in b['runs']]}); ops/s {a['ops_s']:,.0f} "
                  f"vs {b['ops_s']:,.0f}; p50 {a['p50_s'] * 1e3:.3f} vs {b['p50_s'] * 1e3:.3f} ms")
    if args.json:
        args.json.write_text(json.dumps({str(k): v for k, v in results.items()}, indent=2))

    failures = []
    P0 = args.processes[0]
    if 32 in results:
        ours, rb = results[32][f"aifb_closed_p{P0}"], results[32]["redis_benchmark"]
        ratio = ours["ops_s"] / rb["ops_s"]
        if ratio < OPS_RATIO_MIN_C32:
            failures.append(f"ops/s ratio at concurrency 32 is {ratio:.2f} < {OPS_RATIO_MIN_C32}")
        ratio = ours["p50_s"] / rb["p50_s"]
        if ratio > P50_RATIO_MAX_C32:
            failures.append(f"p50 at concurrency 32 is {ratio:.2f}x redis-benchmark's > "
                            f"{P50_RATIO_MAX_C32}x")
    if 1 in results:
        ratio = results[1][f"aifb_closed_p{P0}"]["p50_s"] / results[1]["redis_benchmark"]["p50_s"]
        if ratio > P50_RATIO_MAX_C1:
            failures.append(f"p50 at concurrency 1 is {ratio:.2f}x redis-benchmark's > "
                            f"{P50_RATIO_MAX_C1}x")
    if args.open_loop and 32 in results:
        # The first issue's throughput target, open loop: the highest achieved rate (any offered
        # fraction) against redis-benchmark's mean closed-loop ops/s.
        best = max(results[32][f"aifb_open{f:g}_p{P0}"]["ops_s"] for f in args.rate_fraction)
        ratio = best / results[32]["redis_benchmark"]["ops_s"]
        print(f"open loop, c=32: best achieved {best:,.0f}/s = {ratio:.2f} x redis-benchmark")
        if ratio < 0.8:
            failures.append(f"open-loop achieved rate at concurrency 32 is {ratio:.2f} x "
                            "redis-benchmark's ops/s < 0.8")
    if args.open_loop and 1 in results:
        f = min(args.rate_fraction)
        ratio = results[1][f"aifb_open{f:g}_p{P0}"]["p50_s"] / results[1]["redis_benchmark"]["p50_s"]
        print(f"open loop, c=1 at {f:g} x its rate: p50 from t_sched = {ratio:.2f} x "
              "redis-benchmark's p50")
        if ratio > 2.0:
            failures.append(f"open-loop p50 at concurrency 1 is {ratio:.2f}x redis-benchmark's > 2x")
    if any(v["errors"] for r in results.values() for k, v in r.items() if k.startswith("aifb")):
        failures.append("aifb recorded errors")
    print(f"\nload average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if failures:
        print("TARGETS MISSED: " + "; ".join(failures))
    else:
        print(f"targets met: at c=32 ops/s >= {OPS_RATIO_MIN_C32}x and p50 <= {P50_RATIO_MAX_C32}x, "
              f"at c=1 p50 <= {P50_RATIO_MAX_C1}x"
              + (" (closed and open loop)" if args.open_loop else "")
              if {1, 32} <= set(results) else "(targets are checked at concurrency 1 and 32)")
    return 1 if (failures and args.check) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt as exc:
        print(f"interrupted ({exc or 'SIGINT'}); redis-server stopped", file=sys.stderr)
        sys.exit(130)
