"""The S3 client's request signer: botocore's own SigV4 signer (botocore.auth.S3SigV4Auth, no
hand-rolled signing), with the payload's SHA-256 passed in and a signature reused where signing
again would give the same bytes (PayloadSigner)."""

from __future__ import annotations

import time


class PayloadSigner:
    """botocore's S3 SigV4 signer; the payload's SHA-256 may be passed in (bodies are reused,
    so hashing each one again would measure hashlib, not the server).

    A signature covers the method, URL, payload hash and X-Amz-Date, whose resolution is one
    second: a request that repeats all four within the same second gets the very headers
    botocore gave the first one (byte for byte what signing it again would give), so keys
    drawn again within a second cost a dict look-up, not botocore's ~100 µs (measured:
    benchmarks/http_client_cost.py). The headers of the current second only are kept."""

    def __init__(self, creds, service: str, region: str):
        from botocore.auth import S3SigV4Auth
        from botocore.awsrequest import AWSRequest

        class Signer(S3SigV4Auth):
            def payload(self, request):
                sha = request.context.get("aifb_payload_sha256")
                return sha if sha is not None else super().payload(request)

        self._auth = Signer(creds, service, region)
        self._request = AWSRequest
        self._second = None
        self._stamp = ""
        self._signed: dict = {}

    def sign(self, method: str, url: str, body: bytes | None = None,
             sha256_hex: str | None = None) -> dict:
        """The signed headers (the same dict for a repeat within the second: not to be changed)."""
        second = int(time.time())
        if second != self._second:
            self._second, self._signed = second, {}
            self._stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(second))
        key = (method, url, sha256_hex)
        headers = self._signed.get(key)
        if headers is not None:
            return headers
        req = self._request(method=method, url=url, data=body, headers={})
        if sha256_hex is not None:
            req.context["aifb_payload_sha256"] = sha256_hex
        self._auth.add_auth(req)
        headers = dict(req.headers.items())
        if headers.get("X-Amz-Date") == self._stamp:   # not signed across a second's edge
            self._signed[key] = headers
        return headers
