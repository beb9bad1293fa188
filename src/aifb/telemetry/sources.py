"""Telemetry sources: each reads one server interface and returns (name, labels, value, kind).

A source is built from a plain dict (the sampler's configuration, JSON on stdin):

    {"type": "redis", "name": "redis", "endpoint": "redis://127.0.0.1:6379", ...}

and has `sample() -> list[Metric]`; it raises on any failure (the sampler records the gap) and
must return within `timeout_s`. `close()` releases what it holds. Libraries do the parsing where
one exists (prometheus_client's text parser, psutil, nvidia-ml-py, asyncpg); Redis INFO is
`key:value` lines, read with the project's own RESP client functions.

kind is "counter" (cumulative since the server started: the summary takes deltas) or "gauge".
"""

from __future__ import annotations

import json
import os
import resource
import socket
import time
import urllib.request
from glob import glob
from pathlib import Path
from typing import NamedTuple


class Metric(NamedTuple):
    name: str
    labels: dict
    value: float
    kind: str       # "counter" | "gauge"


COUNTER, GAUGE = "counter", "gauge"
SOURCE_TYPES: dict[str, type] = {}


def source_type(name: str):
    def deco(cls):
        cls.type = name
        SOURCE_TYPES[name] = cls
        return cls
    return deco


def build_source(cfg: dict, timeout_s: float):
    cls = SOURCE_TYPES.get(cfg.get("type"))
    if cls is None:
        raise ValueError(f"unknown telemetry source type {cfg.get('type')!r}")
    return cls(cfg, timeout_s)


class Source:
    type = "?"

    def __init__(self, cfg: dict, timeout_s: float):
        self.cfg = cfg
        self.name = cfg.get("name") or self.type
        self.timeout_s = timeout_s

    def sample(self) -> list[Metric]:
        raise NotImplementedError

    def close(self) -> None:
        pass


# ----------------------------------------------------------------------------- local processes

@source_type("self")
class SelfSource(Source):
    """The sampler's own CPU time and memory (getrusage: every thread of this process)."""

    def sample(self) -> list[Metric]:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        return [Metric("cpu_seconds_total", {"mode": "user"}, ru.ru_utime, COUNTER),
                Metric("cpu_seconds_total", {"mode": "system"}, ru.ru_stime, COUNTER),
                Metric("max_rss_bytes", {}, ru.ru_maxrss * 1024, GAUGE)]


@source_type("process")
class ProcessTreeSource(Source):
    """The service's process tree (root pid and all descendants), summed: CPU user/system,
    RSS, threads, context switches, read/write bytes. Exited descendants' CPU stays counted
    through their parents' children_user/children_system (what wait() collected), so the CPU
    counters do not drop when a worker process exits."""

    def __init__(self, cfg: dict, timeout_s: float):
        super().__init__(cfg, timeout_s)
        import psutil
        self.psutil = psutil
        self.root = psutil.Process(int(cfg["pid"]))

    def sample(self) -> list[Metric]:
        ps = self.psutil
        procs = [self.root] + self.root.children(recursive=True)
        user = system = rss = threads = vol = invol = rb = wb = 0.0
        io_ok = True
        n = 0
        for p in procs:
            try:
                with p.oneshot():
                    ct = p.cpu_times()
                    user += ct.user + ct.children_user
                    system += ct.system + ct.children_system
                    rss += p.memory_info().rss
                    threads += p.num_threads()
                    cs = p.num_ctx_switches()
                    vol += cs.voluntary
                    invol += cs.involuntary
                    if io_ok:
                        try:
                            io = p.io_counters()
                            rb += io.read_bytes
                            wb += io.write_bytes
                        except (ps.AccessDenied, AttributeError, NotImplementedError):
                            io_ok = False
                    n += 1
            except ps.NoSuchProcess:
                if p is self.root:
                    raise RuntimeError(f"the service process {self.root.pid} is gone") from None
        out = [Metric("cpu_seconds_total", {"mode": "user"}, user, COUNTER),
               Metric("cpu_seconds_total", {"mode": "system"}, system, COUNTER),
               Metric("rss_bytes", {}, rss, GAUGE),
               Metric("threads", {}, threads, GAUGE),
               Metric("processes", {}, n, GAUGE),
               Metric("ctx_switches_total", {"type": "voluntary"}, vol, COUNTER),
               Metric("ctx_switches_total", {"type": "involuntary"}, invol, COUNTER)]
        if io_ok:
            out += [Metric("io_bytes_total", {"dir": "read"}, rb, COUNTER),
                    Metric("io_bytes_total", {"dir": "write"}, wb, COUNTER)]
        return out


