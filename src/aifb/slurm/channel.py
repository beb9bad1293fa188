"""The coordinator connection between a benchmark job and its client jobs: a per-run token,
authenticated lines (Channel), and the two things both ends of the clock sync share
(SYNC_SAMPLES, sleep_until).

Authentication: plan.json is on the shared filesystem, so anyone who can read it can reach
the coordinator. Each run has a random token in results/<id>/clients/token, created 0600 (the
client jobs run as the same user and read it). On every connection the coordinator first
sends a fresh nonce (one plain line); from then on every line in either direction is
`MAC JSON`, MAC being HMAC-SHA256 under the token of nonce, direction, the line's sequence
number and the JSON. A line that fails the check is a BadMessage; what the coordinator then
does is in aifb.slurm.client_jobs.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path

from aifb.clock import now_ns

TOKEN_FILE = "token"
MAX_LINE = 16 << 20  # a "done" carries the load stats: generous, but bounded
SYNC_SAMPLES = 32    # clock-sync round trips; the one with the smallest round trip is kept


def plain_line(msg: dict) -> bytes:
    """One unauthenticated line (the coordinator's opening nonce)."""
    return (json.dumps(msg, separators=(",", ":"), default=str) + "\n").encode()


class BadMessage(Exception):
    """A coordinator line that is not authentic or not allowed (the words say which)."""


def write_token(path: Path) -> bytes:
    """A new random token in `path`, readable by this user only."""
    token = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token.hex() + "\n")
    return token


def read_token(path: Path) -> bytes:
    return bytes.fromhex(path.read_text(encoding="ascii").strip())


class Channel:
    """One coordinator connection's authenticated lines (see the comment above)."""

    def __init__(self, token: bytes, nonce: str, reader, writer, *, side: str):
        self.token, self.nonce = token, nonce
        self.reader, self.writer = reader, writer
        self.out_dir, self.in_dir = ("c2s", "s2c") if side == "client" else ("s2c", "c2s")
        self.out_seq = self.in_seq = 0

    def _mac(self, direction: str, seq: int, body: bytes) -> str:
        head = f"{self.nonce}|{direction}|{seq}|".encode()
        return hmac.new(self.token, head + body, hashlib.sha256).hexdigest()

    def send(self, msg: dict) -> None:
        body = json.dumps(msg, separators=(",", ":"), default=str).encode()
        self.writer.write(self._mac(self.out_dir, self.out_seq, body).encode() + b" " + body + b"\n")
        self.out_seq += 1

    async def drain(self) -> None:
        await self.writer.drain()

    async def recv(self) -> dict | None:
        """The next authentic message; None at the end of the stream; BadMessage otherwise."""
        try:
            line = await self.reader.readline()
        except (ValueError, asyncio.LimitOverrunError):
            raise BadMessage("a line longer than the limit") from None
        if not line:
            return None
        mac, _, body = line.rstrip(b"\n").partition(b" ")
        want = self._mac(self.in_dir, self.in_seq, body).encode()
        if not hmac.compare_digest(mac, want):
            raise BadMessage("a line that fails authentication (no valid HMAC under this run's "
                             "token)")
        self.in_seq += 1
        try:
            msg = json.loads(body)
        except ValueError:
            raise BadMessage("an authenticated line that is not JSON") from None
        if not isinstance(msg, dict):
            raise BadMessage("an authenticated line that is not a JSON object")
        return msg


async def sleep_until(t_ns: int) -> None:
    """Wait until the monotonic instant t_ns: sleep to 2 ms before it, then yield until it."""
    left = (t_ns - now_ns()) / 1e9
    if left > 0.002:
        await asyncio.sleep(left - 0.002)
    while now_ns() < t_ns:
        await asyncio.sleep(0)
