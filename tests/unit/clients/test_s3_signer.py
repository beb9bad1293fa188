"""The S3 client's SigV4 signer: botocore's signature, reused only where it is byte for byte
what signing again would give (same method, URL, payload hash and X-Amz-Date second)."""

import datetime
import time
import types

import pytest
from botocore.credentials import Credentials

import aifb.clients.sigv4 as sigv4

URL = "http://127.0.0.1:8333/aifb-bench/aifb/00000012"
SHA = "ab" * 32


@pytest.fixture
def clock(monkeypatch):
    """A frozen clock shared by botocore's X-Amz-Date and the signer's second."""
    now = {"t": 1_780_000_000.25}
    monkeypatch.setattr("botocore.auth.get_current_datetime", lambda: datetime.datetime.fromtimestamp(
        now["t"], datetime.timezone.utc).replace(tzinfo=None))
    monkeypatch.setattr(sigv4, "time", types.SimpleNamespace(
        time=lambda: now["t"], strftime=time.strftime, gmtime=time.gmtime))
    return now


def signer():
    sg = sigv4.PayloadSigner(Credentials("aifb-test-key", "aifb-test-secret"), "s3",
                                 "us-east-1")
    calls = []
    add_auth = sg._auth.add_auth
    sg._auth.add_auth = lambda req: (calls.append(req.method), add_auth(req))[1]
    return sg, calls


def test_a_repeat_within_the_second_reuses_botocores_headers(clock):
    sg, calls = signer()
    fresh, _ = signer()
    first = sg.sign("GET", URL)
    assert sg.sign("GET", URL) == first and calls == ["GET"]
    clock["t"] += 0.5                                  # the same second
    assert sg.sign("GET", URL) == fresh.sign("GET", URL) and calls == ["GET"]
    # another method, URL or payload is signed by botocore
    put = sg.sign("PUT", URL, b"x" * 16, SHA)
    sg.sign("HEAD", URL)
    sg.sign("GET", URL + "1")
    assert calls == ["GET", "PUT", "HEAD", "GET"]
    assert put["X-Amz-Content-SHA256"] == SHA and put != first


def test_a_new_second_is_signed_again(clock):
    sg, calls = signer()
    first = sg.sign("GET", URL)
    clock["t"] += 1.0
    second = sg.sign("GET", URL)
    assert calls == ["GET", "GET"]
    assert first["X-Amz-Date"] != second["X-Amz-Date"]
    assert first["Authorization"] != second["Authorization"]
    fresh, _ = signer()
    assert second == fresh.sign("GET", URL)