@source_type("node")
class NodeSource(Source):
    """The whole node: CPU seconds by mode, memory, network bytes/packets (all interfaces)."""

    def __init__(self, cfg: dict, timeout_s: float):
        super().__init__(cfg, timeout_s)
        import psutil
        self.psutil = psutil

    def sample(self) -> list[Metric]:
        ps = self.psutil
        # guest time is already counted in user (Linux /proc/stat): left out, not double-counted
        out = [Metric("cpu_seconds_total", {"mode": mode}, value, COUNTER)
               for mode, value in ps.cpu_times()._asdict().items() if not mode.startswith("guest")]
        out.append(Metric("cpus", {}, ps.cpu_count() or 0, GAUGE))
        vm = ps.virtual_memory()
        out += [Metric("memory_bytes", {"state": "used"}, vm.used, GAUGE),
                Metric("memory_bytes", {"state": "available"}, vm.available, GAUGE),
                Metric("memory_bytes", {"state": "total"}, vm.total, GAUGE)]
        net = ps.net_io_counters()
        if net is not None:
            out += [Metric("net_bytes_total", {"dir": "sent"}, net.bytes_sent, COUNTER),
                    Metric("net_bytes_total", {"dir": "recv"}, net.bytes_recv, COUNTER),
                    Metric("net_packets_total", {"dir": "sent"}, net.packets_sent, COUNTER),
                    Metric("net_packets_total", {"dir": "recv"}, net.packets_recv, COUNTER)]
        return out


RAPL_GLOB = "/sys/class/powercap/intel-rapl:*"


def rapl_zones() -> list[Path]:
    """The RAPL zones whose energy counter this user can read (often root-only since 2020)."""
    zones = []
    for z in sorted(glob(RAPL_GLOB)):
        try:
            int(Path(z, "energy_uj").read_text())
            zones.append(Path(z))
        except (OSError, ValueError):
            continue
    return zones


@source_type("rapl")
class RaplSource(Source):
    """CPU package/DRAM energy from Linux powercap (RAPL), in joules. The counter wraps at
    max_energy_range_uj; the summary treats a decrease as a wrap (adds the range)."""

    def __init__(self, cfg: dict, timeout_s: float):
        super().__init__(cfg, timeout_s)
        self.zones = [(z, (z / "name").read_text().strip()) for z in rapl_zones()]
        if not self.zones:
            raise RuntimeError("no readable RAPL zone")

    def sample(self) -> list[Metric]:
        return [Metric("energy_joules_total", {"zone": f"{z.name}:{name}"},
                       int((z / "energy_uj").read_text()) / 1e6, COUNTER) for z, name in self.zones]


# ----------------------------------------------------------------------------- GPUs

