"""telemetry.jsonl over a time window, in pure Python (no numpy/polars: the GPU check script
runs it on a bare python3).

    load(path)                      -> Telemetry: series by (source, name, labels), up samples;
                                    a counter that appears after its source's first successful
                                    sample starts from 0 at the sample before (_zero_before_first)
    Telemetry.counter_delta(...)    increase of a counter over [lo, hi]: counter resets (a value
                                    that drops: restart, RAPL wrap) add the new value, as
                                    Prometheus' increase() does; the values at lo and hi are
                                    interpolated linearly between the samples that bracket them
    Telemetry.gauge_stats(...)      n, mean, p95, max of the samples with lo <= t <= hi
    Telemetry.window(lo, hi)        every series' figures plus per-source coverage and gaps

Percentiles: aifb.stats.quantiles_sorted (Hyndman-Fan 7), the one method of the tool.
"""

from __future__ import annotations

import json
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from pathlib import Path

from aifb.stats import quantiles_sorted

COVERAGE_MIN = 0.9   # below this share of expected samples, a source's gap is a warning


def series_key(name: str, labels: dict) -> str:
    if not labels:
        return name
    return name + "{" + ",".join(f"{k}={labels[k]}" for k in sorted(labels)) + "}"


@dataclass
class Series:
    source: str
    name: str
    labels: dict
    kind: str
    t: list = field(default_factory=list)
    v: list = field(default_factory=list)

    def adjusted(self) -> list:
        """Cumulative values with counter resets folded in (monotone for a counter)."""
        if self.kind != "counter":
            return self.v
        out, offset, prev = [], 0.0, None
        for x in self.v:
            if prev is not None and x < prev:
                offset += prev
            out.append(x + offset)
            prev = x
        return out

    def at(self, x: float, values: list) -> float | None:
        """Linear interpolation at x; None outside the sampled span."""
        t = self.t
        if not t or x < t[0] or x > t[-1]:
            return None
        i = bisect_right(t, x) - 1
        if i >= len(t) - 1 or t[i] == x:
            return values[i]
        t0, t1 = t[i], t[i + 1]
        return values[i] + (values[i + 1] - values[i]) * (x - t0) / (t1 - t0)


