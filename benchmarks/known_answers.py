#!/usr/bin/env python3
"""Known answers for the measurement rules of README "Measuring honestly" (issue 12): each
case runs aifb against a FAKE server whose timings are set here, and prints what aifb
reports beside the truth.

  shared-n     requests: N over 2 load processes whose connections answer in 2 ms and 8 ms
               (fake Redis, tests/fakes/fake_redis.py): the reported throughput against the
               sum of the two connections' own rates (the service's true rate). With N split
               per process the slow process ran alone at the end: ~0.5x of the truth.
  build        the OpenAI client against the fake OpenAI server (TTFT 50 ms) with 2k- and
               32k-token prompts: TTFT p50 against 50 ms, beside the client's own time to
               build one such request (prompt + JSON body), which is no longer inside TTFT.
  drain        synthetic records of 2 s / 20 s requests (known lengths) and a 30 s window:
               the mean latency of the requests that started in the window (the rule) and
               of those that completed in it (the old rule) against the truth.
  (the timed-out-requests case, item 5, is in benchmarks/README.md's verdict section.)

    .venv/bin/python benchmarks/known_answers.py [--case shared-n build drain]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

from aifb.clock import RunClock  # noqa: E402
from aifb.load.engine import run_load_sync  # noqa: E402
from aifb.analysis.summary import summarize  # noqa: E402


def quiet(_msg):
    pass


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def case_shared_n(tmp: Path) -> None:
    from fakes.fake_redis import serve_in_thread

    path = tmp / "shared.jsonl"
    with serve_in_thread(delays=(0.002, 0.008)) as endpoint:
        stats = run_load_sync(kind="redis", endpoint=endpoint,
                              workload={"ops": {"get": 1}, "keyspace": 100, "preload": False},
                              load={"clients": 2, "concurrency": 1, "requests": 1500,
                                    "warmup_s": 0.3, "timeout_s": 5.0, "processes": 2},
                              seed=1, records_path=path, clock=RunClock(), log=quiet)
    recs = records(path)
    wu, me = stats["warmup_end"], stats["measure_end"]
    rates = []
    for c in (0, 1):
        mine = [r for r in recs if r["client"] == c and wu <= r["t_start"] and r["t_end"] <= me]
        rates.append((len(mine) - 1) / (max(r["t_end"] for r in mine) - min(r["t_start"] for r in mine)))
    reported = stats["measured"]["ok"] / stats["window_s"]
    print(f"shared-n: connections at {rates[0]:.0f} and {rates[1]:.0f} req/s -> true rate "
          f"{sum(rates):.0f} req/s; reported {reported:.0f} req/s ({reported / sum(rates):.3f}x); "
          f"{stats['measured']['ok']} measured for requests: 1500")


def case_build(tmp: Path) -> None:
    from aifb.clients.llm.openai import VLLMClient
    from test_llm_fakes import start_openai, stop

    proc, url = start_openai("fake-model", "--ttft-ms", "50", "--itl-ms", "5")
    try:
        for tokens in (2000, 32000):
            wl = {"api": "openai-chat", "model": "fake-model",
                  "prompts": {"source": "synthetic", "input_tokens": tokens, "output_tokens": 4}}
            path = tmp / f"build-{tokens}.jsonl"
            run_load_sync(kind="vllm", endpoint=url, workload=wl,
                          load={"clients": 1, "concurrency": 1, "duration_s": 3.0,
                                "warmup_s": 0.5, "timeout_s": 10.0},
                          seed=3, records_path=path, clock=RunClock(), log=quiet)
            ttft = sorted(r["t_first"] - r["t_start"] for r in records(path)
                          if r["phase"] == "measure" and r["ok"])
            client = VLLMClient(url, wl, 3)
            client.model = "fake-model"
            from aifb.clients.llm.prompts import LLMWorkload, PromptSource
            client.prompts = PromptSource(LLMWorkload.parse(wl, "vllm", client.apis), 3)
            t = time.perf_counter()
            for w in range(10):
                client.build(w)
            build_ms = (time.perf_counter() - t) / 10 * 1e3
            print(f"build: {tokens}-token prompts: TTFT p50 {ttft[len(ttft) // 2] * 1e3:.2f} ms "
                  f"(server: 50 ms from the request's arrival, which includes the upload); "
                  f"building one request takes {build_ms:.2f} ms, no longer inside TTFT "
                  f"(n={len(ttft)})")
    finally:
        stop(proc)


def case_drain(tmp: Path) -> None:
    """Synthetic records with known lengths (the issue's scenario): 400 closed-loop clients
    issuing 2 s or 20 s requests (a seeded coin each), started at random offsets, a 30 s window
    after a 25 s warmup. Each request's latency is known exactly, so the truth is the mean of
    the lengths of the requests that started in the window."""
    import numpy as np

    run_dir = tmp / "BM-20260101-002"
    run_dir.mkdir()
    warmup_end, measure_end = 25.0, 55.0
    rng = np.random.default_rng(6)
    lines, started, completed = [], [], []
    for c in range(400):
        t, seq = float(rng.uniform(0, 20)), 0
        while t < measure_end:
            length = 2.0 if rng.random() < 0.5 else 20.0
            te = t + length
            phase = "warmup" if te < warmup_end else "measure" if te <= measure_end else "cooldown"
            lines.append({"client": c, "worker": 0, "seq": seq, "op": "chat", "t_sched": None,
                          "t_start": t, "t_first": None, "t_end": te, "ok": True, "error": None,
                          "bytes_out": 1, "bytes_in": 1, "phase": phase})
            if warmup_end <= t < measure_end:
                started.append(length)
            if phase == "measure":
                completed.append(length)
            t, seq = te, seq + 1
    lines.sort(key=lambda r: r["t_end"])
    (run_dir / "requests.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    run = {"benchmark_id": run_dir.name, "status": "completed",
           "recipe": {"name": "drain", "service": {"kind": "vllm"},
                      "load": {"clients": 400, "concurrency": 1, "duration": "30s"}, "slo": []},
           "service": {"kind": "redis"},
           "load_stats": {"warmup_end": warmup_end, "measure_end": measure_end,
                          "window_s": measure_end - warmup_end, "stopped_by": "duration"}}
    (run_dir / "run.json").write_text(json.dumps(run))
    s = summarize(run_dir)
    print(f"drain: 2 s / 20 s requests, 30 s window: true mean {np.mean(started):.3f} s; aifb "
          f"(started in the window) {s['latency_s']['mean']:.3f} s (n={s['latency_s']['n']}); "
          f"the old rule (completed in the window) {np.mean(completed):.3f} s")


CASES = {"shared-n": case_shared_n, "build": case_build, "drain": case_drain}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--case", nargs="+", choices=list(CASES), default=list(CASES))
    args = ap.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as d:
        for name in args.case:
            CASES[name](Path(d))
    return 0


if __name__ == "__main__":
    sys.exit(main())
