#!/usr/bin/env python3
"""How fast is aifb's PostgreSQL load generator? Compare it with pgbench on one server.

Deploys ONE throwaway cluster with aifb's postgres service (initdb, 127.0.0.1, free port,
durable defaults), loads it with `pgbench -i -s SCALE`, then for each concurrency C runs, back
to back and interleaved (pgbench, aifb, aifb, pgbench, ... per --repeat):

    pgbench -S -M prepared -c C -j 1 -T SECONDS --log     (select-only: one point SELECT by
                                                           primary key per transaction)
    aifb engine: ops {select: 1} on pgbench's own tables (table_prefix pgbench_, prepare:
                 false), clients=1, concurrency=C (C connections, like -c C), SECONDS

and prints transactions/s of both with their ratio, and p50 / p99 latency of both. aifb's
figures come from the records it wrote (measure phase only, after 0.5 s warmup): tps =
measured completions / window, percentiles = nearest rank of t_end - t_start pooled over all
workers. pgbench's tps is its own "(without initial connection time)"; its percentiles are
computed the same way from its per-transaction --log (µs resolution). `-M prepared` matches
aifb's protocol (named prepared statements); --mode simple shows pgbench's default too.

    .venv/bin/python benchmarks/postgres_vs_pgbench.py [--seconds 5] [--concurrency 1 4]
                                                       [--scale 1] [--repeat 1] [--check]
                                                       [--floor] [--compare CHECKOUT]

It also prints aifb's client CPU per query (µs: the client's CPU seconds over the measure
window, getrusage, divided by the queries measured in it). --check exits 1 unless aifb reaches
>= 0.9 of pgbench's tps at concurrency 1 and >= 0.8 at every higher one, and recorded no
errors. The server is stopped at the end, also on error or Ctrl-C.

--compare CHECKOUT (e.g. made with `git archive main | tar -x -C /tmp/before`) runs every aifb
load in a fresh child process, alternating this checkout's aifb with the other's (imported from
CHECKOUT/src) between the same pgbench runs, and prints both against pgbench: on a shared
machine, whose speed drifts by ±10 % within minutes, the way to see a change of a few per cent.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from secrets import token_urlsafe

ROOT = Path(__file__).resolve().parent.parent
# --compare runs each aifb load in a child of this script with AIFB_BENCH_SRC naming the src/ to
# import aifb from (this checkout's or the other's)
sys.path.insert(0, os.environ.get("AIFB_BENCH_SRC") or str(ROOT / "src"))

from aifb.clock import RunClock  # noqa: E402
from aifb.load.engine import run_load_sync  # noqa: E402
from aifb.records import iter_records  # noqa: E402
from aifb.services.postgres import PostgresService  # noqa: E402


def nearest_rank(sorted_vals: list, q: float) -> float:
    return sorted_vals[max(0, math.ceil(q * len(sorted_vals)) - 1)] if sorted_vals else float("nan")


# The service requires a password (scram-sha-256); one random one for this script's cluster, in
# the environment only, read by the service, by pgbench (PGPASSWORD) and by aifb's client.
PASSWORD_ENV = "AIFB_PGBENCH_COMPARE_PASSWORD"


def pgbench_bin() -> str | None:
    found = shutil.which("pgbench")
    if found:
        return found
    cands = sorted(glob.glob("/usr/lib/postgresql/*/bin/pgbench"))
    return cands[-1] if cands else None


def pgbench(pgb: str, port: int, db: str, args: list[str], workdir: Path, timeout: float):
    env = dict(os.environ, PGHOST="127.0.0.1", PGPORT=str(port), PGUSER="postgres",
               PGPASSWORD=os.environ[PASSWORD_ENV])
    return subprocess.run([pgb, *args, db], capture_output=True, text=True, cwd=workdir,
                          env=env, timeout=timeout)


def pgbench_run(pgb: str, port: int, db: str, c: int, seconds: float, mode: str,
                workdir: Path, n: int) -> dict:
    logdir = workdir / f"pgb_c{c}_{n}"
    logdir.mkdir()
    args = ["-S", "-M", mode, "-c", str(c), "-j", "1", "-T", str(max(1, round(seconds))),
            "--log", f"--log-prefix={logdir}/log", "-n"]
    proc = pgbench(pgb, port, db, args, workdir, seconds + 120)
    if proc.returncode != 0:
        raise RuntimeError(f"pgbench failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    m = re.search(r"tps = ([\d.]+) \(without initial connection time\)", proc.stdout)
    if not m:
        raise RuntimeError(f"cannot parse pgbench output:\n{proc.stdout}")
    lat = []
    for path in logdir.glob("log*"):
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[2].isdigit():  # client tx_no time_us script epoch us
                lat.append(int(parts[2]) / 1e6)
    lat.sort()
    shutil.rmtree(logdir, ignore_errors=True)
    failed = re.search(r"number of failed transactions: (\d+)", proc.stdout)
    return {"tps": float(m.group(1)), "p50_s": nearest_rank(lat, 0.5),
            "p99_s": nearest_rank(lat, 0.99), "n": len(lat),
            "errors": int(failed.group(1)) if failed else 0,
            "cmd": "pgbench " + " ".join(args) + f" {db}"}


def floor_run(port: int, db: str, c: int, seconds: float, accounts: int) -> dict:
    """--floor: the same point SELECTs over aifb.clients.pgwire with nothing else - no engine,
    no records, no timing - c connections on one uvloop loop, each sending its next query from
    the previous one's callback. What one Python process with an event loop costs per round
    trip on this machine: the ceiling of any asyncio client here, aifb's included."""
    import uvloop
    from aifb.clients.pgwire import Statement, open_connection

    async def main():
        conns = [await open_connection("127.0.0.1", port, "postgres", db, os.environ[PASSWORD_ENV],
                                       10, "floor") for _ in range(c)]
        st = Statement("floor_select", "SELECT abalance FROM pgbench_accounts WHERE aid = $1", 1)
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        n = [0]
        end = time.monotonic_ns() + int(seconds * 1e9)
        rnd = random.Random(1).random

        def sender(conn):
            def cb(rows, tag, error, t_end):
                if error is not None or not tag:
                    if not done.done():
                        done.set_exception(RuntimeError(f"floor run failed: {error or conn.reason}"))
                    return
                n[0] += 1
                if t_end < end:
                    conn.send(st.bind(int(rnd() * accounts) + 1), cb)
                elif not done.done() and all(x.cb is None for x in conns):
                    done.set_result(None)
            return cb

        cpu0, t0 = time.process_time(), time.monotonic()
        for conn in conns:
            conn.send(st.parse() + st.bind(1), sender(conn))
        await done
        wall, cpu = time.monotonic() - t0, time.process_time() - cpu0
        for conn in conns:
            conn.close()
        return {"tps": n[0] / wall, "cpu_us_per_query": cpu * 1e6 / n[0], "n": n[0]}

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main())


