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

    .venv/bin/python benchmarks/redis_vs_redis_benchmark.py [--seconds 3] [--repeat 1] [--check]

--check exits 1 unless: ops/s ratio >= 0.8 at concurrency 32, and aifb's p50 at concurrency 1
is <= 2x redis-benchmark's. The server is stopped at the end, also on error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from aifb import launch  # noqa: E402
from aifb.clock import RunClock  # noqa: E402
from aifb.engine import run_load_sync  # noqa: E402
from aifb.records import iter_records  # noqa: E402


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


def aifb_run(port: int, c: int, seconds: float, keyspace: int, size: int, workdir: Path) -> dict:
    path = workdir / f"requests_c{c}.jsonl"
    stats = run_load_sync(
        kind="redis", endpoint=f"redis://127.0.0.1:{port}",
        workload={"ops": {"get": 1}, "keyspace": keyspace, "value_size": size,
                  "key_prefix": "key:", "preload": False},
        load={"clients": 1, "concurrency": c, "rate": None, "arrival": "poisson",
              "duration_s": seconds, "requests": None, "warmup_s": 0.5, "cooldown_s": 0.0,
              "timeout_s": 5.0},
        seed=42, records_path=path, clock=RunClock(), log=lambda m: None)
    lat = []
    n_err = 0
    for r in iter_records(path):
        if r["phase"] == "measure":
            if r["ok"]:
                lat.append(r["t_end"] - r["t_start"])
            else:
                n_err += 1
    lat.sort()
    n = len(lat) + n_err
    def p(q: float) -> float:  # nearest rank
        return lat[max(0, math.ceil(q * len(lat)) - 1)] if lat else float("nan")

    return {"ops_s": n / stats["window_s"], "p50_s": p(0.5), "p99_s": p(0.99), "errors": n_err,
            "cpu": (stats["client_cpu"] or {}).get("util_of_one_core"), "n": n}


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
    args = ap.parse_args()
    for b in ("redis-server", "redis-benchmark"):
        if not shutil.which(b):
            print(f"{b} not found on PATH (apt-get install redis-server redis-tools)", file=sys.stderr)
            return 2

    def on_term(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_term)
    workdir = Path(tempfile.mkdtemp(prefix="aifb-rvrb-"))
    port = launch.free_port()
    proc = launch.spawn(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                         "--appendonly", "no", "--dir", str(workdir)], workdir / "redis.log")
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
              f"{args.seconds:g} s per run, repeat {args.repeat}", flush=True)
        for c in args.concurrency:
            est = redis_benchmark(port, c, 20000, args.keyspace, args.size)  # warm-up + sizing
            n = max(10000, int(est["ops_s"] * args.seconds))
            rb, ours = [], []
            for _ in range(args.repeat):
                rb.append(redis_benchmark(port, c, n, args.keyspace, args.size))
                ours.append(aifb_run(port, c, args.seconds, args.keyspace, args.size, workdir))
                ours.append(aifb_run(port, c, args.seconds, args.keyspace, args.size, workdir))
                rb.append(redis_benchmark(port, c, n, args.keyspace, args.size))
            mean = lambda xs, k: sum(x[k] for x in xs) / len(xs)  # noqa: E731
            results[c] = {
                "redis_benchmark": {"ops_s": mean(rb, "ops_s"), "p50_s": mean(rb, "p50_s"),
                                    "p99_s": mean(rb, "p99_s"), "runs": rb},
                "aifb": {"ops_s": mean(ours, "ops_s"), "p50_s": mean(ours, "p50_s"),
                         "p99_s": mean(ours, "p99_s"), "errors": sum(o["errors"] for o in ours),
                         "client_cpu": mean(ours, "cpu"), "runs": ours},
            }
            print(f"  c={c}: redis-benchmark {[round(x['ops_s']) for x in rb]} ops/s, "
                  f"aifb {[round(x['ops_s']) for x in ours]} ops/s", flush=True)
    finally:
        launch.stop(proc)
        shutil.rmtree(workdir, ignore_errors=True)

    print()
    print(f"{'conc':>4} | {'rb ops/s':>10} | {'aifb ops/s':>10} | {'ratio':>5} | "
          f"{'rb p50 ms':>9} | {'aifb p50 ms':>11} | {'p50 ratio':>9} | {'rb p99 ms':>9} | "
          f"{'aifb p99 ms':>11} | {'aifb cpu':>8}")
    print("-" * 112)
    for c, r in results.items():
        rb, ou = r["redis_benchmark"], r["aifb"]
        print(f"{c:>4} | {rb['ops_s']:>10,.0f} | {ou['ops_s']:>10,.0f} | "
              f"{ou['ops_s'] / rb['ops_s']:>5.2f} | {rb['p50_s'] * 1e3:>9.3f} | "
              f"{ou['p50_s'] * 1e3:>11.3f} | {ou['p50_s'] / rb['p50_s']:>9.2f} | "
              f"{rb['p99_s'] * 1e3:>9.3f} | {ou['p99_s'] * 1e3:>11.3f} | {ou['client_cpu']:>8.2f}")
    if args.json:
        args.json.write_text(json.dumps({str(k): v for k, v in results.items()}, indent=2))

    failures = []
    if 32 in results:
        ratio = results[32]["aifb"]["ops_s"] / results[32]["redis_benchmark"]["ops_s"]
        if ratio < 0.8:
            failures.append(f"ops/s ratio at concurrency 32 is {ratio:.2f} < 0.8")
    if 1 in results:
        ratio = results[1]["aifb"]["p50_s"] / results[1]["redis_benchmark"]["p50_s"]
        if ratio > 2.0:
            failures.append(f"p50 at concurrency 1 is {ratio:.2f}x redis-benchmark's > 2x")
    if any(r["aifb"]["errors"] for r in results.values()):
        failures.append("aifb recorded errors")
    print()
    if failures:
        print("TARGETS MISSED: " + "; ".join(failures))
    else:
        print("targets met: ops/s ratio >= 0.8 at c=32, p50 <= 2x at c=1"
              if {1, 32} <= set(results) else "(targets are checked at concurrency 1 and 32)")
    return 1 if (failures and args.check) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt as exc:
        print(f"interrupted ({exc or 'SIGINT'}); redis-server stopped", file=sys.stderr)
        sys.exit(130)
