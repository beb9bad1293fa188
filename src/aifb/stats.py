"""Small-sample statistics for repeated measurements: mean with a Student-t confidence interval,
and the relative spread of repeats (rerun tolerances are built on it).

No scipy: the two-sided 95 % t quantiles for 1..30 degrees of freedom come from a table, and any
other (integer) df / confidence level is computed exactly by inverting the closed-form Student-t
CDF for integer degrees of freedom (a finite series in cos^2 of atan(t/sqrt(df))) by bisection.
The table and the series agree to 1e-6 (tests/unit/test_stats.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

# Two-sided 95 % critical values t_{0.975, df}, df = 1..30.
T_975 = (
    12.706204736, 4.302652730, 3.182446305, 2.776445105, 2.570581836,
    2.446911851, 2.364624252, 2.306004135, 2.262157163, 2.228138852,
    2.200985160, 2.178812830, 2.160368656, 2.144786688, 2.131449546,
    2.119905299, 2.109815578, 2.100922040, 2.093024054, 2.085963447,
    2.079613845, 2.073873068, 2.068657610, 2.063898562, 2.059538553,
    2.055529439, 2.051830516, 2.048407142, 2.045229642, 2.042272456,
)


def _central_mass(t: float, df: int) -> float:
    """P(|T| < t) for Student's t with integer df (closed form; Abramowitz & Stegun 26.7.3/4)."""
    theta = math.atan(t / math.sqrt(df))
    c2 = math.cos(theta) ** 2
    s = math.sin(theta)
    if df % 2 == 1:
        if df == 1:
            return 2.0 * theta / math.pi
        term, total = 1.0, 1.0
        for k in range(1, (df - 3) // 2 + 1):
            term *= c2 * (2 * k) / (2 * k + 1)
            total += term
        return 2.0 / math.pi * (theta + s * math.cos(theta) * total)
    term, total = 1.0, 1.0
    for k in range(1, (df - 2) // 2 + 1):
        term *= c2 * (2 * k - 1) / (2 * k)
        total += term
    return s * total


def t_quantile(df: int, confidence: float = 0.95) -> float:
    """Two-sided critical value of Student's t: P(|T| <= t) = confidence, for integer df >= 1.

    t_quantile(4) == 2.776 (the t_{0.975, 4} of every textbook table).
    """
    if isinstance(df, bool) or int(df) != df or df < 1:
        raise ValueError(f"degrees of freedom must be a positive integer, got {df!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence!r}")
    df = int(df)
    if confidence == 0.95 and df <= len(T_975):
        return T_975[df - 1]
    if df > 100_000:  # the normal limit; the series would need df/2 terms
        from statistics import NormalDist
        return NormalDist().inv_cdf(0.5 + confidence / 2)
    lo, hi = 0.0, 1.0
    while _central_mass(hi, df) < confidence:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _central_mass(mid, df) < confidence:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def quantiles_sorted(x, qs):
    """Hyndman-Fan 7 (numpy 'linear') quantiles of an ascending sequence (list or array):
    h = (n-1)q, x[floor h] + (h - floor h) * (x[floor h + 1] - x[floor h]). The one percentile
    method of every figure the tool reports (latencies, scheduling and event-loop lags)."""
    n = len(x)
    out = []
    for q in qs:
        h = (n - 1) * q
        lo = int(math.floor(h))
        hi = min(lo + 1, n - 1)
        frac = h - lo
        lo_v, hi_v = float(x[lo]), float(x[hi])
        out.append(lo_v + frac * (hi_v - lo_v) if frac else lo_v)
    return out


def _clean(values: Iterable[float | None]) -> list[float]:
    out = []
    for v in values:
        if v is None:
            continue
        v = float(v)
        if not math.isnan(v):
            out.append(v)
    return out


def mean_ci(values: Iterable[float | None], confidence: float = 0.95) -> dict:
    """Mean and two-sided Student-t confidence interval of a small sample.

    Returns {n, mean, std (sample, ddof=1), confidence, half_width, low, high}. None and NaN
    values are left out. With n = 1 there is no interval: std, half_width, low and high are None
    (and with n = 0 the mean is None too).
    """
    xs = _clean(values)
    n = len(xs)
    out = {"n": n, "mean": None, "std": None, "confidence": confidence,
           "half_width": None, "low": None, "high": None}
    if n == 0:
        return out
    mean = math.fsum(xs) / n
    out["mean"] = mean
    if n < 2:
        return out
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    half = t_quantile(n - 1, confidence) * std / math.sqrt(n)
    out.update(std=std, half_width=half, low=mean - half, high=mean + half)
    return out


def relative_spread(values: Iterable[float | None]) -> float | None:
    """Coefficient of variation of repeated measurements: sample std (ddof=1) / |mean|.

    None with fewer than two values or a zero mean. Rerun tolerances are a prediction
    interval built on it (aifb.analysis.compare.rerun_tolerance).
    """
    xs = _clean(values)
    if len(xs) < 2:
        return None
    mean = math.fsum(xs) / len(xs)
    if mean == 0:
        return None
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (len(xs) - 1))
    return std / abs(mean)