@source_type("nvml")
class NvmlSource(Source):
    """Every NVIDIA GPU through NVML (nvidia-ml-py's pynvml): utilisation, memory, power, SM
    clock, temperature and the energy counter since the driver loaded (Volta and newer). A
    reading that one GPU does not support is left out for that GPU."""

    def __init__(self, cfg: dict, timeout_s: float):
        super().__init__(cfg, timeout_s)
        import pynvml
        self.nv = pynvml
        pynvml.nvmlInit()
        self.handles = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            self.handles.append((h, {"gpu": str(i)}))
        if not self.handles:
            raise RuntimeError("NVML sees no GPU")

    def _read(self, out, name, labels, kind, fn, scale=1.0):
        try:
            out.append(Metric(name, labels, float(fn()) * scale, kind))
        except self.nv.NVMLError:
            pass   # not supported on this GPU / driver

    def sample(self) -> list[Metric]:
        nv, out = self.nv, []
        for h, labels in self.handles:
            try:
                u = nv.nvmlDeviceGetUtilizationRates(h)
                out.append(Metric("utilization_ratio", labels, u.gpu / 100.0, GAUGE))
                out.append(Metric("memory_utilization_ratio", labels, u.memory / 100.0, GAUGE))
            except nv.NVMLError:
                pass
            try:
                m = nv.nvmlDeviceGetMemoryInfo(h)
                out.append(Metric("memory_used_bytes", labels, float(m.used), GAUGE))
                out.append(Metric("memory_total_bytes", labels, float(m.total), GAUGE))
            except nv.NVMLError:
                pass
            self._read(out, "power_watts", labels, GAUGE, lambda: nv.nvmlDeviceGetPowerUsage(h), 1e-3)
            self._read(out, "energy_joules_total", labels, COUNTER,
                       lambda: nv.nvmlDeviceGetTotalEnergyConsumption(h), 1e-3)
            self._read(out, "sm_clock_hz", labels, GAUGE,
                       lambda: nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM), 1e6)
            self._read(out, "temperature_celsius", labels, GAUGE,
                       lambda: nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU))
        if not out:
            raise RuntimeError("NVML answered no reading")
        return out

    def close(self) -> None:
        try:
            self.nv.nvmlShutdown()
        except Exception:
            pass


# ----------------------------------------------------------------------------- HTTP sources

# No proxy: the services are reached directly (an http_proxy in the environment must not
# carry loopback or cluster-internal scrapes elsewhere).
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(url: str, timeout_s: float, headers: dict | None = None, limit: int = 16 << 20) -> bytes:
    req = urllib.request.Request(url, headers=headers or {})
    with _OPENER.open(req, timeout=timeout_s) as resp:   # raises HTTPError on 4xx/5xx
        body = resp.read(limit + 1)
    if len(body) > limit:
        raise RuntimeError(f"{url}: answer larger than {limit} bytes")
    return body


class HttpSource(Source):
    path = "/"

    def __init__(self, cfg: dict, timeout_s: float):
        super().__init__(cfg, timeout_s)
        self.url = cfg.get("url") or cfg["endpoint"].rstrip("/") + self.path
        self.headers = cfg.get("headers") or {}

    def get(self) -> bytes:
        return http_get(self.url, self.timeout_s, self.headers)


@source_type("prometheus")
class PrometheusSource(HttpSource):
    """A Prometheus text endpoint (llama-server --metrics, vLLM, Qdrant, SeaweedFS), parsed by
    prometheus_client. Counters and histogram/summary _sum/_count are counters; gauges and
    untyped samples are gauges. Histogram buckets and _created samples are left out: the
    summary uses _sum/_count (mean over the window), and buckets would multiply the file."""

    path = "/metrics"

    def sample(self) -> list[Metric]:
        from prometheus_client.parser import text_string_to_metric_families

        text = self.get().decode("utf-8", errors="replace")
        out = []
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                if s.name.endswith(("_bucket", "_created")) or s.value != s.value:  # NaN
                    continue
                if fam.type in ("counter", "histogram", "summary", "gaugehistogram"):
                    kind = COUNTER if (fam.type == "counter" or s.name.endswith(("_sum", "_count"))) else GAUGE
                else:
                    kind = GAUGE
                out.append(Metric(s.name, dict(s.labels), float(s.value), kind))
        if not out:
            raise RuntimeError(f"{self.url}: no Prometheus samples in the answer")
        return out


@source_type("llamacpp_slots")
class LlamaSlotsSource(HttpSource):
    """llama-server /slots: how many slots are busy (a gauge; the server's parallelism)."""

    path = "/slots"

    def sample(self) -> list[Metric]:
        slots = json.loads(self.get())
        if not isinstance(slots, list):
            raise RuntimeError(f"{self.url}: expected a JSON list of slots")
        busy = sum(1 for s in slots if isinstance(s, dict) and s.get("is_processing"))
        return [Metric("slots_processing", {}, busy, GAUGE), Metric("slots", {}, len(slots), GAUGE)]


