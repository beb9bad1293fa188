"""`load.processes: P` (> 1): the parent's side of a load spread over P worker processes on one
host: spawning them (`python -m aifb.load.worker FD`), the message channel to each, the common
start, the shared `requests: N`, stopping, reaping, and the merge of their stats (aifb.load.merge).
Each worker is aifb.load.worker."""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from aifb.clients import get_client
from aifb.clock import RunClock, now_ns
from aifb.errors import ServiceError
from aifb.load.figures import G, seconds
from aifb.load.merge import merge_stats
from aifb.load.settings import LoadRun
from aifb.load.shard import split
from aifb.load.share import SHARE_TICK_S, RequestQuota
from aifb.load.startup import announce_ready, finish, run_identity
from aifb.records import PHASES, RecordWriter


# `load.processes: P` (> 1): P worker processes, each a full engine on its own uvloop driving a
# contiguous block of the clients (global client indices, seeds and open-loop schedules are
# those of the one-process run). The parent only coordinates:
#
#   spawn P workers (`python -m aifb.load.worker FD`, a socketpair for messages)
#   -> each: startup + validate its clients -> "ready" (or "error": ServiceError in the parent,
#      before the records file is even opened)
#   -> worker 0 (which holds client 0): prepare -> "prepared"; on_ready(info)
#   -> parent truncates requests.jsonl and sends every worker "go" with one start instant
#      t_load_start (now + START_DELAY), so warmup_end / measure_end / stop are the same
#      CLOCK_MONOTONIC instants in every process (perf_counter_ns is CLOCK_MONOTONIC, one
#      clock for all processes of a host; t0 is the parent's)
#   -> each worker appends its records to the same requests.jsonl (O_APPEND, one write() of
#      whole lines per batch: the kernel serialises O_APPEND writes on a local file system, so
#      batches of different processes never interleave inside a line) and sends "done" with
#      its load_stats and raw samples; the parent merges them.
#   -> meanwhile, when the parent has a progress file (run.live), each worker sends "live" at
#      most twice a second: its counts and its latency sample's new values (aifb.load.live
#      LiveRelay); the parent pools them (LiveLoad.pool) and writes the summed counts and a p99
#
# Requests mode (`requests: N`): N is shared (RequestShare / RequestQuota, aifb.load.share): every process
# keeps its load on until all of them together have completed N measured requests; the window
# ends then, for all (at least N measured records, up to a share tick's worth more).
# Stopping: cancellation of run_load (SIGINT/SIGTERM in the runner) sends "stop" to every
# worker, which cancels its engine (completed records are written) and reports; a worker that
# does not finish in time gets SIGTERM, then SIGKILL. A worker also stops on SIGTERM, when its
# socket to the parent closes (parent gone) and - PR_SET_PDEATHSIG - when the parent dies.

START_DELAY_NS = 100_000_000     # "go" -> the common start instant
WORKER_GRACE_S = 5.0             # after "stop": time to write records and report


