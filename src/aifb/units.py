"""Human units, both ways. Parsing what recipes use: durations ("30s", "250ms", "2m"), sizes
("4KiB"), percentages ("1%"), for recipe validation, the engine and SLO rules. Formatting what
reports show: one form per quantity (throughput, latency, error rate) for run reports, sweep
reports, capacity reports, comparisons, SLO verdicts and the dataset index alike."""

from __future__ import annotations

import math
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


SIGNIFICANT = 3  # figures a measured value is shown with (its integer digits are all kept)


def format_number(v: float | None) -> str:
    """A measured number for people: 3 significant figures, but never fewer than its integer
    digits, thousands separated, no trailing zeros: 58845.31 -> '58,845', 312.4 -> '312',
    12.8 -> '12.8', 3.3712 -> '3.37', 0.012345 -> '0.0123'."""
    if v is None:
        return "n/a"
    if v == 0 or not math.isfinite(v):
        return f"{v:g}"
    decimals = max(0, SIGNIFICANT - 1 - math.floor(math.log10(abs(v))))
    rounded = round(v, decimals)
    if rounded and math.floor(math.log10(abs(rounded))) > math.floor(math.log10(abs(v))):
        decimals = max(0, decimals - 1)  # 9.996 rounds to 10.0: one decimal fewer, '10'
    text = f"{v:,.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def format_rate(v: float | None, unit: str = "req/s") -> str:
    """Throughput: '58,845 req/s', '3.37 req/s' (`unit` for other counts: 'ops/s', 'queries/s')."""
    return "n/a" if v is None else f"{format_number(v)} {unit}"


def format_percent(fraction: float | None) -> str:
    """A fraction as a percentage with 3 significant figures: 0.01234 -> '1.23%'."""
    return "n/a" if fraction is None else f"{fraction * 100:.3g}%"


def format_seconds(s: float | None) -> str:
    """Short human form of a duration, 3 significant figures in s, ms or µs:
    0.000183 -> '183 µs', 0.0123 -> '12.3 ms', 1.25 -> '1.25 s', 0.99996 -> '1 s'."""
    if s is None:
        return "n/a"
    if abs(s) < 1:
        s = float(f"{s:.{SIGNIFICANT}g}")  # round first, so 0.99996 s is '1 s', not '1,000 ms'
    a = abs(s)
    if a >= 1 or a == 0:
        return f"{format_number(s)} s"
    if a >= 1e-3:
        return f"{format_number(s * 1e3)} ms"
    return f"{format_number(s * 1e6)} µs"


def format_metric(metric: str, v: float | None) -> str:
    """A summary metric by its SLO name: 'rps' a throughput, 'error_rate' a percentage, the
    rest (p50, p99, mean, ttft_p99, ...) durations in seconds."""
    if metric == "rps":
        return format_rate(v)
    if metric == "error_rate":
        return format_percent(v)
    return format_seconds(v)