@dataclass
class Telemetry:
    series: dict            # (source, key) -> Series
    up: dict                # source -> [(t, ok, error)]
    dropped_lines: int = 0
    samples: int = 0

    def find(self, source: str, name: str) -> list[Series]:
        return [s for (src, _), s in self.series.items() if src == source and s.name == name]

    def counter_delta(self, s: Series, lo: float, hi: float) -> tuple[float | None, float]:
        """(increase over the covered part of [lo, hi], covered seconds)."""
        if not s.t:
            return None, 0.0
        a, b = max(lo, s.t[0]), min(hi, s.t[-1])
        if b <= a:
            return None, 0.0
        adj = s.adjusted()
        return s.at(b, adj) - s.at(a, adj), b - a

    def sum_delta(self, source: str, name: str, lo: float, hi: float, where=None) -> float | None:
        total, found = 0.0, False
        for s in self.find(source, name):
            if where is not None and not where(s.labels):
                continue
            d, _ = self.counter_delta(s, lo, hi)
            if d is not None:
                total += d
                found = True
        return total if found else None

    def gauge_values(self, s: Series, lo: float, hi: float) -> list[float]:
        return s.v[bisect_left(s.t, lo):bisect_right(s.t, hi)]

    def gauge_stats(self, s: Series, lo: float, hi: float) -> dict | None:
        vals = self.gauge_values(s, lo, hi)
        if not vals:
            return None
        srt = sorted(vals)
        return {"kind": "gauge", "n": len(vals), "mean": sum(vals) / len(vals),
                "p95": quantiles_sorted(srt, [0.95])[0], "max": srt[-1]}

    def integral(self, s: Series, lo: float, hi: float) -> float | None:
        """Trapezoidal integral of a gauge over the samples inside [lo, hi] (e.g. W -> J)."""
        i, j = bisect_left(s.t, lo), bisect_right(s.t, hi)
        t, v = s.t[i:j], s.v[i:j]
        if len(t) < 2:
            return None
        return sum((t[k + 1] - t[k]) * (v[k] + v[k + 1]) / 2 for k in range(len(t) - 1))

    def coverage(self, source: str, lo: float, hi: float, interval_s: float) -> dict:
        ups = [(t, ok, err) for t, ok, err in self.up.get(source, []) if lo <= t <= hi]
        good = sum(1 for _, ok, _ in ups if ok)
        expected = max(1, int((hi - lo) / interval_s)) if interval_s else None
        errors = []
        for _, ok, err in ups:
            if not ok and err and err not in errors:
                errors.append(err)
        all_ups = self.up.get(source, [])
        return {"samples": good, "gaps": len(ups) - good,
                "expected": expected,
                "coverage": min(1.0, good / expected) if expected else None,
                "errors": errors[:3],
                "ever_up": any(ok for _, ok, _ in all_ups),
                "first_error": next((e for _, ok, e in all_ups if not ok and e), None)}

    def window(self, lo: float, hi: float, interval_s: float) -> dict:
        metrics: dict = {}
        for (src, key), s in sorted(self.series.items()):
            if s.name in ("up",):
                continue
            if s.kind == "counter":
                d, span = self.counter_delta(s, lo, hi)
                if d is None:
                    continue
                fig = {"kind": "counter", "delta": d, "rate": d / span if span > 0 else None}
            else:
                fig = self.gauge_stats(s, lo, hi)
                if fig is None:
                    continue
            metrics.setdefault(src, {})[key] = fig
        sources = {src: self.coverage(src, lo, hi, interval_s) for src in sorted(self.up)}
        return {"sources": sources, "metrics": metrics}


def load(path: Path) -> Telemetry:
    """Read telemetry.jsonl; malformed lines (a truncated last line after a crash) are dropped
    and counted."""
    series: dict = {}
    up: dict = {}
    dropped = n = 0
    try:
        fh = open(path, encoding="utf-8", errors="replace")
    except OSError:
        return Telemetry({}, {}, 0, 0)
    with fh:
        for line in fh:
            try:
                rec = json.loads(line)
                t, src, name, value = float(rec["t"]), rec["source"], rec["name"], float(rec["value"])
                labels = rec.get("labels") or {}
                kind = rec.get("kind", "gauge")
            except (ValueError, KeyError, TypeError):
                dropped += 1
                continue
            n += 1
            if name == "up":
                up.setdefault(src, []).append((t, value >= 1, labels.get("error")))
                continue
            key = (src, series_key(name, labels))
            s = series.get(key)
            if s is None:
                s = series[key] = Series(src, name, labels, kind)
            if s.t and t < s.t[-1]:   # one thread per source writes in order; keep it sorted
                i = bisect_right(s.t, t)
                s.t.insert(i, t)
                s.v.insert(i, value)
            else:
                s.t.append(t)
                s.v.append(value)
    for v in up.values():
        v.sort(key=lambda x: x[0])
    for s in series.values():
        _zero_before_first(s, up.get(s.source, []))
    return Telemetry(series, up, dropped, n)


def _zero_before_first(s: Series, ups: list) -> None:
    """A counter absent from a successful scrape had not counted anything yet: labelled
    Prometheus counters, Redis commandstats and pg_stat_io rows appear on their first event.
    So a counter that first shows up after a successful sample of its source starts from 0 at
    that sample (else the events before its first appearance would be lost from the window)."""
    if s.kind != "counter" or not s.t:
        return
    before = [t for t, ok, _ in ups if ok and t < s.t[0]]
    if before:
        s.t.insert(0, before[-1])
        s.v.insert(0, 0.0)