def aifb_run(endpoint: str, c: int, seconds: float, scale: int, workdir: Path, n: int) -> dict:
    path = workdir / f"requests_c{c}_{n}.jsonl"
    stats = run_load_sync(
        kind="postgres", endpoint=endpoint,
        workload={"ops": {"select": 1}, "scale": scale, "table_prefix": "pgbench_",
                  "prepare": False},
        load={"clients": 1, "concurrency": c, "rate": None, "arrival": "poisson",
              "duration_s": seconds, "requests": None, "warmup_s": 0.5, "cooldown_s": 0.0,
              "timeout_s": 10.0},
        seed=42, records_path=path, clock=RunClock(), log=lambda m: None,
        secrets={"password": os.environ[PASSWORD_ENV]})
    lat, n_err = [], 0
    for r in iter_records(path):
        if r["phase"] == "measure":
            if r["ok"]:
                lat.append(r["t_end"] - r["t_start"])
            else:
                n_err += 1
    lat.sort()
    path.unlink()
    cpu = stats["client_cpu"] or {}
    return {"tps": len(lat) / stats["window_s"], "p50_s": nearest_rank(lat, 0.5),
            "p99_s": nearest_rank(lat, 0.99), "n": len(lat), "errors": n_err,
            "client_cpu": cpu.get("util_of_one_core"),
            "cpu_us_per_query": cpu["cpu_s"] * 1e6 / (len(lat) + n_err) if cpu and lat else None}


