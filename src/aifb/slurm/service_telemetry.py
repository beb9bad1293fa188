"""Server telemetry inside the Slurm service job: the sampler runs on the service's node (where
its process tree, the node, RAPL and the GPUs are), on the run's time base.

    service job (TelemetryResponder)            benchmark job (RemoteSampler)
    listens on the node's address; its port
    goes into service.json ("telemetry")  <-    connects; authenticated lines (aifb.slurm.channel.
                                                Channel) under results/<id>/TOKEN_FILE, written
                                                0600 by the launcher before sbatch
    answers each ping with its own clock  <->   SYNC_SAMPLES pings; the round trip t1..t4 with the
                                                smallest span gives the service node's clock at
                                                (t1 + t4) / 2: offset = t_service - (t1 + t4) / 2,
                                                within +-(t4 - t1) / 2 (the client jobs' method,
                                                the other way round)
    starts aifb.telemetry.launch.Sampler  <-    {"start": t0 on the service node's clock =
    with that t0: results/<id>/                 the run's t0 + offset, interval}
    telemetry.jsonl on the run's time base
    ... load ...
                                          <->   a second sync (the drift, recorded)
    stops it (wait4: its CPU time)        <-    {"stop"} -> {"stopped": the record}

The record run.json keeps (`telemetry`) is the local one plus `clock` (both syncs, the drift)
and `placement`. The drift between the two syncs is recorded, not corrected: monotonic clocks
drift by parts per million, a few ms over a long run, below one sampling interval. The service
job stops the sampler itself when it stops (its owner gone, scancel), and the sampler stops
when the service job is gone (its parent), so none outlives the run.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
from pathlib import Path

from aifb.clock import now_ns
from aifb.credentials import service_secrets
from aifb.slurm.channel import SYNC_SAMPLES, BadMessage, Channel, plain_line, read_token
from aifb.telemetry import launch

TOKEN_FILE = "service-telemetry-token"
CONNECT_TIMEOUT_S = 30.0
ANSWER_TIMEOUT_S = 30.0   # a stop waits for the sampler's last scrape (launch.STOP_GRACE_S)


class TelemetryResponder:
    """The service job's end: clock pings, and the sampler beside the service it runs."""

    def __init__(self, run_dir: Path, req: dict, service, log):
        self.run_dir, self.req, self.service, self.log = Path(run_dir), req, service, log
        self.token = read_token(self.run_dir / TOKEN_FILE)
        self.server = None
        self.sampler: launch.Sampler | None = None
        self.record: dict | None = None

    def sources(self) -> list[dict]:
        cls = type(self.service)
        own = cls.telemetry_sources(self.service.info.endpoint,
                                    service_secrets(self.req["spec"], cls),
                                    self.service.info.extra)
        return launch.plan(own, pid=self.service.info.pid, local=True)

    async def start(self, host: str) -> dict:
        """Listen; returns what service.json says of it."""
        self.server = await asyncio.start_server(self._handle, host, 0)
        return {"host": host, "port": self.server.sockets[0].getsockname()[1]}

    async def _handle(self, reader, writer) -> None:
        nonce = secrets.token_hex(16)
        writer.write(plain_line({"nonce": nonce}))
        ch = Channel(self.token, nonce, reader, writer, side="server")
        try:
            while (msg := await ch.recv()) is not None:
                if "ping" in msg:
                    ch.send({"pong": msg["ping"], "t": now_ns()})
                elif "start" in msg and self.sampler is None:
                    sources = self.sources()
                    self.sampler = launch.Sampler.start(
                        self.run_dir, int(msg["start"]["t0_ns"]), float(msg["start"]["interval_s"]),
                        sources, log_path=self.run_dir / "telemetry.log")
                    self.log(f"telemetry: sampler pid {self.sampler.proc.pid}, "
                             f"{len(sources) + 1} source(s)")
                    ch.send({"started": {"pid": self.sampler.proc.pid, "host": socket.gethostname(),
                                         "sources": launch.public(sources)}})
                elif "stop" in msg:
                    ch.send({"stopped": await asyncio.to_thread(self.stop_sampler)})
                else:
                    raise BadMessage(f"unexpected {sorted(msg)[:3]}")
                await ch.drain()
        except BadMessage as exc:
            self.log(f"telemetry: refused a connection: {exc}")
        except (OSError, ValueError, KeyError, TypeError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    def stop_sampler(self) -> dict | None:
        if self.sampler is not None and self.record is None:
            self.record = self.sampler.stop()
        return self.record

    async def close(self) -> None:
        """At the service job's end: the sampler stops before the service does."""
        if self.server is not None:
            self.server.close()
        await asyncio.to_thread(self.stop_sampler)


class RemoteSampler:
    """The benchmark job's end (what the runner holds instead of a local launch.Sampler)."""

    def __init__(self, ch: Channel, writer, where: str):
        self.ch, self.writer, self.where = ch, writer, where
        self.clock: dict = {}
        self.started: dict = {}

    @classmethod
    async def start(cls, run_dir: Path, address: dict, t0_ns: int, interval_s: float,
                    where: str) -> "RemoteSampler":
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(address["host"], address["port"]), CONNECT_TIMEOUT_S)
        hello = json.loads(await asyncio.wait_for(reader.readline(), ANSWER_TIMEOUT_S))
        self = cls(Channel(read_token(Path(run_dir) / TOKEN_FILE), hello["nonce"], reader, writer,
                           side="client"), writer, where)
        self.clock["start"] = await self.sync()
        self.ch.send({"start": {"t0_ns": t0_ns + self.clock["start"]["offset_ns"],
                                "interval_s": interval_s}})
        self.started = (await self._answer("started"))["started"]
        return self

    async def _answer(self, key: str) -> dict:
        await self.ch.drain()
        msg = await asyncio.wait_for(self.ch.recv(), ANSWER_TIMEOUT_S)
        if not msg or key not in msg:
            raise BadMessage(f"the service job answered {msg!r}, not {key!r}")
        return msg

    async def sync(self) -> dict:
        """The service node's clock against this one: offset_ns = service - here."""
        best = None
        for i in range(SYNC_SAMPLES):
            t1 = now_ns()
            self.ch.send({"ping": i})
            msg = await self._answer("pong")
            t4 = now_ns()
            if best is None or t4 - t1 < best["rtt_ns"]:
                best = {"offset_ns": msg["t"] - (t1 + t4) // 2, "rtt_ns": t4 - t1,
                        "uncertainty_ns": (t4 - t1 + 1) // 2}
        best["uncertainty_s"] = best["uncertainty_ns"] / 1e9
        best["samples"] = SYNC_SAMPLES
        return best

    @property
    def pid(self) -> int | None:
        return self.started.get("pid")

    @property
    def sources(self) -> list[dict]:
        return self.started.get("sources") or []

    async def stop(self) -> dict:
        """The second sync, the sampler stopped on the service node, and its record."""
        try:
            self.clock["end"] = await self.sync()
            self.ch.send({"stop": True})
            record = (await self._answer("stopped"))["stopped"] or {}
        finally:
            self.writer.close()
        clock = dict(self.clock)
        clock["drift_ns"] = clock["end"]["offset_ns"] - clock["start"]["offset_ns"]
        clock["method"] = (f"best of {SYNC_SAMPLES} round trips from the benchmark job before "
                           "and after the load; t0 on the service node = the run's t0 + offset; "
                           "drift recorded, not corrected")
        clock["same_host"] = self.started.get("host") == socket.gethostname()
        return {**record, "clock": clock, "placement": self.where}
