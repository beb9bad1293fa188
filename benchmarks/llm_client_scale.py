#!/usr/bin/env python3
"""Does the LLM client stay exact at hundreds of streams? Measured vs true TTFT and TPOT.

The FAKE OpenAI server of the tests (tests/fakes/fake_openai.py; not a model) streams every
reply on a known schedule: first token TTFT = 80 ms after the request arrives, then one token
every 20 ms (TPOT 20 ms), 16 to 48 tokens per reply (max_tokens, drawn per request; the fake
always sends that many). Ranged lengths de-phase the streams: with one length for all, every
stream ends and starts again in the same instant, and the last request of each such burst
waits for the fake to parse all the others (see tests/integration/test_llm_fakes.py).
aifb's engine drives it, closed loop, at 64, 256 and 1,024 concurrent streams (1,024 spread
over `load.processes` worker processes), and the table compares what summary.json reports
(TTFT p50, TPOT p50: aifb.analysis.metrics.llm over the measurement window) with the truth.

Two machines' worth of work share this one, so the table also says which side fell behind:
the fake logs, per request, when it received it and when it handed the first and the last
token to the kernel (--timing-log, the same perf_counter clock as the records), so

    fake TTFT late   = fake's first write - (its arrival + 80 ms)     the fake's own delay
    fake TPOT        = (fake's last write - first write) / (tokens - 1)  what it actually sent
    client read lag  = record's t_first - fake's first write          kernel + the client
    send lag         = fake's arrival - record's t_start              client send + fake accept

and the client's CPU (busiest process, share of one core), its event-loop lag p99 and the
saturation guard's verdict (summary.json validity.client_saturated, from aifb.analysis.summary,
the rule every run is judged by), the fake's CPU (all its processes, /proc, in cores) and the
whole machine's busy cores over the same interval (/proc/stat): on a shared machine, what
neither used was other processes' work, which delays both.

First, the SSE parser's cost on its own (aifb.clients.llm.stream: LineSplitter cuts each
network read with bytes.split on the whole buffer, ChunkAccumulator.feed_sse_line parses each
event): ns per byte and µs per event for one 32-token chat reply, fed one event per read and
as one read, beside a per-byte splitter for contrast.

    .venv/bin/python benchmarks/llm_client_scale.py [--streams 64 256 1024] [--seconds 8]
        [--processes 2] [--fake-workers 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from aifb.analysis.summary import summarize  # noqa: E402  (after the path)
from aifb.clock import RunClock  # noqa: E402
from aifb.load.engine import run_load_sync  # noqa: E402
from aifb.stats import quantiles_sorted  # noqa: E402

TTFT_MS, ITL_MS, TOKENS = 80.0, 20.0, 32
FAKE = ROOT / "tests" / "fakes" / "fake_openai.py"
TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_s(pids: list[int]) -> float:
    """utime + stime of these processes (and their reaped children), in seconds."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += sum(int(x) for x in fields[11:15])
    return total / TICK


