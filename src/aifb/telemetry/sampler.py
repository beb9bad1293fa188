"""The sampler process: `python -m aifb.telemetry.sampler < config.json`.

Configuration (JSON on stdin, so that secrets never appear in argv or the environment):

    {"out": "results/<id>/telemetry.jsonl", "t0_ns": <the run's t0, perf_counter_ns>,
     "interval_s": 1.0, "parent_pid": 1234, "duration_s": null,
     "sources": [{"type": "redis", "name": "redis", "endpoint": "...", "secrets": {...}}, ...]}

One thread per source, each on its own tick (a slow endpoint delays only its own samples):
every `interval_s` it calls the source's sample() with a timeout below the interval and appends
one JSON line per metric:

    {"t": 12.000123456, "source": "redis", "name": "commands_total", "labels": {"cmd": "get"},
     "value": 123456.0, "kind": "counter"}

plus `up` (1, or 0 with labels.error on a failed scrape - the gap) and `scrape_seconds`
(gauges) per sample. t is the scrape's midpoint on the run's time base (seconds since t0 on
CLOCK_MONOTONIC, like requests.jsonl). Lines are appended with one write() per scrape on an
O_APPEND descriptor: a crash leaves a valid prefix (at worst a truncated last line, which
readers drop). It stops on SIGTERM/SIGINT, when the parent process goes away (it never outlives
its run), or after duration_s; its own CPU time is the `sampler` source.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time

from aifb.telemetry import MIN_INTERVAL_S
from aifb.telemetry.sources import Metric, build_source, monotonic_ns

ERROR_TEXT_MAX = 200


def scrape_timeout(interval_s: float) -> float:
    """Below the interval where possible, so that a slow endpoint costs at most one tick; never
    under 0.2 s (a loopback connect) nor over 5 s."""
    return min(5.0, max(0.2, 0.8 * interval_s))


class Writer:
    def __init__(self, path: str, t0_ns: int):
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.t0_ns = t0_ns
        self.lock = threading.Lock()

    def t(self, ns: int) -> float:
        return round((ns - self.t0_ns) / 1e9, 9)

    def write(self, t: float, source: str, metrics: list[Metric]) -> None:
        lines = "".join(json.dumps({"t": t, "source": source, "name": m.name, "labels": m.labels,
                                    "value": m.value, "kind": m.kind}, separators=(",", ":")) + "\n"
                        for m in metrics)
        data = lines.encode()
        with self.lock:
            while data:
                n = os.write(self.fd, data)
                data = data[n:]

    def close(self) -> None:
        os.close(self.fd)


def _error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text[:ERROR_TEXT_MAX]


class SourceThread(threading.Thread):
    def __init__(self, cfg: dict, writer: Writer, interval_s: float, stop: threading.Event):
        super().__init__(name=f"telemetry-{cfg.get('name')}", daemon=True)
        self.cfg, self.writer, self.interval_s, self.stop = cfg, writer, interval_s, stop
        self.name_ = cfg.get("name") or cfg.get("type")
        self.timeout_s = scrape_timeout(interval_s)
        self.source = None

    def _gap(self, t0: int, t1: int, exc: BaseException) -> None:
        self.writer.write(self.writer.t((t0 + t1) // 2), self.name_,
                          [Metric("up", {"error": _error_text(exc)}, 0.0, "gauge"),
                           Metric("scrape_seconds", {}, (t1 - t0) / 1e9, "gauge")])

    def once(self) -> bool:
        """One scrape; False when the source cannot be built and is optional (drop it)."""
        t0 = monotonic_ns()
        try:
            if self.source is None:
                self.source = build_source(self.cfg, self.timeout_s)
            metrics = self.source.sample()
        except Exception as exc:   # fail soft: the gap is recorded, the run goes on
            self._gap(t0, monotonic_ns(), exc)
            return not (self.source is None and self.cfg.get("optional"))
        t1 = monotonic_ns()
        self.writer.write(self.writer.t((t0 + t1) // 2), self.name_,
                          metrics + [Metric("up", {}, 1.0, "gauge"),
                                     Metric("scrape_seconds", {}, (t1 - t0) / 1e9, "gauge")])
        return True

    def run(self) -> None:
        start = time.monotonic()
        k = 0
        try:
            while not self.stop.is_set():
                if not self.once():
                    return
                k = max(k + 1, int((time.monotonic() - start) / self.interval_s) + 1)  # skip missed ticks
                self.stop.wait(max(0.0, start + k * self.interval_s - time.monotonic()))
            self.once()   # a last sample at stop time: the window's end is bracketed
        finally:
            if self.source is not None:
                try:
                    self.source.close()
                except Exception:
                    pass


def run(cfg: dict) -> int:
    interval_s = max(MIN_INTERVAL_S, float(cfg.get("interval_s") or 1.0))
    writer = Writer(cfg["out"], int(cfg["t0_ns"]))
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    threads = [SourceThread(s, writer, interval_s, stop) for s in cfg.get("sources", [])]
    own = SourceThread({"type": "self", "name": "sampler"}, writer, interval_s, stop)
    for th in [own, *threads]:
        th.start()
    parent = cfg.get("parent_pid")
    deadline = time.monotonic() + cfg["duration_s"] if cfg.get("duration_s") else None
    while not stop.is_set():
        if parent and os.getppid() != parent:   # the runner is gone: never outlive the run
            break
        if deadline and time.monotonic() >= deadline:
            break
        stop.wait(0.2)
    stop.set()
    for th in threads:
        th.join(th.timeout_s + 1.0)
    own.join(1.0)
    own.once()   # the final CPU total, after every source stopped
    writer.close()
    return 0


def main() -> int:
    try:
        cfg = json.load(sys.stdin)
    except ValueError as exc:
        print(f"aifb telemetry sampler: bad configuration on stdin: {exc}", file=sys.stderr)
        return 2
    sys.stdin.close()
    return run(cfg)


if __name__ == "__main__":
    sys.exit(main())