def aifb_run_in(src: Path, endpoint: str, c: int, seconds: float, scale: int, workdir: Path,
                n: int) -> dict:
    """aifb_run in a fresh child importing aifb from `src` (the password: in the environment)."""
    out = subprocess.run([sys.executable, __file__, "--one-run", json.dumps(
        [endpoint, c, seconds, scale, str(workdir), n])], capture_output=True, text=True,
        timeout=seconds + 300, env={**os.environ, "AIFB_BENCH_SRC": str(src)})
    if out.returncode != 0:
        raise RuntimeError(f"aifb from {src} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def target(c: int) -> float:
    """The least tps ratio aifb / pgbench that --check accepts at concurrency c."""
    return 0.9 if c == 1 else 0.8


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="length of each run (default 5)")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--scale", type=int, default=1, help="pgbench -i -s (default 1: 100k accounts)")
    ap.add_argument("--mode", choices=["prepared", "simple", "extended"], default="prepared",
                    help="pgbench -M (default prepared, as aifb)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="pairs of runs per tool and concurrency, interleaved A-B-B-A")
    ap.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--floor", action="store_true",
                    help="also run the bare protocol loop (no engine, no records): the ceiling "
                         "of a Python event-loop client on this machine")
    ap.add_argument("--compare", type=Path, metavar="CHECKOUT",
                    help="also run aifb from another checkout (its src/), alternating with this "
                         "one, each run in a fresh process")
    ap.add_argument("--one-run", help=argparse.SUPPRESS)   # a child of --compare
    args = ap.parse_args()
    if args.one_run:
        endpoint, c, seconds, scale, workdir, n = json.loads(args.one_run)
        print(json.dumps(aifb_run(endpoint, c, seconds, scale, Path(workdir), n)))
        return 0
    if args.compare and not (args.compare / "src" / "aifb").is_dir():
        print(f"--compare {args.compare}: no src/aifb there", file=sys.stderr)
        return 2
    pgb = pgbench_bin()
    if not pgb:
        print("pgbench not found (apt-get install postgresql-client-15)", file=sys.stderr)
        return 2

    def on_term(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_term)
    workdir = Path(tempfile.mkdtemp(prefix="aifb-pgvpgb-"))
    os.chmod(workdir, 0o755)  # the cluster's user (postgres, when run as root) must reach it
    os.environ[PASSWORD_ENV] = token_urlsafe(24)
    svc = PostgresService({"kind": "postgres", "name": "pgbench-compare", "password_env": PASSWORD_ENV},
                          workdir / "service",
                          workdir / "service.log")
    results = {}
    loop = asyncio.new_event_loop()
    try:
        endpoint = loop.run_until_complete(svc.deploy())
        port, db = svc.info.port, svc.database
        init = pgbench(pgb, port, db, ["-i", "-s", str(args.scale), "-q"], workdir, 600)
        if init.returncode != 0:
            raise RuntimeError(f"pgbench -i failed:\n{init.stdout}\n{init.stderr}")
        pgv = subprocess.run([pgb, "--version"], capture_output=True, text=True).stdout.strip()
        print(f"# PostgreSQL {svc.info.version} ({pgv}); port {port}; pgbench -i -s {args.scale} "
              f"({args.scale * 100000:,} accounts); select-only; {args.seconds:g} s per run; "
              f"pgbench -M {args.mode}; repeat {args.repeat}; settings "
              f"{json.dumps(svc.info.extra.get('settings'))}; load average "
              f"{os.getloadavg()[0]:.2f}", flush=True)
        k = 0
        for c in args.concurrency:
            pgbench_run(pgb, port, db, c, 1, args.mode, workdir, k)  # warm the cache
            pb, ours, floor, theirs = [], [], [], []

            def aifb_once():
                nonlocal k
                k += 1
                if not args.compare:
                    ours.append(aifb_run(endpoint, c, args.seconds, args.scale, workdir, k))
                    return
                # alternate which goes first, so that neither always follows pgbench
                pair = [(ours, ROOT / "src"), (theirs, args.compare / "src")]
                for runs, src in (pair if k % 2 else pair[::-1]):
                    runs.append(aifb_run_in(src, endpoint, c, args.seconds, args.scale, workdir, k))

            for _ in range(args.repeat):
                k += 1
                pb.append(pgbench_run(pgb, port, db, c, args.seconds, args.mode, workdir, k))
                aifb_once()
                aifb_once()
                if args.floor:
                    floor.append(floor_run(port, db, c, args.seconds, args.scale * 100000))
                pb.append(pgbench_run(pgb, port, db, c, args.seconds, args.mode, workdir, k))
            mean = lambda xs, key: sum(x[key] for x in xs) / len(xs)  # noqa: E731
            results[c] = {
                "pgbench": {"tps": mean(pb, "tps"), "p50_s": mean(pb, "p50_s"),
                            "p99_s": mean(pb, "p99_s"), "errors": sum(x["errors"] for x in pb),
                            "runs": pb},
                "aifb": {"tps": mean(ours, "tps"), "p50_s": mean(ours, "p50_s"),
                         "p99_s": mean(ours, "p99_s"), "errors": sum(x["errors"] for x in ours),
                         "client_cpu": mean(ours, "client_cpu"),
                         "cpu_us_per_query": mean(ours, "cpu_us_per_query"), "runs": ours},
            }
            if theirs:
                results[c]["compare"] = {
                    "tps": mean(theirs, "tps"), "p50_s": mean(theirs, "p50_s"),
                    "p99_s": mean(theirs, "p99_s"), "errors": sum(x["errors"] for x in theirs),
                    "cpu_us_per_query": mean(theirs, "cpu_us_per_query"), "runs": theirs}
            if floor:
                results[c]["floor"] = {"tps": mean(floor, "tps"),
                                       "cpu_us_per_query": mean(floor, "cpu_us_per_query"),
                                       "runs": floor}
            print(f"  c={c}: pgbench {[round(x['tps']) for x in pb]} tps, "
                  f"aifb {[round(x['tps']) for x in ours]} tps", flush=True)
    finally:
        loop.run_until_complete(svc.teardown())
        loop.close()
        shutil.rmtree(workdir, ignore_errors=True)

    print()
    print(f"{'conc':>4} | {'pgbench tps':>11} | {'aifb tps':>10} | {'ratio':>5} | "
          f"{'pgb p50 ms':>10} | {'aifb p50 ms':>11} | {'pgb p99 ms':>10} | {'aifb p99 ms':>11} | "
          f"{'aifb cpu':>8} | {'µs/query':>8}")
    print("-" * 117)
    for c, r in results.items():
        pb, ou = r["pgbench"], r["aifb"]
        print(f"{c:>4} | {pb['tps']:>11,.0f} | {ou['tps']:>10,.0f} | {ou['tps'] / pb['tps']:>5.2f} | "
              f"{pb['p50_s'] * 1e3:>10.3f} | {ou['p50_s'] * 1e3:>11.3f} | "
              f"{pb['p99_s'] * 1e3:>10.3f} | {ou['p99_s'] * 1e3:>11.3f} | {ou['client_cpu']:>8.2f} | "
              f"{ou['cpu_us_per_query']:>8.1f}")
    for c, r in results.items():
        if "floor" in r:
            f = r["floor"]
            print(f"  floor c={c}: bare protocol loop {f['tps']:,.0f} tps "
                  f"({f['tps'] / r['pgbench']['tps']:.2f}x pgbench), {f['cpu_us_per_query']:.1f} "
                  "µs of CPU per query")
    if args.compare:
        print(f"\nthis checkout against {args.compare} (runs alternated, each in a fresh process)")
        for c, r in results.items():
            a, b, pb = r["aifb"], r["compare"], r["pgbench"]
            print(f"  c={c}: tps {a['tps']:,.0f} ({a['tps'] / pb['tps']:.2f}x pgbench) vs "
                  f"{b['tps']:,.0f} ({b['tps'] / pb['tps']:.2f}x); each run "
                  f"{[round(x['tps']) for x in a['runs']]} vs {[round(x['tps']) for x in b['runs']]}"
                  f"; CPU µs/query {a['cpu_us_per_query']:.1f} vs {b['cpu_us_per_query']:.1f}; "
                  f"p50 {a['p50_s'] * 1e3:.3f} vs {b['p50_s'] * 1e3:.3f} ms")
    if args.json:
        args.json.write_text(json.dumps({str(k): v for k, v in results.items()}, indent=2))
    failures = [f"tps ratio at concurrency {c} is {r['aifb']['tps'] / r['pgbench']['tps']:.2f} "
                f"< {target(c)}" for c, r in results.items()
                if r["aifb"]["tps"] < target(c) * r["pgbench"]["tps"]]
    if any(r["aifb"]["errors"] for r in results.values()):
        failures.append("aifb recorded errors")
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")
    print("TARGETS MISSED: " + "; ".join(failures) if failures else
          "targets met: aifb tps >= 0.9 x pgbench at concurrency 1, >= 0.8 x above, no errors")
    return 1 if (failures and args.check) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt as exc:
        print(f"interrupted ({exc or 'SIGINT'}); the postgres cluster was stopped", file=sys.stderr)
        sys.exit(130)