@source_type("ollama")
class OllamaPsSource(HttpSource):
    """Ollama /api/ps: the models loaded, their size and VRAM share."""

    path = "/api/ps"

    def sample(self) -> list[Metric]:
        body = json.loads(self.get())
        models = body.get("models") if isinstance(body, dict) else None
        if not isinstance(models, list):
            raise RuntimeError(f"{self.url}: no `models` list in the answer")
        out = [Metric("models_loaded", {}, len(models), GAUGE)]
        for m in models:
            labels = {"model": str(m.get("name") or m.get("model"))}
            for key in ("size", "size_vram"):
                if isinstance(m.get(key), (int, float)):
                    out.append(Metric(f"model_{key}_bytes", labels, float(m[key]), GAUGE))
        return out


@source_type("qdrant_telemetry")
class QdrantTelemetrySource(HttpSource):
    """Qdrant GET /telemetry (JSON; details_level=1 asks for the request statistics): per REST
    and gRPC endpoint and status, responses (`count`) and their total duration
    (`total_duration_micros`, in seconds here) since start - counters; the number of
    collections and, where reported, memory (`memory.*_bytes`) - gauges."""

    path = "/telemetry?details_level=1"

    def sample(self) -> list[Metric]:
        body = json.loads(self.get())
        result = body.get("result") if isinstance(body, dict) else None
        if not isinstance(result, dict):
            raise RuntimeError(f"{self.url}: no `result` object in the answer")
        out = []
        n = (result.get("collections") or {}).get("number_of_collections")
        if isinstance(n, (int, float)):
            out.append(Metric("collections", {}, float(n), GAUGE))
        for api in ("rest", "grpc"):
            responses = (((result.get("requests") or {}).get(api) or {}).get("responses") or {})
            for endpoint, by_status in responses.items():
                for status, st in (by_status or {}).items():
                    if not isinstance(st, dict) or not isinstance(st.get("count"), (int, float)):
                        continue
                    labels = {"endpoint": str(endpoint), "status": str(status)}
                    out.append(Metric(f"{api}_responses_total", labels, float(st["count"]), COUNTER))
                    if isinstance(st.get("total_duration_micros"), (int, float)):
                        out.append(Metric(f"{api}_duration_seconds_total", labels,
                                          st["total_duration_micros"] / 1e6, COUNTER))
        for key, value in (result.get("memory") or {}).items():
            if key.endswith("_bytes") and isinstance(value, (int, float)):
                out.append(Metric("memory_bytes", {"kind": key[:-len("_bytes")]}, float(value), GAUGE))
        if not out:
            raise RuntimeError(f"{self.url}: no telemetry figure in the answer")
        return out


# ----------------------------------------------------------------------------- Redis

REDIS_SECTIONS = {"clients", "memory", "stats", "cpu", "commandstats", "latencystats",
                  "keyspace", "errorstats"}
REDIS_COUNTER_NAMES = {"expired_keys", "evicted_keys", "keyspace_hits", "keyspace_misses",
                       "rejected_connections", "sync_full", "sync_partial_ok", "sync_partial_err",
                       "expired_stale_perc", "expired_time_cap_reached_count", "evicted_clients",
                       "io_threaded_reads_processed", "io_threaded_writes_processed"}


def _number(text: str):
    try:
        return float(text)
    except ValueError:
        return None