def machine_busy_s() -> float:
    """CPU seconds the whole machine spent busy so far (/proc/stat, all CPUs)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / TICK   # all but idle and iowait


def client_cores(stats: dict) -> float | None:
    """The client's CPU in cores: every worker process's share of one core, summed."""
    per = stats.get("process_stats") or [stats]
    utils = [((p.get("client_cpu") or {}).get("util_of_one_core")) for p in per]
    return None if any(u is None for u in utils) else sum(utils)


def start_fakes(n: int, port: int, log: Path) -> list[subprocess.Popen]:
    args = [sys.executable, str(FAKE), "serve", "fake-model", "--port", str(port),
            "--ttft-ms", str(TTFT_MS), "--itl-ms", str(ITL_MS), "--timing-log", str(log)]
    if n > 1:
        args.append("--reuse-port")
    procs = [subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for _ in range(n)]
    import urllib.request
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                break
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError("the fake server did not start")
            time.sleep(0.1)
    time.sleep(0.5 if n > 1 else 0)   # let every reuse-port process bind
    return procs


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.send_signal(signal.SIGINT)
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def pct(values: list[float], q: float) -> float | None:
    return quantiles_sorted(sorted(values), [q])[0] if values else None


def one_level(streams: int, args, tmp: Path) -> dict:
    processes = args.processes if streams >= args.processes_from else 1
    clients = processes
    port = free_port()
    log = tmp / f"fake_{streams}.jsonl"
    run_dir = tmp / f"run_{streams}"
    run_dir.mkdir()
    fakes = start_fakes(args.fake_workers, port, log)
    workload = {"api": "openai-chat", "stream": True,
                "prompts": {"input_tokens": 8, "output_tokens": [TOKENS // 2, TOKENS * 3 // 2]}}
    load = {"clients": clients, "concurrency": streams // clients, "processes": processes,
            "duration_s": args.seconds, "warmup_s": args.warmup, "timeout_s": 30.0}
    clock = RunClock()
    profiler = None
    if args.profile and processes == 1:
        import cProfile
        profiler = cProfile.Profile()
    try:
        fake_cpu0, busy0, t0 = cpu_s([p.pid for p in fakes]), machine_busy_s(), time.monotonic()
        if profiler is not None:
            profiler.enable()
        stats = run_load_sync(kind="vllm", endpoint=f"http://127.0.0.1:{port}",
                              workload=workload, load=load, seed=16,
                              records_path=run_dir / "requests.jsonl", clock=clock,
                              log=lambda m: None)
        if profiler is not None:
            profiler.disable()
        wall = time.monotonic() - t0
        fake_cores = (cpu_s([p.pid for p in fakes]) - fake_cpu0) / wall
        machine_cores = (machine_busy_s() - busy0) / wall
    finally:
        stop(fakes)
    recipe = {"name": "llm_client_scale", "category": "inference",
              "service": {"kind": "vllm"}, "workload": workload,
              "load": {"clients": clients, "concurrency": streams // clients,
                       "processes": processes}}
    (run_dir / "run.json").write_text(json.dumps({
        "benchmark_id": f"scale-{streams}", "status": "completed", "recipe": recipe,
        "service": {"kind": "vllm"}, "load_stats": stats}))
    summary = summarize(run_dir)
    llm = summary.get("llm") or {}

    fake = {}
    for line in log.read_text().splitlines():
        e = json.loads(line)
        fake[e["request_id"]] = e
    t0_ns = clock.t0_ns
    fake_late, fake_tpot, read_lag, send_lag = [], [], [], []
    # the client's CPU is sampled at the window's ends: the token events it read in between
    # (of every request, whatever its phase) are what that CPU time paid for
    w0, w1 = stats["warmup_end"], stats["measure_end"]
    tokens_in_window = 0
    for line in (run_dir / "requests.jsonl").read_text().splitlines():
        r = json.loads(line)
        tokens_in_window += sum(1 for t in r.get("chunk_times") or () if w0 <= t <= w1)
        e = fake.get(r.get("request_id"))
        if r["phase"] != "measure" or not r["ok"] or e is None or e["first_ns"] is None:
            continue
        fake_late.append((e["first_ns"] - e["arrival_ns"]) / 1e6 - TTFT_MS)
        fake_tpot.append((e["last_ns"] - e["first_ns"]) / 1e6 / (e["tokens"] - 1))
        read_lag.append(r["t_first"] * 1e3 - (e["first_ns"] - t0_ns) / 1e6)
        send_lag.append((e["arrival_ns"] - t0_ns) / 1e6 - r["t_start"] * 1e3)
    ms = lambda block, k: None if not block or block.get(k) is None else block[k] * 1e3  # noqa: E731
    validity = summary.get("validity") or {}
    cpu = stats.get("client_cpu") or {}
    client_cpu_s = cpu.get("cpu_s_all_processes", cpu.get("cpu_s"))
    if profiler is not None:
        print_profile(profiler, streams, tokens_in_window, args.profile)
    return {
        "streams": streams, "clients": clients, "processes": processes,
        "fake_workers": args.fake_workers, "requests": summary["requests"]["ok"],
        "ttft_p50_ms": ms(llm.get("ttft_s"), "p50"), "tpot_p50_ms": ms(llm.get("tpot_s"), "p50"),
        "fake_ttft_late_p50_ms": pct(fake_late, 0.5), "fake_ttft_late_p99_ms": pct(fake_late, 0.99),
        "fake_tpot_p50_ms": pct(fake_tpot, 0.5),
        "client_read_lag_p50_ms": pct(read_lag, 0.5), "client_read_lag_p99_ms": pct(read_lag, 0.99),
        "send_lag_p50_ms": pct(send_lag, 0.5),
        "client_cpu_of_one_core": validity.get("client_cpu_util"),
        "loop_lag_p99_ms": ms(validity, "loop_lag_p99_s"),
        "fake_cpu_cores": round(fake_cores, 3),
        "client_cpu_cores": client_cores(stats),
        "tokens_in_window": tokens_in_window,
        "client_cpu_us_per_token": (round(client_cpu_s / tokens_in_window * 1e6, 2)
                                    if client_cpu_s is not None and tokens_in_window else None),
        "client_user_s": cpu.get("user_s"), "client_sys_s": cpu.get("sys_s"),
        # the whole machine over the same interval (load start to end, client start-up
        # included): what neither the fake nor the client used is other processes' work
        "machine_busy_cores": round(machine_cores, 3),
        "client_saturated": validity.get("client_saturated"),
        "warnings": validity.get("warnings") or [],
    }


def print_profile(profiler, streams: int, tokens: int, top: int) -> None:
    """The client's hot path: cProfile's top entries by own time (profiler overhead included,
    so the absolute times are inflated; the order is what matters)."""
    import io
    import pstats

    out = io.StringIO()
    st = pstats.Stats(profiler, stream=out)
    print(f"profile, {streams} streams, 1 process ({tokens} token events in the window; the "
          f"whole load profiled, {st.total_tt:.2f} s of profiled time): top {top} by own time")
    st.sort_stats("tottime").print_stats(top)
    for line in out.getvalue().splitlines():
        if line.strip() and not line.lstrip().startswith(("Ordered by", "List reduced")):
            print("  " + line.rstrip())


def sse_body() -> list[bytes]:
    """One streamed chat reply of TOKENS tokens as vLLM (and the fake) sends it, per event."""
    def ev(obj) -> bytes:
        return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    events = [ev({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                       "logprobs": None, "finish_reason": None}]})]
    for i in range(TOKENS):
        events.append(ev({**base, "choices": [{"index": 0, "delta": {"content": f" tok{i}"},
                                               "logprobs": None,
                                               "finish_reason": "length" if i == TOKENS - 1
                                               else None}]}))
    events.append(ev({**base, "choices": [], "usage": {"prompt_tokens": 8,
                                                        "completion_tokens": TOKENS}}))
    events.append(b"data: [DONE]\n\n")
    return events


def per_byte_split(data: bytes, buf: bytearray, out: list) -> None:
    """For contrast only: a splitter that looks at every byte."""
    for b in data:
        if b == 10:
            out.append(bytes(buf))
            buf.clear()
        else:
            buf.append(b)


def parse_cost(reps: int = 2000) -> dict:
    from aifb.clients.llm.stream import ChunkAccumulator, LineSplitter

    events = sse_body()
    whole = b"".join(events)
    nbytes, nev = len(whole), len(events)
    out = {"bytes": nbytes, "events": nev}

    def timed(fn) -> float:
        t = time.perf_counter_ns()
        for _ in range(reps):
            fn()
        return (time.perf_counter_ns() - t) / reps

    def split_only(reads):
        def run():
            sp = LineSplitter()
            for r in reads:
                sp.feed(r)
        return run

    def parse(reads):
        def run():
            sp, acc = LineSplitter(), ChunkAccumulator(chat=True)
            for r in reads:
                for line in sp.feed(r):
                    acc.feed_sse_line(line, 0)
        return run

    def naive():
        buf, lines = bytearray(), []
        for r in events:
            per_byte_split(r, buf, lines)

    for name, fn in (("split, one read per event", split_only(events)),
                     ("split, one read", split_only([whole])),
                     ("split + parse, one read per event", parse(events)),
                     ("per-byte split (contrast)", naive)):
        ns = timed(fn)
        out[name] = {"ns_per_byte": round(ns / nbytes, 2), "us_per_event": round(ns / nev / 1e3, 3)}
    return out


def fmt(v, spec=".2f") -> str:
    return "—" if v is None else format(v, spec)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--streams", type=int, nargs="+", default=[64, 256, 1024])
    p.add_argument("--seconds", type=float, default=8.0, help="measurement window per level")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--processes", type=int, default=2, help="load.processes at the largest levels")
    p.add_argument("--processes-from", type=int, default=1024,
                   help="use --processes from this many streams on")
    p.add_argument("--fake-workers", type=int, default=1, help="fake server processes (reuse-port)")
    p.add_argument("--json", default=None)
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="profile the client (cProfile, one-process levels) and print its top N")
    args = p.parse_args()
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"{os.cpu_count()} CPUs; truth: TTFT {TTFT_MS:g} ms, TPOT {ITL_MS:g} ms, "
          f"{TOKENS // 2}-{TOKENS * 3 // 2} tokens")
    cost = parse_cost()
    print(f"SSE parsing, one {TOKENS}-token reply ({cost['bytes']} bytes, {cost['events']} events):")
    for k, v in cost.items():
        if isinstance(v, dict):
            print(f"  {k:36s} {v['ns_per_byte']:7.2f} ns/byte  {v['us_per_event']:7.3f} µs/event")
    rows = []
    with tempfile.TemporaryDirectory(prefix="aifb-llm-scale-") as tmp:
        for n in args.streams:
            rows.append(one_level(n, args, Path(tmp)))
            print(f"  {n} streams done: {rows[-1]['requests']} requests", flush=True)
    head = ("| streams | procs | requests | TTFT p50 (err) | TPOT p50 (err) | fake TTFT late p50/p99 "
            "| fake TPOT p50 | client read lag p50/p99 | send lag p50 | client CPU "
            "| client CPU per token | loop lag p99 | fake CPU | machine busy | saturated |")
    print(head)
    print("|" + "---|" * 15)
    for r in rows:
        ttft, tpot = r["ttft_p50_ms"], r["tpot_p50_ms"]
        print(f"| {r['streams']} | {r['processes']} | {r['requests']} "
              f"| {fmt(ttft)} ms ({fmt(None if ttft is None else ttft - TTFT_MS, '+.2f')}) "
              f"| {fmt(tpot, '.3f')} ms ({fmt(None if tpot is None else tpot - ITL_MS, '+.3f')}) "
              f"| {fmt(r['fake_ttft_late_p50_ms'])} / {fmt(r['fake_ttft_late_p99_ms'])} ms "
              f"| {fmt(r['fake_tpot_p50_ms'], '.3f')} ms "
              f"| {fmt(r['client_read_lag_p50_ms'])} / {fmt(r['client_read_lag_p99_ms'])} ms "
              f"| {fmt(r['send_lag_p50_ms'])} ms | {fmt(r['client_cpu_of_one_core'], '.0%')} "
              f"| {fmt(r['client_cpu_us_per_token'], '.1f')} µs "
              f"| {fmt(r['loop_lag_p99_ms'])} ms | {fmt(r['fake_cpu_cores'])} cores "
              f"| {fmt(r['machine_busy_cores'])} of {os.cpu_count()} cores "
              f"| {r['client_saturated']} |")
    for r in rows:
        for w in r["warnings"]:
            print(f"  {r['streams']} streams: {w}")
    if args.json:
        Path(args.json).write_text(json.dumps({"parse": cost, "levels": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
