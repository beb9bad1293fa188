#!/usr/bin/env python3
"""Run-to-run noise of identical Redis benchmarks: the evidence behind the default rerun
tolerances in aifb.analysis.compare.DEFAULT_TOLERANCE.

Runs the same recipe N times back to back (each on a freshly deployed redis-server, exactly as
`aifb run` does), then prints, for throughput, p50 and p99: every run's value, the relative
spread (std/mean) and the largest relative difference between any two runs. A rerun tolerance
must exceed that largest difference, or identical runs would be judged "not reproduced".

    .venv/bin/python benchmarks/rerun_noise.py [--runs 6] [--duration 5s] [--clients 2]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
from pathlib import Path

from aifb.workflow import registry
from aifb.workflow.recipe import validate
from aifb.workflow.runner import run_benchmark
from aifb.analysis.summary import summarize


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=6)
    ap.add_argument("--duration", default="5s")
    ap.add_argument("--warmup", default="1s")
    ap.add_argument("--clients", type=int, default=2)
    args = ap.parse_args()
    recipe = validate({"name": "noise", "category": "storage", "service": {"kind": "redis"},
                       "workload": {"ops": {"get": 0.9, "set": 0.1}, "value_size": 128,
                                    "keyspace": 10000},
                       "load": {"clients": args.clients, "concurrency": 1,
                                "duration": args.duration, "warmup": args.warmup}})
    values = {"rps": [], "p50": [], "p99": []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for i in range(args.runs):
            bid = registry.allocate(registry.make_entry(recipe), root)
            run = run_benchmark(bid, root=root, log=lambda m: None)
            if run["status"] != "completed":
                print(f"run {i + 1}: {run['status']} ({run['reason']})", file=sys.stderr)
                return 1
            s = summarize(root / "results" / bid)
            values["rps"].append(s["throughput"]["rps"])
            values["p50"].append(s["latency_s"]["p50"])
            values["p99"].append(s["latency_s"]["p99"])
            print(f"run {i + 1}/{args.runs}: {values['rps'][-1]:,.0f} req/s, "
                  f"p50 {values['p50'][-1] * 1e6:.1f} µs, p99 {values['p99'][-1] * 1e6:.1f} µs",
                  flush=True)
    print(f"\n{args.runs} identical runs: redis, {args.clients} clients x 1, {args.duration} "
          f"after {args.warmup} warmup")
    print(f"{'metric':>6} | {'mean':>12} | {'std/mean':>8} | {'max pairwise diff':>17}")
    for name, vals in values.items():
        mean = statistics.fmean(vals)
        cv = statistics.stdev(vals) / mean if len(vals) > 1 and mean else float("nan")
        worst = max(abs(a - b) / min(a, b) for a, b in itertools.combinations(vals, 2))
        shown = f"{mean:,.0f}" if name == "rps" else f"{mean * 1e6:.1f} µs"
        print(f"{name:>6} | {shown:>12} | {cv:8.1%} | {worst:17.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
