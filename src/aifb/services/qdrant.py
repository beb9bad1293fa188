"""Qdrant as a local process: the `qdrant` binary (when on PATH or service.binary), configured
through its environment variables, bound to 127.0.0.1.

    QDRANT__SERVICE__HOST=127.0.0.1  QDRANT__SERVICE__HTTP_PORT=P  QDRANT__SERVICE__GRPC_PORT=G
    QDRANT__STORAGE__STORAGE_PATH=<workdir>/storage  QDRANT__STORAGE__SNAPSHOTS_PATH=<workdir>/snapshots
    QDRANT__TELEMETRY_DISABLED=true  [QDRANT__SERVICE__API_KEY=<from service.api_key_env/_file>]
    qdrant --disable-telemetry [service.args...]

The API key travels only in the child's environment (never in argv, run.json or a log line).
`--disable-telemetry` / QDRANT__TELEMETRY_DISABLED stop Qdrant's anonymous usage reports to its
makers; its own GET /telemetry API, which aifb.telemetry reads beside /metrics, is a separate
route (not verified against a real Qdrant here: none installs; were it off, the source records
gaps and the run goes on).
Readiness is a real GET /readyz. Qdrant cannot be installed on every machine (there is no pip or
Debian package): without the binary, deploy fails with a message saying what to do. On clusters
the `qdrant/qdrant` image runs the same server (recorded as cluster_image).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from aifb import process
from aifb.credentials import api_key
from aifb.clients.vector.qdrant import QdrantClient
from aifb.services import register
from aifb.services.base import LocalProcessService, run_version

CLUSTER_IMAGE = "docker.io/qdrant/qdrant"
# REST endpoints that are not the client's requests (the sampler's own scrapes, health checks)
NOT_CLIENT = ["/metrics", "/telemetry", "/healthz", "/readyz", "/livez", "/"]


@register("qdrant")
class QdrantService(LocalProcessService):
    binary_name = "qdrant"
    install_hint = ("Qdrant has no pip or Debian package: download the `qdrant` release binary "
                    "(github.com/qdrant/qdrant/releases) onto PATH, or run the qdrant/qdrant "
                    "container (on clusters: Apptainer `docker://qdrant/qdrant`).")

    @classmethod
    def telemetry_sources(cls, endpoint: str, secrets: dict, extra: dict) -> list[dict]:
        """/metrics, whose rest_responses_total (less NOT_CLIENT) is the server's count of
        requests, and /telemetry (per-endpoint responses and their durations, collections,
        memory)."""
        key = secrets.get("api_key") or secrets.get("password")   # or service.password_env
        headers = {"api-key": key} if key else {}
        return [{"type": "prometheus", "name": "qdrant", "endpoint": endpoint, "headers": headers,
                 "figures": {"requests": {
                     "metrics": ["rest_responses_total"], "exclude": {"endpoint": NOT_CLIENT},
                     "client": "requests",
                     "basis": "Qdrant rest_responses_total (all endpoints but /metrics and "
                              "health) vs client requests"}}},
                {"type": "qdrant_telemetry", "name": "qdrant_telemetry", "endpoint": endpoint,
                 "headers": headers}]

    def argv(self, binary: str, host: str, port: int, workdir: Path) -> list[str]:
        return [binary, "--disable-telemetry", *self.spec.get("args", [])]

    def environment(self, host: str, port: int) -> dict:
        grpc_port = self.spec.get("grpc_port")
        if not grpc_port or grpc_port == port:
            (grpc_port,) = process.free_ports(host, 1, {port})
        env = {
            "QDRANT__SERVICE__HOST": host,
            "QDRANT__SERVICE__HTTP_PORT": str(port),
            "QDRANT__SERVICE__GRPC_PORT": str(grpc_port),
            "QDRANT__STORAGE__STORAGE_PATH": str(self.workdir / "storage"),
            "QDRANT__STORAGE__SNAPSHOTS_PATH": str(self.workdir / "snapshots"),
            "QDRANT__TELEMETRY_DISABLED": "true",
        }
        self.info.extra.update({"grpc_port": grpc_port, "storage": env["QDRANT__STORAGE__STORAGE_PATH"],
                                "telemetry": "disabled", "config_env": sorted(env)})
        return env

    def version(self, binary: str) -> str | None:
        self.info.extra["cluster_image"] = self.cluster_image()
        return run_version([binary, "--version"], r"(\d+\.\d+\.\d+\S*)")

    def cluster_image(self) -> str:
        return self.spec.get("image") or (
            f"{CLUSTER_IMAGE}:v{self.spec['version'].lstrip('v')}" if self.spec.get("version")
            else CLUSTER_IMAGE)

    def endpoint_for(self, host: str, port: int) -> str:
        return f"http://{host}:{port}"

    async def probe(self, endpoint: str, timeout_s: float) -> None:
        key = getattr(self, "_key", None)
        await QdrantClient.probe(endpoint, timeout_s, {"api_key": key} if key else None)

    def before_deploy(self) -> None:
        self._key = api_key(self.spec)

    auth_hint = "service.api_key_env or api_key_file: Qdrant's API key"

    def auth(self) -> str | None:
        return "API key (QDRANT__SERVICE__API_KEY)" if self._key else None

    def spawn_env(self, host: str, port: int) -> dict:
        env = self.environment(host, port)
        if self._key:
            env["QDRANT__SERVICE__API_KEY"] = self._key   # only in the child's environment
        self.info.extra["api_key"] = "set (through the environment)" if self._key else None
        return env

    async def teardown(self) -> None:
        await super().teardown()
        storage = self.workdir / "storage"
        if not self.spec.get("keep_data") and self.info.extra.get("storage") and storage.is_dir():
            shutil.rmtree(storage, ignore_errors=True)
            self.info.extra["storage_removed"] = True
