"""MinIO as a local process: `minio server <workdir>/data --address 127.0.0.1:PORT`.

The MinIO server binary is not installable from PyPI or Debian, so on machines without it a run
fails before anything starts, saying where to get it; point `service.binary` at a downloaded
`minio`, use `service.endpoint` for a running MinIO, or `service.kind: s3` for the local
SeaweedFS stand-in (aifb.services.s3). On clusters the kind runs from the `minio/minio` image
(`service.image`; recorded here).

The root credentials are the recipe's S3 credentials (service.access_key_env / secret_key_env /
*_file; defaults AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY), passed as MINIO_ROOT_USER /
MINIO_ROOT_PASSWORD in the server's environment only; with none configured, fixed placeholder
credentials are used (as MinIO's own minioadmin default; loopback only) and run.json says so. The web console is off
(MINIO_BROWSER=off; its address is still pinned to loopback), update checks are off.
Readiness = a signed ListBuckets answers. The data directory (<workdir>/data) is removed at
teardown unless `service.keep_data: true`.
"""

from __future__ import annotations

from pathlib import Path

from aifb import process
from aifb.errors import ServiceError
from aifb.services import register
from aifb.services.base import run_version
from aifb.services.s3 import LocalS3Service

MINIO_DOWNLOAD = "https://dl.min.io/server/minio/release/linux-amd64/minio"


@register("minio")
class MinioService(LocalS3Service):
    binary_name = "minio"
    server_name = "MinIO"
    install_hint = (f"MinIO's server is not packaged for pip or apt: download it from "
                    f"{MINIO_DOWNLOAD} (chmod +x; on PATH or service.binary), or use service.kind: "
                    "s3 for a local S3 server (SeaweedFS); on clusters use the minio/minio image.")

    def check_credentials(self) -> None:
        if len(self._secrets["access_key"]) < 3:
            raise ServiceError("MinIO needs an access key (root user) of at least 3 characters")
        if len(self._secrets["secret_key"]) < 8:
            raise ServiceError("MinIO needs a secret key (root password) of at least 8 characters")

    def server_env(self) -> dict:
        self.info.extra["auth"] = ("placeholder root credentials (none configured; loopback only)"
                                   if self._secrets.get("local") else
                                   "root credentials from the environment / a file")
        return {"MINIO_ROOT_USER": self._secrets["access_key"],
                "MINIO_ROOT_PASSWORD": self._secrets["secret_key"],
                "MINIO_BROWSER": "off", "MINIO_UPDATE": "off"}

    def version(self, binary: str) -> str | None:
        return run_version([binary, "--version"], r"version\s+(\S+)")

    def argv(self, binary: str, host: str, port: int, workdir: Path) -> list[str]:
        (console,) = process.free_ports(host, 1, {port})
        data = workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        self.info.extra.update({"server": "MinIO (single node, single drive)",
                                "data_dir": str(data), "console": "off"})
        return [binary, "server", str(data), "--address", f"{host}:{port}",
                "--console-address", f"{host}:{console}", "--quiet",
                *[str(a) for a in self.spec.get("args", [])]]
