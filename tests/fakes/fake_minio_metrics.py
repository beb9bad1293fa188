"""FAKE MinIO metrics endpoint for tests only - NOT MinIO (no MinIO server installs here).

A threaded HTTP server that checks the bearer token of /minio/v2/metrics/cluster the way MinIO
does by default (MINIO_PROMETHEUS_AUTH_TYPE=jwt): an HS512 JWT signed with the secret key whose
`sub` is the access key and whose `exp` has not passed; 403 otherwise. It serves MinIO's
documented v2 cluster metric names (min.io docs, "Metrics version 2": minio_s3_requests_total
{api, server}, minio_s3_requests_errors_total, minio_s3_requests_inflight_total,
minio_s3_traffic_received_bytes), counted from the S3-like requests it answered: every other
path is one request, GET -> api="getobject", PUT -> "putobject", answered 200.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

METRICS_PATH = "/minio/v2/metrics/cluster"


def _unb64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def token_ok(token: str, access_key: str, secret_key: str) -> bool:
    try:
        header, claims, sig = token.split(".")
        if json.loads(_unb64(header)).get("alg") != "HS512":
            return False
        want = hmac.new(secret_key.encode(), f"{header}.{claims}".encode(), hashlib.sha512).digest()
        body = json.loads(_unb64(claims))
    except ValueError:
        return False
    return (hmac.compare_digest(want, _unb64(sig)) and body.get("sub") == access_key
            and body.get("exp", 0) > time.time())


class FakeMinioMetrics:
    def __init__(self, access_key: str, secret_key: str):
        self.keys = (access_key, secret_key)
        self.requests: dict[str, int] = {}
        self.received = 0
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, status: int, body: bytes = b"") -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                if self.path == METRICS_PATH:
                    auth = self.headers.get("Authorization", "")
                    if not auth.startswith("Bearer ") or not token_ok(auth[7:], *fake.keys):
                        return self._answer(403, b"Access Denied")
                    return self._answer(200, fake.metrics().encode())
                fake.count("getobject", 0)
                self._answer(200, b"x")

            def do_PUT(self):
                n = int(self.headers.get("Content-Length") or 0)
                fake.count("putobject", len(self.rfile.read(n)))
                self._answer(200)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def count(self, api: str, nbytes: int) -> None:
        with self.lock:
            self.requests[api] = self.requests.get(api, 0) + 1
            self.received += nbytes

    def metrics(self) -> str:
        server = self.endpoint.split("//")[1]
        with self.lock:
            lines = ["# HELP minio_s3_requests_total Total number of S3 requests",
                     "# TYPE minio_s3_requests_total counter"]
            lines += [f'minio_s3_requests_total{{api="{api}",server="{server}"}} {n}'
                      for api, n in sorted(self.requests.items())]
            lines += ["# HELP minio_s3_requests_errors_total Total number of S3 requests with (4xx and 5xx) errors",
                      "# TYPE minio_s3_requests_errors_total counter",
                      f'minio_s3_requests_errors_total{{api="getobject",server="{server}"}} 0',
                      "# HELP minio_s3_requests_inflight_total Total number of S3 requests currently in flight",
                      "# TYPE minio_s3_requests_inflight_total gauge",
                      f'minio_s3_requests_inflight_total{{server="{server}"}} 0',
                      "# HELP minio_s3_traffic_received_bytes Total number of s3 bytes received",
                      "# TYPE minio_s3_traffic_received_bytes counter",
                      f'minio_s3_traffic_received_bytes{{server="{server}"}} {self.received}']
        return "\n".join(lines) + "\n"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
