"""Extra client jobs, the benchmark job's side (ClientJobs): the coordinator, the start
barrier, and merging the jobs' records and stats.

A recipe with more load clients than the target's clients.max_per_job is split over
ceil(clients / max_per_job) client jobs. Job 0 is the benchmark job itself; jobs 1..n-1 are
`aifb-cli-<id>-<k>` Slurm jobs running `python -m aifb.slurm.client RUN_DIR K`.

  benchmark job: TCP coordinator on its node (address per the target's `bind`), writes
      results/<id>/clients/plan.json (endpoint, each job's block of clients, load, seed), submits
      the client jobs
  client job k: connects; clock sync (below); startup + validate its clients (no preload: job 0
      preloads); "ready"
  benchmark job (its own on_ready, after its preload): waits for every "ready" (checking with
      squeue that the jobs are alive), refuses the run when a job's clock uncertainty exceeds
      clients.max_clock_error, then sends "go" with one start instant T (seconds since the
      benchmark's t0) and every job starts its engine at T on its own clock
  client job k: records to results/<id>/clients/<k>/requests.jsonl on the benchmark's time base;
      after the load a second clock sync, then "done" with its load_stats
  benchmark job: merges every job's records into requests.jsonl (client index shifted to the
      global one, clock drift between the two syncs corrected linearly), sums the load stats,
      records each job's ID, node and clock offset in run.json, scancels what is left.

Clock sync, NTP style over the coordinator's TCP connection: the client sends a ping at its
monotonic t1, the benchmark job answers with its time since t0 (t), the client reads the
answer at t4: the benchmark's t0 on the client's clock is (t1 + t4) / 2 - t, within
+-(t4 - t1) / 2. The sample with the smallest round trip of SYNC_SAMPLES is kept. No wall
clock is involved, so NTP steps on either node do not matter.

Authentication (aifb.slurm.channel): every line after the coordinator's nonce is HMAC-checked
under the run's token. A line that fails the check, a hello for a client job this run did not
submit (or from another Slurm job ID than the one sbatch returned for it), a second hello for a
job, or anything before hello: the connection is closed, nothing of it is used, and the run is
flagged (clients.bad_messages; status partial with the reason). Job IDs that reach scancel are
only those sbatch returned.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import secrets
import shutil
import socket
import sys
import time
from pathlib import Path

from aifb import process
from aifb.clock import now_ns
from aifb.errors import ServiceError
from aifb.jsonio import write_json
from aifb.load import merge
from aifb.load.settings import DEFAULT_TIMEOUT_S
from aifb.load.shard import split
from aifb.load.share import RequestQuota, RequestShare
from aifb.records import INFLIGHT
from aifb.slurm.channel import (MAX_LINE, SYNC_SAMPLES, TOKEN_FILE, BadMessage, Channel,
                                plain_line, sleep_until, write_token)
from aifb.slurm.commands import (JOB_PREFIX, is_active, job_comment, job_script, job_state,
                                 sbatch, scancel, site_options)
from aifb.slurm.service_job import node_address
from aifb.slurm.targets import DEFAULT_QUEUE_TIMEOUT_S, service_runtime_minutes
from aifb.units import parse_duration

DEFAULT_CLOCK_BOUND_S = 1e-3
_TIME_KEYS = ("t_sched", "t_start", "t_first", "t_end")


def client_job_count(settings: dict, target: dict) -> int:
    per_job = (target.get("clients") or {}).get("max_per_job")
    if target.get("executor") != "slurm" or not per_job:
        return 1
    return max(1, math.ceil(int(settings["clients"]) / int(per_job)))


def job_load(settings: dict, lo: int, hi: int) -> dict:
    """The load settings of the job driving clients [lo, hi) of settings['clients']. A
    `requests: N` stays N: it is shared by all the jobs (aifb.load.engine.RequestShare)."""
    n = int(settings["clients"])
    out = dict(settings, clients=hi - lo)
    if settings.get("rate") is not None:
        out["rate"] = settings["rate"] * (hi - lo) / n
    return out


def job_seed(seed: int, k: int) -> int:
    return seed if k == 0 else (seed * 1_000_003 + k) % 2**31


def clock_record(sync: dict, t0_ns: int) -> dict:
    """What run.json keeps of a client job's clock sync (see the comment above): its figures,
    plus offset_ns, the client job's CLOCK_MONOTONIC minus the benchmark job's as measured
    (base_ns is the benchmark's t0 read on the client's clock; t0_ns the same instant on the
    benchmark's), known within +-uncertainty_ns. ~0 when both share one clock (one host: a
    self-check); on separate machines (or time namespaces) anything. Host names do not tell
    which: same_host only says whether they are equal."""
    out = dict(sync)
    out["uncertainty_s"] = sync["uncertainty_ns"] / 1e9
    out["offset_ns"] = sync["base_ns"] - t0_ns
    out["same_host"] = sync.get("host") == socket.gethostname()
    return out


class ClientJobs:
    """The benchmark job's side of a run with extra client jobs (see the comment above)."""

    READY_POLL_S = 2.0
    START_DELAY_NS = 300_000_000

    def __init__(self, *, run: dict, run_dir: Path, target: dict, endpoint: str, settings: dict,
                 recipe: dict, clock, log, service: dict | None = None, salt: str | None = None):
        self.run, self.run_dir, self.target = run, Path(run_dir), target
        self.service = service or recipe["service"]  # the run's (e.g. its password variable)
        self.endpoint, self.settings, self.recipe = endpoint, settings, recipe
        self.clock, self.log = clock, log
        # the run's cache salt (run.json `salt`, see aifb.workflow.runner.run_identity) for plan.json
        self.salt = salt
        self.n = client_job_count(settings, target)
        self.blocks = split(int(settings["clients"]), self.n)
        # requests: N is one count for all the jobs; this job is its root (see aifb.load.engine).
        self.quota = self.share0 = None
        self.quota_task: asyncio.Task | None = None
        if settings.get("requests") is not None:
            self.quota = RequestQuota(int(settings["requests"]), self.n, clock.t0_ns,
                                      self._broadcast)
            self.share0 = RequestShare(lambda n: self.quota.update(0, n))
        cj = target.get("clients") or {}
        self.bound_s = parse_duration(cj.get("max_clock_error", DEFAULT_CLOCK_BOUND_S))
        self.jobs = [{"k": k, "clients": list(self.blocks[k]), "job_id": None, "node": None,
                      "host": None, "state": None} for k in range(self.n)]
        self.jobs[0].update(job_id=os.environ.get("SLURM_JOB_ID"),
                            node=os.environ.get("SLURMD_NODENAME") or socket.gethostname(),
                            host=socket.gethostname(), state="RUNNING (benchmark job)")
        self.ready = {k: asyncio.Event() for k in range(1, self.n)}
        self.done = {k: asyncio.Event() for k in range(1, self.n)}
        self.writers: dict[int, Channel] = {}
        self.server = None
        self.problems: list[str] = []
        self.merged = False
        self.token = secrets.token_bytes(32)   # replaced by the one written in start()
        self.submitted = asyncio.Event()       # every client job's Slurm ID is known
        self.bad_messages: list[dict] = []
        self.greeted: set[int] = set()

    def load_for(self, k: int) -> dict:
        lo, hi = self.blocks[k]
        return job_load(self.settings, lo, hi)

    def _broadcast(self, kind: str, t: int) -> None:
        """A shared requests count's "safe"/"end" to this job's load and every client job."""
        self.share0.deliver(kind, t)
        for ch in list(self.writers.values()):
            try:
                ch.send({"share": kind, "t": t})
            except Exception:  # a job that went away: its loss is reported elsewhere
                pass

    # -- coordinator ----------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        k = None
        nonce = secrets.token_hex(16)
        writer.write(plain_line({"nonce": nonce}))
        ch = Channel(self.token, nonce, reader, writer, side="server")
        try:
            while True:
                msg = await ch.recv()
                if msg is None:
                    break
                if "ping" in msg:
                    t = now_ns() - self.clock.t0_ns
                    ch.send({"pong": msg["ping"], "t": t})
                    continue
                if "hello" in msg:
                    k = await self._hello(k, msg)
                    self.writers[k] = ch
                elif k is None:
                    raise BadMessage(f"{sorted(msg)[:3]} before hello")
                elif "ready" in msg:
                    self.jobs[k]["clock"] = {"start": clock_record(msg["sync"], self.clock.t0_ns)}
                    self.jobs[k]["client"] = msg.get("client")
                    self.ready[k].set()
                elif "error" in msg:
                    self.jobs[k]["error"] = msg["error"]
                    self.ready[k].set()
                    self.done[k].set()
                elif "count" in msg:
                    if self.quota is not None:
                        self.quota.update(k, int(msg["count"]))
                elif "done" in msg:
                    self.jobs[k]["stats"] = msg.get("stats")
                    self.jobs[k].setdefault("clock", {})["end"] = clock_record(msg["sync"], self.clock.t0_ns)
                    self.done[k].set()
        except BadMessage as exc:
            self._refuse(writer, k, str(exc))
        except (OSError, ValueError, KeyError, TypeError, asyncio.IncompleteReadError):
            pass
        finally:
            if k is not None and self.writers.get(k) is ch:
                self.jobs[k]["disconnected"] = True
                self.ready[k].set()
                self.done[k].set()
                self.writers.pop(k, None)
            writer.close()

    async def _hello(self, k, msg: dict) -> int:
        """The client job a hello is from, if it is one this run submitted and not yet heard
        from; BadMessage otherwise."""
        if k is not None:
            raise BadMessage("a second hello on one connection")
        try:
            k = int(msg["hello"])
        except (TypeError, ValueError):
            raise BadMessage(f"hello from {msg['hello']!r}, not a client job number") from None
        if not 1 <= k < self.n:
            raise BadMessage(f"hello from client job {k}; this run has jobs 1..{self.n - 1}")
        if self.jobs[k]["job_id"] is None:  # a fast job may call before sbatch has answered
            try:
                await asyncio.wait_for(self.submitted.wait(), 120)
            except asyncio.TimeoutError:
                raise BadMessage(f"hello from client job {k} before it was submitted") from None
        want = self.jobs[k]["job_id"]
        if str(msg.get("job_id")) != str(want):
            raise BadMessage(f"hello from Slurm job {msg.get('job_id')!r} as client job {k}, which "
                             f"this run submitted as job {want}")
        if k in self.greeted:
            raise BadMessage(f"a second hello from client job {k}")
        self.greeted.add(k)
        self.jobs[k].update(node=msg.get("node"), host=msg.get("host"), pid=msg.get("pid"))
        return k

    def _refuse(self, writer, k, problem: str) -> None:
        peer = writer.get_extra_info("peername")
        where = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.bad_messages.append({"from": where, "client_job": k, "problem": problem,
                                  "at": process.wall_iso()})
        self.log(f"coordinator: refused a connection from {where}: {problem}")
        if len(self.bad_messages) == 1:
            self.problems.append(
                "the coordinator received messages that were not authentic or not allowed (see "
                "clients.bad_messages in run.json); they were refused and nothing of them was used")

    async def start(self) -> None:
        host = node_address(self.target.get("bind", "auto"))
        self.server = await asyncio.start_server(self._handle, host, 0, limit=MAX_LINE)
        port = self.server.sockets[0].getsockname()[1]
        cdir = self.run_dir / "clients"
        if cdir.exists():
            shutil.rmtree(cdir)
        cdir.mkdir(parents=True)
        self.token = write_token(cdir / TOKEN_FILE)
        spec = self.service
        write_json(cdir / "plan.json", {
            "benchmark_id": self.run["benchmark_id"], "coordinator": [host, port],
            "kind": spec["kind"], "endpoint": self.endpoint, "service": spec,
            "workload": self.recipe.get("workload") or {}, "t0_unix_ns": self.clock.t0_unix_ns,
            "salt": self.salt,
            "jobs": [{"k": k, "clients": list(self.blocks[k]), "load": self.load_for(k),
                      "seed": job_seed(self.recipe.get("seed", 42), k)} for k in range(self.n)]})
        cj = self.target.get("clients") or {}
        minutes = service_runtime_minutes(self.recipe, self.target)
        for k in range(1, self.n):
            opts = [f"--job-name={JOB_PREFIX}cli-{self.run['benchmark_id']}-{k}",
                    f"--comment={job_comment(self.run_dir)}",
                    f"--time={minutes}", "--nodes=1", "--ntasks=1",
                    f"--cpus-per-task={int(cj.get('cpus', 2))}", f"--mem={cj.get('mem', '2G')}",
                    f"--chdir={self.run_dir}",
                    f"--output={self.run_dir / 'logs' / f'client-job-{k}-%j.out'}",
                    *site_options(self.target)]
            argv = [sys.executable, "-m", "aifb.slurm.client", str(self.run_dir), str(k)]
            script = job_script(self.target, {}, argv,
                                title=f"AI Factory Bench: client job {k} of {self.run['benchmark_id']}")
            self.jobs[k]["job_id"] = await asyncio.to_thread(sbatch, opts, script)
            self.jobs[k]["sbatch"] = opts
        self.submitted.set()
        self.log(f"{self.n} client jobs: this one (clients {self.blocks[0][0]}..{self.blocks[0][1] - 1}) + "
                 + ", ".join(f"Slurm job {self.jobs[k]['job_id']} (clients {self.blocks[k][0]}.."
                             f"{self.blocks[k][1] - 1})" for k in range(1, self.n))
                 + f"; coordinator {host}:{port}")

    async def _alive_or_raise(self, k: int, what: str) -> None:
        st = await asyncio.to_thread(job_state, self.jobs[k]["job_id"])
        self.jobs[k]["state"] = st["state"] if st else None
        if not is_active(st):
            tail = process.log_tail(self.run_dir / "logs" / f"client-job-{k}-{self.jobs[k]['job_id']}.out")
            raise ServiceError(
                f"client job {k} (Slurm job {self.jobs[k]['job_id']}) ended before {what} ("
                + (f"state {st['state']}, reason {st['reason']}" if st else "unknown to Slurm")
                + ")", log_tail=tail)

    async def barrier(self, info: dict) -> None:
        """Job 0's on_ready: every client job ready and in sync -> one start instant."""
        queue_timeout = parse_duration(self.target.get("queue_timeout", DEFAULT_QUEUE_TIMEOUT_S))
        t0 = time.monotonic()
        for k in range(1, self.n):
            while not self.ready[k].is_set():
                try:
                    await asyncio.wait_for(self.ready[k].wait(), self.READY_POLL_S)
                except asyncio.TimeoutError:
                    await self._alive_or_raise(k, "it was ready")
                    if time.monotonic() - t0 > queue_timeout:
                        raise ServiceError(f"client job {k} (Slurm job {self.jobs[k]['job_id']}) "
                                           f"not ready after {queue_timeout:g} s "
                                           f"(state {self.jobs[k]['state']})") from None
            job = self.jobs[k]
            if job.get("error") or job.get("disconnected") and "clock" not in job:
                raise ServiceError(f"client job {k} (Slurm job {job['job_id']} on {job['node']}): "
                                   f"{job.get('error') or 'disconnected before it was ready'}")
            unc = job["clock"]["start"]["uncertainty_s"]
            if unc > self.bound_s:
                raise ServiceError(
                    f"client job {k} on {job['node']}: clock offset known only within "
                    f"+-{unc * 1e3:.3f} ms, more than the bound of {self.bound_s * 1e3:g} ms "
                    "(clients.max_clock_error in config/targets.yaml): records of different "
                    "jobs could not be put on one time base; refused")
        start = now_ns() - self.clock.t0_ns + self.START_DELAY_NS
        for k, w in list(self.writers.items()):
            w.send({"go": start})
            await w.drain()
        self.t_go_ns = start
        self.log(f"all {self.n} client jobs ready; common start at t={start / 1e9:.3f} s")
        await sleep_until(self.clock.t0_ns + start)
        if self.quota is not None:
            self.quota_task = asyncio.get_running_loop().create_task(self.quota.run())

    async def finish(self, stats0: dict) -> dict:
        """After job 0's load: collect the others, merge records and stats."""
        grace = 30.0 + 2 * float(self.settings.get("timeout_s") or DEFAULT_TIMEOUT_S)
        deadline = time.monotonic() + grace
        for k in range(1, self.n):
            while not self.done[k].is_set() and time.monotonic() < deadline:
                try:
                    await asyncio.wait_for(self.done[k].wait(), self.READY_POLL_S)
                except asyncio.TimeoutError:
                    st = await asyncio.to_thread(job_state, self.jobs[k]["job_id"])
                    if not is_active(st):
                        break
            job = self.jobs[k]
            if "stats" not in job:
                why = job.get("error") or (f"its connection from {job['node']} closed"
                                           if job.get("disconnected") else "no answer")
                self.problems.append(f"client job {k} (Slurm job {job['job_id']}) did not report its "
                                     f"end ({why}); its records so far are merged")
        if self.quota_task is not None:
            self.quota_task.cancel()
        merged = self.merge_records()
        stats = self.merge_stats(stats0)
        stats["merged_records"] = merged
        if self.quota is not None:
            stats["shared_requests"] = self.quota.describe()
        for k in range(1, self.n):
            clk = self.jobs[k].get("clock") or {}
            end = clk.get("end")
            if end and end["uncertainty_s"] > self.bound_s:
                self.problems.append(
                    f"client job {k}: clock uncertainty after the load +-{end['uncertainty_s'] * 1e3:.3f} ms "
                    f"exceeds the bound of {self.bound_s * 1e3:g} ms")
        return stats

    def _drift(self, k: int):
        clk = self.jobs[k].get("clock") or {}
        s, e = clk.get("start"), clk.get("end")
        if not s or not e or e["at_ns"] <= s["at_ns"]:
            return None
        drift = e["base_ns"] - s["base_ns"]
        clk["drift_ns"] = drift
        clk["drift_ppm"] = round(drift / (e["at_ns"] - s["at_ns"]) * 1e6, 3)
        # A change smaller than the two measurements' uncertainty is noise, not drift.
        clk["drift_significant"] = abs(drift) > s["uncertainty_ns"] + e["uncertainty_ns"]
        if not clk["drift_significant"]:
            return None
        return s["at_ns"] / 1e9, e["at_ns"] / 1e9, drift / 1e9

    def merge_records(self) -> int:
        """Append every extra job's records to requests.jsonl (global client index, drift
        corrected); returns how many were appended."""
        out_path = self.run_dir / "requests.jsonl"
        shadow = self.run_dir / INFLIGHT
        if not out_path.exists() and shadow.exists():
            out_path = shadow  # Snakemake removed the output of a cancelled job: keep them together
        total = 0
        with open(out_path, "a", encoding="utf-8") as out:
            for k in range(1, self.n):
                path = self.run_dir / "clients" / str(k) / "requests.jsonl"
                if not path.is_file():
                    continue
                lo = self.blocks[k][0]
                corr = self._drift(k)
                buf = []
                lines = 0
                with open(path, encoding="utf-8") as fh:
                    for line in fh:
                        lines += 1  # the job's own count, a torn last line included
                        if not line.endswith("\n"):
                            break  # a torn last line of a killed job
                        rec = json.loads(line)
                        rec["client"] += lo
                        if corr:
                            s0, s1, d = corr
                            for key in _TIME_KEYS:
                                v = rec.get(key)
                                if v is not None:
                                    rec[key] = round(v - d * (v - s0) / (s1 - s0), 9)
                        buf.append(json.dumps(rec, separators=(",", ":")))
                        if len(buf) >= 10000:
                            out.write("\n".join(buf) + "\n")
                            total += len(buf)
                            buf = []
                if buf:
                    out.write("\n".join(buf) + "\n")
                    total += len(buf)
                self.jobs[k]["records"] = lines
        self.merged = True
        return total

    def merge_stats(self, stats0: dict) -> dict:
        """The run's load_stats: every job's merged by the one merge of the engine
        (aifb.load.merge: same sums, window, stop ranking and open-loop figures as for worker
        processes; a job that did not report is lost), job 0's own fields (client, prepare_s,
        its processes) kept, and every job's whole stats in client_jobs."""
        parts = [stats0] + [self.jobs[k].get("stats") for k in range(1, self.n)]
        lost = [{"client_job": k, "job_id": self.jobs[k]["job_id"]}
                for k, p in enumerate(parts) if not p]
        merged = merge.merge_stats([(p, None) if p else None for p in parts], blocks=self.blocks,
                                   pids=[j["job_id"] for j in self.jobs], load=self.settings,
                                   lost=lost, member="client_job")
        out = {**stats0, **merged}
        out["client_jobs"] = [{"k": k, "stats": p} for k, p in enumerate(parts)]
        starts = [p["t_load_start"] for p in parts if p and p.get("t_load_start") is not None]
        # Each job's engine starts at the common instant plus its own start-up time.
        out["client_jobs_start_spread_s"] = round(max(starts) - min(starts), 9) if starts else None
        return out

    def describe(self) -> dict:
        jobs = []
        for j in self.jobs:
            d = {k: v for k, v in j.items() if k not in ("stats",)}
            jobs.append(d)
        bound_ok = all((j.get("clock") or {}).get(w, {}).get("uncertainty_s", 0) <= self.bound_s
                       for j in self.jobs[1:] for w in ("start", "end"))
        return {
            "bad_messages": list(self.bad_messages),
            "coordinator_auth": "HMAC-SHA256 per message under a per-run token (clients/token, "
                                "mode 0600), fresh nonce per connection",
            "job_ids": [j["job_id"] for j in self.jobs if j["job_id"]],
            "hosts": [j["host"] or j["node"] for j in self.jobs],
            "nodes": [j["node"] for j in self.jobs],
            "jobs": jobs,
            "clock_sync": {
                "method": "NTP-style ping over the coordinator's TCP connection: the benchmark "
                          "job's monotonic time since t0 against the client job's monotonic "
                          f"clock, best of {SYNC_SAMPLES} round trips, before and after the load; "
                          "linear drift correction between the two",
                "bound_s": self.bound_s,
                "max_uncertainty_s": max([(j.get("clock") or {}).get(w, {}).get("uncertainty_s", 0)
                                          for j in self.jobs[1:] for w in ("start", "end")] or [0]),
                "within_bound": bound_ok,
            },
        }

    async def close(self) -> None:
        """Stop what is left of the client jobs (they write their records and exit), cancel
        any still in the queue, and merge whatever records they left if finish() did not."""
        if self.quota_task is not None:
            self.quota_task.cancel()
        for w in list(self.writers.values()):
            try:
                w.send({"stop": True})
            except Exception:
                pass
        if self.writers:
            try:
                await asyncio.wait_for(asyncio.gather(*(self.done[k].wait() for k in list(self.writers))), 15)
            except asyncio.TimeoutError:
                pass
        ids = [j["job_id"] for j in self.jobs[1:] if j.get("job_id")]
        for jid in ids:
            st = await asyncio.to_thread(job_state, jid)
            if is_active(st):
                await asyncio.sleep(0)
                await asyncio.to_thread(scancel, jid)
                self.log(f"client job Slurm {jid}: cancelled ({st['state']})")
        for j in self.jobs[1:]:
            if j.get("job_id"):
                st = await asyncio.to_thread(job_state, j["job_id"])
                j["state"] = st["state"] if st else None
        if self.server is not None:
            self.server.close()
        if not self.merged:
            n = await asyncio.to_thread(self.merge_records)
            if n:
                self.log(f"kept {n} records of the client jobs in requests.jsonl")