def parse_redis_info(text: str) -> list[Metric]:
    """INFO's `# Section` / `key:value` lines -> metrics, for the sections in REDIS_SECTIONS.
    commandstats becomes commands_total{cmd} (calls), command_usec_total{cmd},
    command_failed_total{cmd}; latencystats latency_usec{cmd, p} (since start: a gauge)."""
    out, section = [], None
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("#"):
            section = line[1:].strip().lower()
            continue
        if section not in REDIS_SECTIONS or ":" not in line:
            continue
        key, value = line.split(":", 1)
        if section == "commandstats" and key.startswith("cmdstat_"):
            fields = dict(kv.split("=", 1) for kv in value.split(",") if "=" in kv)
            labels = {"cmd": key[len("cmdstat_"):]}
            for field, name in (("calls", "commands_total"), ("usec", "command_usec_total"),
                                ("failed_calls", "command_failed_total"),
                                ("rejected_calls", "command_rejected_total")):
                if field in fields and _number(fields[field]) is not None:
                    out.append(Metric(name, labels, _number(fields[field]), COUNTER))
        elif section == "latencystats" and key.startswith("latency_percentiles_usec_"):
            cmd = key[len("latency_percentiles_usec_"):]
            for kv in value.split(","):
                if "=" in kv and _number(kv.split("=", 1)[1]) is not None:
                    p, v = kv.split("=", 1)
                    out.append(Metric("latency_usec", {"cmd": cmd, "p": p}, _number(v), GAUGE))
        elif section == "keyspace":
            fields = dict(kv.split("=", 1) for kv in value.split(",") if "=" in kv)
            if _number(fields.get("keys", "")) is not None:
                out.append(Metric("keys", {"db": key}, _number(fields["keys"]), GAUGE))
        elif section == "errorstats" and key.startswith("errorstat_"):
            n = _number(value.split("=", 1)[-1])
            if n is not None:
                out.append(Metric("errors_total", {"error": key[len("errorstat_"):]}, n, COUNTER))
        else:
            v = _number(value)
            if v is None:
                continue
            counter = (key.startswith("total_") or key.startswith("used_cpu_")
                       or key in REDIS_COUNTER_NAMES)
            out.append(Metric(key, {}, v, COUNTER if counter else GAUGE))
    return out


@source_type("redis")
class RedisSource(Source):
    """Redis INFO (all sections, the ones in REDIS_SECTIONS kept) over one blocking socket.
    The sampler's own INFO and AUTH calls are counted by commandstats under `info`/`auth`;
    the requests ratio leaves those out."""

    def __init__(self, cfg: dict, timeout_s: float):
        super().__init__(cfg, timeout_s)
        from aifb.clients.redis import parse_endpoint
        self.ep = parse_endpoint(cfg["endpoint"], cfg.get("secrets") or {})
        self.sock: socket.socket | None = None
        self.buf = b""

    def _call(self, *args) -> object:
        from aifb.clients.redis import ReplyError, encode_command, parse_reply
        self.sock.sendall(encode_command(*args))
        while True:
            parsed = parse_reply(self.buf) if self.buf else None
            if parsed is not None:
                value, pos = parsed
                self.buf = self.buf[pos:]
                if isinstance(value, ReplyError):
                    raise RuntimeError(f"redis answered an error to {args[0]}: {value.code}")
                return value
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk

    def _connect(self) -> None:
        self.sock = socket.create_connection((self.ep.host, self.ep.port), timeout=self.timeout_s)
        self.sock.settimeout(self.timeout_s)
        self.buf = b""
        if self.ep.password:
            args = ("AUTH", self.ep.username, self.ep.password) if self.ep.username else ("AUTH", self.ep.password)
            self._call(*args)

    def sample(self) -> list[Metric]:
        try:
            if self.sock is None:
                self._connect()
            info = self._call("INFO", "all")
        except Exception:
            self.close()   # reconnect next time
            raise
        text = info.decode("utf-8", errors="replace") if isinstance(info, bytes) else str(info)
        out = parse_redis_info(text)
        if not out:
            raise RuntimeError("redis INFO held no metric")
        return out

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None


# ----------------------------------------------------------------------------- PostgreSQL

PG_GAUGES = {"numbackends", "op_bytes"}   # op_bytes: pg_stat_io's unit of reads/writes (16, 17)
PG_QUERIES = (
    # (metric prefix, SQL, label columns)
    ("database", "SELECT * FROM pg_stat_database WHERE datname = current_database()", ("datname",)),
    ("bgwriter", "SELECT * FROM pg_stat_bgwriter", ()),
)
# pg_stat_io (PostgreSQL 16+): I/O by backend type, object and context; NULL where an
# operation cannot happen in that combination (left out). Read only when the view exists.
PG_IO = ("io", "SELECT * FROM pg_stat_io", ("backend_type", "object", "context"))
PG_HAS_IO = "SELECT to_regclass('pg_catalog.pg_stat_io') IS NOT NULL"
PG_ACTIVITY = ("SELECT coalesce(state, 'none') AS state, coalesce(wait_event_type, 'none') AS "
               "wait, count(*) AS n FROM pg_stat_activity WHERE backend_type = 'client backend' "
               "GROUP BY 1, 2")