class Channel:
    """Pickled messages between the parent and a worker over one socket (8-byte length +
    pickle), read by the event loop as bytes arrive. The event loop makes the socket
    non-blocking (libuv does), so frames are reassembled here; a send switches the socket to
    blocking for the length of one frame (messages from the parent are small; a worker's final
    report may be megabytes, which the parent's reader drains as it comes). Messages go to
    `handler(msg)` when it returns True, else to the queue as (tag, msg); EOF (the peer is gone)
    is the message ("eof",)."""

    def __init__(self, fd: int, loop, queue: asyncio.Queue, tag=None, handler=None):
        self.fd, self.loop, self.queue, self.tag, self.handler = fd, loop, queue, tag, handler
        self.closed = False
        self.buf = bytearray()
        loop.add_reader(fd, self._readable)

    def _deliver(self, msg) -> None:
        if self.handler is None or not self.handler(msg):
            self.queue.put_nowait((self.tag, msg))

    def _readable(self) -> None:
        eof = False
        while True:
            try:
                data = os.read(self.fd, 1 << 20)
            except BlockingIOError:
                break
            except OSError:
                eof = True
                break
            if not data:
                eof = True
                break
            self.buf += data
        buf = self.buf
        while len(buf) >= 8:
            n = int.from_bytes(buf[:8], "little")
            if len(buf) < 8 + n:
                break
            msg = pickle.loads(bytes(buf[8:8 + n]))
            del buf[:8 + n]
            self._deliver(msg)
        if eof:
            self._stop_reading()
            self._deliver(("eof",))

    def _stop_reading(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                self.loop.remove_reader(self.fd)
            except (ValueError, OSError):
                pass

    def send(self, *msg) -> bool:
        data = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
        frame = memoryview(len(data).to_bytes(8, "little") + data)
        try:
            blocking = os.get_blocking(self.fd)
            os.set_blocking(self.fd, True)
            try:
                while frame:
                    frame = frame[os.write(self.fd, frame):]
            finally:
                os.set_blocking(self.fd, blocking)
            return True
        except OSError:
            return False

    def close(self) -> None:
        self._stop_reading()
        if self.fd >= 0:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = -1



def worker_argv(fd: int) -> list[str]:
    """The command line of a worker process talking over descriptor `fd`."""
    return [sys.executable, "-m", "aifb.load.worker", str(fd)]


async def run_load_processes(run: LoadRun) -> dict:
    """run_load over `load.processes` worker processes (see the comment above)."""
    kind, load, clock, log, share = run.kind, run.load, run.clock, run.log, run.share
    processes = load.processes
    get_client(kind)  # an unknown kind fails here, before any process starts
    n_clients = load.clients
    n_proc = min(processes, n_clients)
    if n_proc < processes:
        log(f"load.processes={processes} but only {n_clients} clients: using {n_proc} processes")
    blocks = split(n_clients, n_proc)
    shared = load.requests is not None  # one N for all the workers (RequestShare)
    quota: RequestQuota | None = None
    quota_task: asyncio.Task | None = None
    counts = [0] * n_proc

    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    procs: list[subprocess.Popen] = []
    chans: list[Channel] = []
    parts: list = [None] * n_proc
    finished = [False] * n_proc
    lost: list[dict] = []
    ticks: dict[int, dict] = {}
    last_mark = [None]
    t_go = None

    def progress(k: int, msg) -> None:
        _, tick, now, ok, err, phase = msg
        row = ticks.setdefault(tick, {})
        row[k] = (now, ok, err, phase)
        if len(row) < n_proc:
            return
        del ticks[tick]
        now = max(v[0] for v in row.values())
        ok = sum(v[1] for v in row.values())
        err = sum(v[2] for v in row.values())
        phase = max((v[3] for v in row.values()), key=PHASES.index)
        prev = last_mark[0] or (t_go or now, 0)
        rate = (ok + err - prev[1]) / ((now - prev[0]) / G) if now > prev[0] else 0.0
        last_mark[0] = (now, ok + err)
        log(f"[{(now - (t_go or now)) / G:7.1f} s] {phase:8s} {ok} ok, {err} errors, "
            f"{rate:,.0f} ops/s ({n_proc} processes)")

    latest: dict[int, tuple] = {}

    def live(k: int, msg) -> None:
        """A worker's LiveRelay message: pool its sample values, write the summed counts."""
        _, now, ok, err, phase, values, stride = msg
        latest[k] = (now, ok, err, phase)
        run.live.pool(k, values, stride)
        write_live()

    def write_live() -> None:
        rows = latest.values()
        now = max(v[0] for v in rows)
        run.live.tick(now, now - t_go, sum(v[1] for v in rows), sum(v[2] for v in rows),
                      max((v[3] for v in rows), key=PHASES.index))

    def handler_for(k: int):
        def handle(msg) -> bool:
            if msg[0] == "log":
                log(f"[process {k}] {msg[1]}")
                return True
            if msg[0] == "progress":
                progress(k, msg)
                return True
            if msg[0] == "live":
                live(k, msg)
                return True
            if msg[0] == "count":
                counts[k] = msg[1]
                if quota is not None:
                    quota.update(k, msg[1])
                return True
            return False
        return handle

    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[2])  # src/, above aifb/load/processes.py
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")

    pending_other: list = []

    async def next_msg(k: int):
        for i, (tag, msg) in enumerate(pending_other):
            if tag == k:
                del pending_other[i]
                return msg
        while True:
            tag, msg = await queue.get()
            if tag == k:
                return msg
            pending_other.append((tag, msg))

    async def expect(k: int, what: str):
        """The next message of worker k, which must be `what`; ServiceError on its error or exit."""
        msg = await next_msg(k)
        if msg[0] == what:
            return msg
        if msg[0] == "error":
            raise ServiceError(msg[1])
        if msg[0] == "eof":
            finished[k] = True
            await asyncio.sleep(0.05)
            rc = procs[k].poll()
            raise ServiceError(f"client process {k} (pid {procs[k].pid}) exited before the "
                               f"load started (exit code {rc}); see its messages above")
        if msg[0] == "failed":
            raise RuntimeError(f"client process {k} failed: {msg[1]}")
        raise RuntimeError(f"client process {k}: unexpected message {msg[0]!r}")

    def take(tag, msg) -> None:
        """A message that arrives once the load runs: done, failed, eof."""
        if msg[0] == "done":
            parts[tag] = (msg[1], msg[2])
        elif msg[0] == "failed":
            log(f"[process {tag}] failed: {msg[1]}")
        elif msg[0] == "error":
            log(f"[process {tag}] {msg[1]}")
        elif msg[0] == "eof":
            if not finished[tag]:
                finished[tag] = True
                if parts[tag] is None:
                    rc = procs[tag].poll()
                    lost.append({"process": tag, "pid": procs[tag].pid, "exit_code": rc})
                    log(f"client process {tag} (pid {procs[tag].pid}) ended without reporting "
                        f"(exit code {rc}): stopping the others")
                    for ch in chans:
                        ch.send("stop")

    async def collect(deadline_s: float | None) -> None:
        for tag, msg in pending_other:
            take(tag, msg)
        pending_other.clear()
        end = None if deadline_s is None else loop.time() + deadline_s
        while not all(finished):
            timeout = None if end is None else end - loop.time()
            if timeout is not None and timeout <= 0:
                return
            if timeout is None:
                tag, msg = await queue.get()
            else:
                getter = loop.create_task(queue.get())
                done, _ = await asyncio.wait({getter}, timeout=timeout)
                if not done:
                    getter.cancel()
                    return
                tag, msg = getter.result()
            take(tag, msg)

    # What every worker runs: this run without the parent's callbacks (they stay here), with a
    # plain clock (t0 is the parent's) and the identity fixed once for all of them.
    for_worker = run.replace(log=None, on_ready=None, stats_out=None, share=None, live=None,
                             clock=RunClock(t0_ns=clock.t0_ns, t0_unix_ns=clock.t0_unix_ns),
                             identity=run_identity(run.identity))
    started = False
    cancelled = False
    try:
        for k, (lo, hi) in enumerate(blocks):
            mine, theirs = socket.socketpair()
            try:
                proc = subprocess.Popen(worker_argv(theirs.fileno()), pass_fds=(theirs.fileno(),),
                                        stdin=subprocess.DEVNULL, env=env)
            finally:
                theirs.close()
            procs.append(proc)
            ch = Channel(mine.detach(), loop, queue, tag=k, handler=handler_for(k))
            chans.append(ch)
            ch.send("init", {"index": k, "run": for_worker, "clients": (lo, hi),
                             "n_clients_total": n_clients, "shared": shared,
                             "live": run.live is not None})
        pids = [p.pid for p in procs]
        for k in range(n_proc):
            await expect(k, "ready")
        chans[0].send("prepare")
        _, info = await expect(0, "prepared")
        info["t_ready"] = seconds(now_ns() - clock.t0_ns)
        log(f"{kind}: {n_clients} client(s) x {load.concurrency} connection(s) ready in {n_proc} processes "
            f"(pids {', '.join(map(str, pids))})"
            + (f", preloaded in {info['prepare_s']:.2f} s" if info["prepare_s"] > 0.01 else ""))
        await announce_ready(run, info)
        RecordWriter(run.records_path, clock.t0_ns).close()  # create / truncate; workers append
        t_go = now_ns() + START_DELAY_NS
        for ch in chans:
            ch.send("go", t_go)
        started = True
        if shared:
            def relay(kind: str, t: int) -> None:
                for ch in chans:
                    ch.send(kind, t)

            if share is None:  # the root: this parent decides the end
                quota = RequestQuota(load.requests, n_proc, clock.t0_ns, relay)
                for k, c in enumerate(counts):
                    quota.update(k, c)
                quota_task = loop.create_task(quota.run())
            else:  # a member of a larger share (a Slurm client job): report the sum, relay
                share.target = relay

                async def report_up():
                    last = -1
                    while True:
                        if sum(counts) != last:
                            last = sum(counts)
                            share.report(last)
                        await asyncio.sleep(SHARE_TICK_S)

                quota_task = loop.create_task(report_up())
        await collect(None)
    except asyncio.CancelledError:
        cancelled = True
        raise
    finally:
        if quota_task is not None:
            quota_task.cancel()
        for ch, done in zip(chans, finished):
            if not done:
                ch.send("stop")
        if started:
            try:
                await collect(load.timeout_s + WORKER_GRACE_S if cancelled
                              else WORKER_GRACE_S)
            except asyncio.CancelledError:
                pass
        reap(procs)
        for ch in chans:
            ch.close()
        if run.live is not None and latest:   # the final counts, whenever the last write was
            run.live.due = 0
            write_live()
        if started and any(p is not None for p in parts):
            merged = merge_stats(parts, blocks=blocks, pids=[p.pid for p in procs], load=load,
                                 lost=lost)
            if quota is not None:
                merged["shared_requests"] = quota.describe()
            if cancelled:
                merged["stopped_by"] = "cancelled"
            if run.stats_out is not None:
                run.stats_out.update(merged)
            if cancelled:
                log(f"load cancelled: {merged['records_written']} records written")
    if not any(p is not None for p in parts):
        raise RuntimeError("no client process reported its statistics (see the log above)")
    return finish(merged, info, log, f" ({n_proc} processes)")


def reap(procs: list, grace_s: float = WORKER_GRACE_S) -> None:
    """Wait for the workers to exit; SIGTERM, then SIGKILL the ones that do not. None is left."""
    deadline = time.monotonic() + grace_s
    for sig in (None, signal.SIGTERM, signal.SIGKILL):
        for p in procs:
            if sig is not None and p.poll() is None:
                try:
                    p.send_signal(sig)
                except ProcessLookupError:
                    pass
        for p in procs:
            try:
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        if all(p.poll() is not None for p in procs):
            return
        deadline = time.monotonic() + grace_s

