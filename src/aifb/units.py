"""Parsing of the human units recipes use: durations ("30s", "250ms", "2m"), sizes ("4KiB"),
percentages ("1%"). One implementation, used by recipe validation, the engine and SLO rules."""

from __future__ import annotations

import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ns|us|µs|ms|s|m|min|h)?\s*$")
_DURATION_FACTORS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, None: 1.0,
                     "m": 60.0, "min": 60.0, "h": 3600.0}
DURATION_PATTERN = r"^\s*\d+(\.\d+)?\s*(ns|us|µs|ms|s|m|min|h)?\s*$"

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|KiB|MiB|GiB|k|K|M|G)?\s*$")
_SIZE_FACTORS = {None: 1, "B": 1, "KB": 1000, "MB": 1000**2, "GB": 1000**3, "k": 1000,
                 "K": 1024, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "M": 1024**2,
                 "G": 1024**3}
SIZE_PATTERN = r"^\s*\d+(\.\d+)?\s*(B|KB|MB|GB|KiB|MiB|GiB|k|K|M|G)?\s*$"


def parse_duration(value: str | int | float) -> float:
    """Seconds from a number (seconds) or a string with a unit."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, (int, float)):
        return float(value)
    m = _DURATION.match(str(value))
    if not m:
        raise ValueError(f"{value!r} is not a duration (examples: 30s, 250ms, 2m)")
    return float(m.group(1)) * _DURATION_FACTORS[m.group(2)]


def parse_size(value: str | int) -> int:
    """Bytes from an integer or a string such as 4KiB or 1MB."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a size")
    if isinstance(value, int):
        return value
    m = _SIZE.match(str(value))
    if not m:
        raise ValueError(f"{value!r} is not a size (examples: 128, 4KiB, 1MiB)")
    return int(float(m.group(1)) * _SIZE_FACTORS[m.group(2)])


def format_seconds(s: float | None) -> str:
    """Short human form of a duration: 0.000183 -> '0.183 ms', 1.25 -> '1.25 s'."""
    if s is None:
        return "n/a"
    a = abs(s)
    if a >= 1:
        return f"{s:.3g} s" if a < 100 else f"{s:.0f} s"
    if a >= 1e-3:
        return f"{s * 1e3:.3g} ms"
    return f"{s * 1e6:.3g} µs"
