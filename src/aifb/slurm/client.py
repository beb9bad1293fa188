"""A client job's entry point: `python -m aifb.slurm.client RUN_DIR K`.

Submitted by aifb.slurm.client_jobs.ClientJobs. Reads RUN_DIR/clients/plan.json and the run's
token, connects to the benchmark job's coordinator, syncs its clock to the benchmark's t0,
drives clients [lo, hi) of the recipe with aifb.load.engine.run_load (no preload: job 0 did
it), starts at the common instant the coordinator sends, writes its records to
RUN_DIR/clients/K/requests.jsonl and reports its load stats and a second clock sync.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

import uvloop

from aifb import process
from aifb.clients import get_client, register
from aifb.clock import RunClock, now_ns
from aifb.credentials import service_secrets
from aifb.errors import AifbError
from aifb.jsonio import read_json
from aifb.load.engine import run_load
from aifb.load.share import RequestShare
from aifb.services import get_service
from aifb.slurm.channel import (MAX_LINE, SYNC_SAMPLES, TOKEN_FILE, BadMessage, Channel,
                                read_token, sleep_until)


async def _client_job(run_dir: Path, k: int, log) -> int:
    plan = read_json(run_dir / "clients" / "plan.json")
    token = read_token(run_dir / "clients" / TOKEN_FILE)
    me = plan["jobs"][k]
    host, port = plan["coordinator"]
    deadline = time.monotonic() + 60
    while True:
        try:
            reader, writer = await asyncio.open_connection(host, port, limit=MAX_LINE)
            break
        except OSError as exc:
            if time.monotonic() > deadline:
                log(f"cannot reach the benchmark job's coordinator at {host}:{port}: {exc}")
                return 1
            await asyncio.sleep(0.5)
    try:
        nonce = json.loads(await reader.readline())["nonce"]
    except (ValueError, KeyError, TypeError):
        log(f"the coordinator at {host}:{port} did not open with a nonce: not ours, stopping")
        return 1
    ch = Channel(token, str(nonce), reader, writer, side="client")
    main = asyncio.current_task()
    pongs: asyncio.Queue = asyncio.Queue()
    # requests: N is shared by all the jobs: report this job's measured count to the root
    share = RequestShare(lambda n: ch.send({"count": n}))
    go: asyncio.Future = asyncio.get_running_loop().create_future()
    finishing = {"now": False}

    async def read_loop():
        while True:
            try:
                msg = await ch.recv()
            except BadMessage as exc:
                log(f"the coordinator sent {exc}: stopping")
                break
            if msg is None:
                break
            if "pong" in msg:
                pongs.put_nowait(msg)
            elif "share" in msg:
                share.deliver(msg["share"], int(msg["t"]))
            elif "go" in msg and not go.done():
                go.set_result(int(msg["go"]))
            elif "stop" in msg:
                break
        if not finishing["now"]:
            log("the benchmark job closed the connection (or said stop): stopping")
            main.cancel()

    ch.send({"hello": k, "job_id": os.environ.get("SLURM_JOB_ID"),
             "node": os.environ.get("SLURMD_NODENAME") or socket.gethostname(),
             "host": socket.gethostname(), "pid": os.getpid()})
    await ch.drain()
    reader_task = asyncio.create_task(read_loop())

    async def sync() -> dict:
        best = None
        for i in range(SYNC_SAMPLES):
            t1 = now_ns()
            ch.send({"ping": i})
            msg = await pongs.get()
            t4 = now_ns()
            rtt = t4 - t1
            if best is None or rtt < best["rtt_ns"]:
                best = {"base_ns": (t1 + t4) // 2 - msg["t"], "uncertainty_ns": (rtt + 1) // 2,
                        "rtt_ns": rtt, "at_ns": msg["t"]}
        best["samples"] = SYNC_SAMPLES
        best["host"] = socket.gethostname()
        return best

    s0 = await sync()
    clock = RunClock(t0_ns=s0["base_ns"], t0_unix_ns=plan["t0_unix_ns"])
    log(f"clock sync: benchmark t0 = {s0['base_ns']} on this clock, +-{s0['uncertainty_ns'] / 1e3:.1f} us")
    kind = plan["kind"]
    base_cls = get_client(kind)
    # Job 0 preloads the service; this process's clients must not load it again.
    register(kind)(type(f"NoPreload{base_cls.__name__}", (base_cls,),
                        {"prepare": lambda self: asyncio.sleep(0)}))

    async def on_ready(info):
        ch.send({"ready": k, "sync": s0, "client": info.get("client")})
        await ch.drain()
        t = await go
        await sleep_until(clock.t0_ns + t)

    out_dir = run_dir / "clients" / str(k)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        secrets = service_secrets(plan["service"], get_service(kind))
        stats = await run_load(kind=kind, endpoint=plan["endpoint"], workload=plan["workload"],
                               load=me["load"], seed=me["seed"],
                               records_path=out_dir / "requests.jsonl", clock=clock,
                               secrets=secrets, log=log, on_ready=on_ready,
                               share=share if me["load"].get("requests") is not None else None,
                               identity={"benchmark_id": plan["benchmark_id"],
                                         "salt": plan.get("salt"),
                                         "client_offset": me["clients"][0]})
    except AifbError as exc:
        ch.send({"error": str(exc)})
        await ch.drain()
        log(f"FAILED: {exc}")
        return 1
    finishing["now"] = True
    s1 = await sync()
    ch.send({"done": k, "stats": stats, "sync": s1})
    await ch.drain()
    log(f"done: {stats['records_written']} records; clock drift since the start "
        f"{(s1['base_ns'] - s0['base_ns']) / 1e3:+.1f} us")
    reader_task.cancel()
    writer.close()
    return 0


def client_main(run_dir: str, k: str) -> int:
    def log(msg):
        print(f"[{process.wall_iso()}] client job {k}: {msg}", file=sys.stderr, flush=True)

    async def main():
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        return await _client_job(Path(run_dir).resolve(), int(k), log)

    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main())
    except asyncio.CancelledError:
        log("stopped (records so far are kept)")
        return 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m aifb.slurm.client RUN_DIR K", file=sys.stderr)
        return 2
    return client_main(argv[0], argv[1])


if __name__ == "__main__":
    sys.exit(main())
