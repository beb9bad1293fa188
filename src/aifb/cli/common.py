"""What the command modules share: how `aifb` reports an error on stderr."""

from __future__ import annotations

import sys


def err(msg: str) -> None:
    print(f"aifb: {msg}", file=sys.stderr)
