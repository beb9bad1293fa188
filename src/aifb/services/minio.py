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

Server telemetry: MinIO's Prometheus endpoint /minio/v2/metrics/cluster, with the bearer token
MinIO itself checks by default (MINIO_PROMETHEUS_AUTH_TYPE=jwt): an HS512 JWT whose subject is
the access key and which is signed with the secret key, as `mc admin prometheus generate` makes
it (prometheus_token). Chosen over MINIO_PROMETHEUS_AUTH_TYPE=public because the same token
works for a MinIO aifb deploys and for one at `service.endpoint` (whose configuration aifb does
not own), and because `public` would let anyone who reaches the port read the metrics, which
check_bind's rule (off loopback only with authentication) does not allow. The token lives in
the sampler's configuration (stdin) only, never in run.json or a log; it expires after
TOKEN_VALID_S. minio_s3_requests_total (by S3 API) is the server's count of requests.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path

from aifb import process
from aifb.errors import ServiceError
from aifb.services import register
from aifb.services.base import run_version
from aifb.services.s3 import LocalS3Service

MINIO_DOWNLOAD = "https://dl.min.io/server/minio/release/linux-amd64/minio"
METRICS_PATH = "/minio/v2/metrics/cluster"
TOKEN_VALID_S = 7 * 86400   # longer than any run; a token that leaked stops working


def _b64url(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def prometheus_token(access_key: str, secret_key: str, now: float | None = None) -> str:
    """The bearer token MinIO's metrics endpoints accept: a JWT (RFC 7519) signed HS512 with
    the secret key, claims exp, sub = the access key, iss = "prometheus" (what `mc admin
    prometheus generate` writes). Built with hmac: three base64url parts, no JWT library
    needed for one fixed header."""
    now = time.time() if now is None else now
    header = {"alg": "HS512", "typ": "JWT"}
    claims = {"exp": int(now + TOKEN_VALID_S), "sub": access_key, "iss": "prometheus"}
    signing = b".".join(_b64url(json.dumps(part, separators=(",", ":")).encode())
                        for part in (header, claims))
    sig = hmac.new(secret_key.encode(), signing, hashlib.sha512).digest()
    return (signing + b"." + _b64url(sig)).decode()


@register("minio")
class MinioService(LocalS3Service):
    binary_name = "minio"
    server_name = "MinIO"
    install_hint = (f"MinIO's server is not packaged for pip or apt: download it from "
                    f"{MINIO_DOWNLOAD} (chmod +x; on PATH or service.binary), or use service.kind: "
                    "s3 for a local S3 server (SeaweedFS); on clusters use the minio/minio image.")

    @classmethod
    def telemetry_sources(cls, endpoint: str, secrets: dict, extra: dict) -> list[dict]:
        keys = secrets.get("access_key"), secrets.get("secret_key")
        token = prometheus_token(*keys) if all(keys) else None   # none: MinIO answers 403 (a gap)
        return [{"type": "prometheus", "name": "minio", "url": endpoint.rstrip("/") + METRICS_PATH,
                 "headers": {"Authorization": f"Bearer {token}"} if token else {},
                 "figures": {"requests": {
                     "metrics": ["minio_s3_requests_total"], "client": "requests",
                     "basis": "MinIO minio_s3_requests_total (all S3 APIs) vs client requests"},
                     "queue": ["minio_s3_requests_inflight_total"]}}]

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
