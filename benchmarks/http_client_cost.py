#!/usr/bin/env python3
"""What one request (or one streamed token) costs the HTTP clients in client CPU.

For each HTTP client kind - s3 (SeaweedFS `weed mini`, the real server aifb deploys), chroma (a
real `chroma run`), qdrant (tests/fakes/fake_qdrant.py), vllm and ollama (the fakes
tests/fakes/fake_openai.py and fake_ollama.py: first token after 80 ms, then one every 20 ms) -
the server is deployed by its aifb service (each in its own process), and the real client runs
one closed-loop load of `--in-flight` requests at once in this process. Printed per client:
requests/s (tokens/s for the LLM clients), the client's CPU per request (and per streamed
output token): the engine's own getrusage of this process from the window's start to its end
(load_stats.client_cpu.cpu_s) over the requests completed in that window (load_stats.measured)
- the definition of summary.json's validity.client_cpu_us_per_request - the share of a core, the
loop lag p99 and the saturation guard's verdict (summary.json validity.client_saturated). The
servers run on the same machine: their CPU is not the client's, but they compete for the cores,
so read the µs per request, not the rates. `--profile N`: cProfile of the client process during
the load (from its start, set-up left out), top N by own CPU time (profiler overhead included:
the order matters, not the seconds).

To compare two trees (before/after a change), copy this script into the other tree (`git
archive REV | tar -x -C DIR`) and run both alternately: it imports aifb from the tree it sits in.

    .venv/bin/python benchmarks/http_client_cost.py [--kinds s3 chroma qdrant vllm ollama]
        [--in-flight 128] [--seconds 6] [--warmup 2] [--profile 12] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import stat
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from aifb.analysis.summary import summarize  # noqa: E402  (after the path)
from aifb.clock import RunClock  # noqa: E402
from aifb.load.engine import run_load_sync  # noqa: E402
from aifb.services import get_service  # noqa: E402

FAKES = ROOT / "tests" / "fakes"
TTFT_MS, ITL_MS = 80, 20
VECTORS = {"vectors": 2000, "dimension": 64, "k": 10, "queries": 200, "seed": 5}


def wrapper(tmp: Path, name: str, script: str, env: dict | None = None) -> str:
    """An executable standing in for a server binary: runs a fake with this Python."""
    path = tmp / name
    exports = "".join(f"export {k}={v}\n" for k, v in (env or {}).items())
    path.write_text(f"#!/bin/sh\n{exports}exec {sys.executable} {FAKES / script} \"$@\"\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def targets(tmp: Path) -> dict:
    """kind -> (service spec, workload, what a unit of work is)."""
    return {
        "s3": ({"kind": "s3"},
               {"ops": {"get": 0.8, "put": 0.2}, "objects": 200, "object_size": "4KiB"},
               "request"),
        "chroma": ({"kind": "chroma"}, dict(VECTORS), "request"),
        "qdrant": ({"kind": "qdrant", "binary": wrapper(tmp, "qdrant", "fake_qdrant.py")},
                   dict(VECTORS), "request"),
        "vllm": ({"kind": "vllm", "model": "fake-model",
                  "binary": wrapper(tmp, "vllm", "fake_openai.py"),
                  "args": ["--ttft-ms", str(TTFT_MS), "--itl-ms", str(ITL_MS)]},
                 {"api": "openai-chat", "stream": True,
                  "prompts": {"input_tokens": 8, "output_tokens": [16, 48]}},
                 "token"),
        "ollama": ({"kind": "ollama", "model": "llama2",
                    "binary": wrapper(tmp, "ollama", "fake_ollama.py",
                                      {"FAKE_OLLAMA_TTFT_MS": TTFT_MS, "FAKE_OLLAMA_ITL_MS": ITL_MS,
                                       "FAKE_OLLAMA_LOAD_MS": 10})},
                   {"api": "ollama-chat", "stream": True,
                    "prompts": {"input_tokens": 8, "output_tokens": [16, 48]}},
                   "token"),
    }


def tokens_in_window(records: Path) -> int:
    """Output tokens of the ok requests completed in the window (llm.output_tokens.total)."""
    n = 0
    with open(records) as fh:
        for line in fh:
            r = json.loads(line)
            if r["phase"] == "measure" and r["ok"]:
                n += r.get("output_tokens") or 0
    return n


def one(kind: str, spec: dict, workload: dict, unit: str, args, tmp: Path) -> dict:
    run_dir = tmp / f"run_{kind}"
    run_dir.mkdir()
    svc_cls = get_service(kind)
    svc = svc_cls(spec, run_dir / "service", run_dir / "service.log")
    (run_dir / "service").mkdir()
    secrets = svc_cls.secrets(spec) if hasattr(svc_cls, "secrets") else {}
    endpoint = asyncio.run(svc.deploy())
    load = {"clients": 1, "concurrency": args.in_flight, "duration_s": args.seconds,
            "warmup_s": args.warmup, "timeout_s": 30.0}
    profiler = None
    if args.profile:
        import cProfile
        # CPU time, not wall time: on a shared machine the wall clock charges other
        # processes' turns to whatever function was running
        profiler = cProfile.Profile(time.process_time)
    try:
        # the profile starts when the load does (on_ready: set-up and preloading left out)
        stats = run_load_sync(kind=kind, endpoint=endpoint, workload=workload, load=load,
                              seed=20, records_path=run_dir / "requests.jsonl", clock=RunClock(),
                              secrets=secrets, log=lambda m: None,
                              on_ready=profiler and (lambda info: profiler.enable()))
        if profiler is not None:
            profiler.disable()
    finally:
        asyncio.run(svc.teardown())
    recipe = {"name": "http_client_cost", "category": "x", "service": spec, "workload": workload,
              "load": load}
    (run_dir / "run.json").write_text(json.dumps({
        "benchmark_id": f"cost-{kind}", "status": "completed", "recipe": recipe,
        "service": {"kind": kind}, "load_stats": stats}))
    validity = summarize(run_dir).get("validity") or {}
    cpu = stats.get("client_cpu") or {}
    m = stats["measured"]
    n = m["ok"] + m["errors"]
    window = stats["window_s"]
    work = tokens_in_window(run_dir / "requests.jsonl") if unit == "token" else n
    row = {
        "kind": kind, "in_flight": args.in_flight, "requests": n, "errors": m["errors"],
        "unit": unit, "work": work, "work_per_s": work / window if window else None,
        "requests_per_s": n / window if window else None,
        "cpu_s": cpu.get("cpu_s"), "util_of_one_core": cpu.get("util_of_one_core"),
        "cpu_us_per_request": cpu["cpu_s"] / n * 1e6 if cpu.get("cpu_s") is not None and n else None,
        "cpu_us_per_unit": cpu["cpu_s"] / work * 1e6 if cpu.get("cpu_s") is not None and work else None,
        "loop_lag_p99_ms": ((stats.get("loop_lag_s") or {}).get("p99") or 0) * 1e3,
        "saturated": validity.get("client_saturated"),
        "warnings": validity.get("warnings") or [],
    }
    if profiler is not None:
        row["profile"] = profile_lines(profiler, args.profile)
    return row


def profile_lines(profiler, top: int) -> list[str]:
    import io
    import pstats

    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(top)
    return [line.rstrip() for line in out.getvalue().splitlines()
            if line.strip() and not line.lstrip().startswith(("Ordered by", "List reduced"))]


def fmt(v, spec=".1f") -> str:
    return "—" if v is None else format(v, spec)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kinds", nargs="+", default=["s3", "chroma", "qdrant", "vllm", "ollama"])
    p.add_argument("--in-flight", type=int, default=128, help="requests in flight (one client)")
    p.add_argument("--seconds", type=float, default=6.0, help="measurement window per kind")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="cProfile the client process and print its top N by own time")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())} UTC, tree {ROOT}; load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; {os.cpu_count()} CPUs (the servers "
          f"share them)", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="aifb-http-cost-") as tmp:
        table = targets(Path(tmp))
        for kind in args.kinds:
            spec, workload, unit = table[kind]
            rows.append(one(kind, spec, workload, unit, args, Path(tmp)))
            r = rows[-1]
            for line in r.get("profile", []):
                print(f"  [{kind}] {line}")
            print(f"  {kind} done, load average {os.getloadavg()[0]:.2f}", flush=True)
    print("| client | in flight | requests (errors) | requests/s | tokens/s | CPU µs/request "
          "| CPU µs/token | client CPU | loop lag p99 | saturated |")
    print("|" + "---|" * 10)
    for r in rows:
        tok = r["unit"] == "token"
        cells = [r["kind"], r["in_flight"], f"{r['requests']} ({r['errors']})",
                 fmt(r["requests_per_s"], ",.0f"), fmt(r["work_per_s"], ",.0f") if tok else "—",
                 fmt(r["cpu_us_per_request"]), fmt(r["cpu_us_per_unit"]) if tok else "—",
                 fmt(r["util_of_one_core"], ".0%"), f"{fmt(r['loop_lag_p99_ms'], '.2f')} ms",
                 r["saturated"]]
        print("| " + " | ".join(str(c) for c in cells) + " |")
    print("\n".join(f"  {r['kind']}: {w}" for r in rows for w in r["warnings"]))
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