def pg_rows_metrics(prefix: str, rows, label_cols: tuple) -> list[Metric]:
    """Rows of a pg_stat_* view (mappings: column -> value) -> one metric per numeric column,
    `<prefix>_<column>` labelled by `label_cols`; NULL, text, boolean and timestamp columns and
    datid are left out. Counters, but for PG_GAUGES."""
    out = []
    for row in rows:
        labels = {c: str(row[c]) for c in label_cols}
        for col, val in row.items():
            if col in label_cols or col == "datid" or isinstance(val, bool) \
                    or not isinstance(val, (int, float)):
                continue
            out.append(Metric(f"{prefix}_{col}", labels, float(val),
                              GAUGE if col in PG_GAUGES else COUNTER))
    return out


@source_type("postgres")
class PostgresSource(Source):
    """PostgreSQL's statistics views through asyncpg on a private event loop: pg_stat_database
    (this database: xact_commit/rollback, blocks, tuples, ...), pg_stat_bgwriter, pg_stat_io
    where the server has it (16+; `stat_io_present` says 1 or 0), and the client backends of
    pg_stat_activity by state and wait-event type. All queries of one sample run in one
    transaction (one consistent stats snapshot, and exactly one xact_commit of our own per
    sample, which the requests ratio subtracts)."""

    def __init__(self, cfg: dict, timeout_s: float):
        super().__init__(cfg, timeout_s)
        import asyncio

        from aifb.clients.postgres import parse_endpoint
        self.ep = parse_endpoint(cfg["endpoint"], cfg.get("secrets") or {})
        self.loop = asyncio.new_event_loop()
        self.conn = None
        self.has_io: bool | None = None   # pg_stat_io exists (asked once per connection)

    async def _sample(self) -> list[Metric]:
        import asyncpg
        if self.conn is None or self.conn.is_closed():
            self.conn = await asyncpg.connect(host=self.ep.host, port=self.ep.port, user=self.ep.user,
                                              password=self.ep.password, database=self.ep.database,
                                              timeout=self.timeout_s,
                                              server_settings={"application_name": "aifb-telemetry"})
            self.has_io = None
        async with self.conn.transaction(readonly=True):
            if self.has_io is None:   # inside the sample's one transaction: no extra commit
                self.has_io = bool(await self.conn.fetchval(PG_HAS_IO, timeout=self.timeout_s))
            out = [Metric("stat_io_present", {}, float(self.has_io), GAUGE)]
            for prefix, sql, label_cols in PG_QUERIES + ((PG_IO,) if self.has_io else ()):
                out += pg_rows_metrics(prefix, await self.conn.fetch(sql, timeout=self.timeout_s),
                                       label_cols)
            for row in await self.conn.fetch(PG_ACTIVITY, timeout=self.timeout_s):
                out.append(Metric("backends", {"state": row["state"], "wait": row["wait"]},
                                  float(row["n"]), GAUGE))
        return out

    def sample(self) -> list[Metric]:
        import asyncio
        try:
            return self.loop.run_until_complete(asyncio.wait_for(self._sample(), self.timeout_s))
        except BaseException:
            self._drop()
            raise

    def _drop(self) -> None:
        if self.conn is not None:
            try:
                self.conn.terminate()
            except Exception:
                pass
            self.conn = None

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.loop.run_until_complete(self.conn.close(timeout=1))
            except Exception:
                self._drop()
        self.loop.close()


def monotonic_ns() -> int:
    """The run's clock (aifb.clock.now_ns: perf_counter_ns = CLOCK_MONOTONIC on Linux, shared by
    every process of the machine, so a t from here and one from requests.jsonl compare)."""
    return time.perf_counter_ns()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
