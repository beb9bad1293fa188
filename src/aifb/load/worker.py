"""One worker process of a load spread over `load.processes` (aifb.load.processes): run as
`python -m aifb.load.worker FD`, it talks to the parent over the socket FD, starts its block of
clients, runs an engine (aifb.load.engine.Engine) from the parent's common start instant,
appends its records to the run's requests.jsonl and reports its stats and raw samples. When the
parent writes a progress file its engine has a LiveRelay (aifb.load.live): counts and the newly
sampled latencies go to the parent at most twice a second, for the pooled live p99."""

from __future__ import annotations

import array
import asyncio
import os
import signal
import sys
import traceback

import uvloop

from aifb.errors import ServiceError
from aifb.load.engine import Engine
from aifb.load.figures import G
from aifb.load.live import LiveRelay
from aifb.load.processes import Channel
from aifb.load.share import RequestShare
from aifb.load.startup import prepare, shut_down, start_clients
from aifb.process import die_with_parent
from aifb.records import RecordWriter


def main(fd: int) -> int:
    """Entry point of a worker process (see aifb.load.processes)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C: the parent coordinates
    die_with_parent()
    if os.getppid() == 1:
        return 1
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(serve(fd))
    except (asyncio.CancelledError, KeyboardInterrupt):
        return 0


async def serve(fd: int) -> int:
    """The worker's conversation with the parent: init -> ready -> (prepare) -> go -> done."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    main_task = asyncio.current_task()
    stopper = [main_task.cancel]
    stop_msgs = ("stop", "eof")

    share_box: list = [None]

    def handle(msg) -> bool:
        if msg[0] in stop_msgs:
            stopper[0]()
            return True
        if msg[0] in ("safe", "end"):
            if share_box[0] is not None:
                share_box[0].deliver(msg[0], msg[1])
            return True
        return False

    ch = Channel(fd, loop, queue, handler=handle)
    loop.add_signal_handler(signal.SIGTERM, lambda: stopper[0]())
    _, (_, p) = await queue.get()
    lo, hi = p["clients"]

    def log(msg: str) -> None:
        ch.send("log", msg)

    share = RequestShare(lambda n: ch.send("count", n)) if p["shared"] else None
    run = p["run"].replace(log=log, share=share)
    clients, started = [], []
    try:
        try:
            clients = await start_clients(run, range(lo, hi), started)
        except ServiceError as exc:
            ch.send("error", str(exc))
            return 0
        ch.send("ready", {"pid": os.getpid()})
        _, msg = await queue.get()
        if msg[0] == "prepare":
            try:
                info = await prepare(clients[0])
            except ServiceError as exc:
                ch.send("error", str(exc))
                return 0
            ch.send("prepared", info)
            _, msg = await queue.get()
        if msg[0] != "go":
            return 0
        writer = RecordWriter(run.records_path, run.clock.t0_ns, truncate=False, background=True)
        interval = run.progress_interval_s

        def progress_cb(now, ok, err, phase):
            ch.send("progress", round((now - msg[1]) / G / interval), now, ok, err, phase)

        def live_cb(now, ok, err, phase, values, stride):
            ch.send("live", now, ok, err, phase, values, stride)

        # the parent writes a progress file: its figures, a pooled p99 included, twice a second
        run = run.replace(live=LiveRelay(live_cb) if p["live"] else None)
        share_box[0] = share
        try:
            eng = Engine(run, clients, writer, client_ids=range(lo, hi),
                         n_clients_total=p["n_clients_total"], progress_cb=progress_cb)
        except BaseException:
            writer.close()
            raise
        stats_out: dict = {}
        task = loop.create_task(eng.run(stats_out, t_load_start_ns=msg[1]))
        stopper[0] = task.cancel
        try:
            stats = await task
        except asyncio.CancelledError:
            if main_task.cancelling():
                raise
            stats = stats_out
        raw = {"sched_lags": array.array("q", eng.sched_lags).tobytes()}
        ch.send("done", stats, raw)
        return 0
    except asyncio.CancelledError:
        return 0
    except BaseException as exc:
        ch.send("failed", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")
        return 1
    finally:
        await shut_down(started)
        ch.close()


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1])))
