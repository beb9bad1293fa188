"""What an `aifb` command shows while Snakemake runs: one line per benchmark instead of
Snakemake's output, which goes to a log file (`--verbose` keeps it on the terminal).

On a terminal each running benchmark has a live line, redrawn in place (`\\r`, ANSI cursor
moves) a few times per second, from the progress files its jobs write (aifb.progress):

    BM-20261205-001 measuring   [######..............] 4.1/12 s  31,004 req  7,533 req/s  p99 412 µs  0 errors

When it is done the line becomes its result line (ID, status, throughput, p50/p99, SLO
verdict, report path). Elsewhere (a log, CI) a plain line is printed when the phase changes and
every PLAIN_EVERY_S while it stays (if its figures moved), then the result line. A failed step
is said on stderr with its log's path and last lines (`failures`).
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import threading
import time
from pathlib import Path

from aifb.jsonio import read_json
from aifb.progress import read_all
from aifb.units import format_number, format_rate, format_seconds

PLAIN_EVERY_S = 10.0
POLL_S = 0.25
BAR_WIDTH = 20
LOAD_PHASES = ("warmup", "measuring", "cooldown")
TAIL_LINES = 15


def bar(fraction: float, width: int = BAR_WIDTH) -> str:
    n = round(max(0.0, min(1.0, fraction)) * width)
    return "[" + "#" * n + "." * (width - n) + "]"


def progress_line(state: dict, with_bar: bool = True) -> str:
    """One running benchmark, from its progress file's fields (aifb.progress)."""
    bid, phase = state["id"], state["phase"]
    head = f"{bid} {phase:<11}"
    if phase not in LOAD_PHASES:
        return f"{head} {state.get('kind') or ''}".rstrip() + " ..."
    parts = []
    elapsed, planned = state.get("elapsed_s") or 0.0, state.get("planned_s")
    done, planned_n = state.get("requests") or 0, state.get("planned_requests")
    if planned:
        fraction, parts = elapsed / planned, [f"{elapsed:.1f}/{format_number(planned)} s"]
    else:
        fraction = done / planned_n if planned_n else 0.0
        parts = [f"{elapsed:.1f} s"]
    parts.append(f"{done:,}" + (f"/{planned_n:,}" if planned_n else "") + " req")
    parts.append(format_rate(state.get("rate")))
    parts.append(f"p99 {format_seconds(state['p99_s']) if state.get('p99_s') is not None else '-'}")
    errors = state.get("errors") or 0
    parts.append(f"{errors:,} error{'' if errors == 1 else 's'}")
    if state.get("part"):   # Slurm client jobs: the figures are the benchmark job's share
        parts.append(f"({state['part']})")
    return " ".join([head, *([bar(fraction)] if with_bar else []), "  ".join(parts)])


def _slo(summary: dict) -> str:
    slo = summary.get("slo") or {}
    if slo.get("passed") is None:
        return "no SLO"
    if slo["passed"]:
        return "SLO pass"
    failed = [f"{r['rule']} ({r['measured']})" for r in slo.get("rules", []) if not r["passed"]]
    return "SLO FAIL: " + ", ".join(failed)


def shown_path(path: Path) -> str:
    """A path as the user typed commands: relative to the current folder when inside it."""
    path = Path(path)
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def result_line(bid: str, root: Path) -> str:
    """A benchmark's outcome: status, throughput, p50/p99, SLO verdict, report path; a failed
    one (nothing measured): its reason and its log's path."""
    run_path = root / "results" / bid / "run.json"
    if not run_path.is_file():
        log = root / "results" / bid / "logs" / "benchmark.log"
        return f"{bid}: no run.json was written (log: {shown_path(log)})"
    run = read_json(run_path)
    line = f"{bid}: {run.get('status')}"
    if run.get("reason"):
        line += f" - {run['reason']}"
    if run.get("status") == "failed":   # nothing was measured: where to read why
        return line + f"  log: {shown_path(root / 'results' / bid / 'logs' / 'benchmark.log')}"
    summary_path = root / "results" / bid / "summary.json"
    if summary_path.is_file():
        s = read_json(summary_path)
        lat = s.get("latency_s") or {}
        line += (f"  {format_rate((s.get('throughput') or {}).get('rps'))}"
                 f"  p50 {format_seconds(lat.get('p50'))} / p99 {format_seconds(lat.get('p99'))}"
                 f"  {_slo(s)}")
    report = root / "reports" / bid / "report.md"
    if report.is_file():
        line += f"  report: {shown_path(report)}"
    return line


class Console:
    """The benchmark lines of one command (its Snakemake calls one after the other)."""

    def __init__(self, root: Path, verbose: bool = False, stream=None, tty: bool | None = None):
        self.root = Path(root)
        self.verbose = verbose
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty() if tty is None else tty
        self.shown: set[str] = set()          # IDs whose result line is printed
        self.last: dict[str, tuple] = {}      # plain mode: ID -> (phase, time, its last line)
        self.drawn = 0                        # tty: live lines on the screen now
        self.log_path: Path | None = None     # Snakemake's output (aifb.workflow.snakemake)

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def result(self, bid: str) -> None:
        """Print a benchmark's result line (once)."""
        if bid not in self.shown:
            self.shown.add(bid)
            self.draw([], [], finished=[result_line(bid, self.root)])

    def update(self, states: list[dict], now: float | None = None) -> None:
        """Show the progress files' states: done ones as result lines, running ones as lines."""
        now = time.monotonic() if now is None else now
        finished = []
        running = []
        for st in states:
            if st["id"] in self.shown:
                continue
            if st["phase"] == "done":
                self.shown.add(st["id"])
                finished.append(result_line(st["id"], self.root))
            else:
                running.append(st)
        if self.tty:
            self.draw(running, [], finished=finished)
            return
        lines = []
        for st in running:
            phase, t, text = self.last.get(st["id"], (None, 0.0, None))
            line = progress_line(st, with_bar=False)
            # a new phase at once; within one, every PLAIN_EVERY_S if anything moved (a job
            # waiting in a queue repeats nothing)
            if phase != st["phase"] or (now - t >= PLAIN_EVERY_S and line != text):
                self.last[st["id"]] = (st["phase"], now, line)
                lines.append(line)
        self.draw([], lines, finished=finished)

    def draw(self, running: list[dict], plain: list[str], finished: list[str]) -> None:
        if not (running or plain or finished or self.drawn):
            return
        if not self.tty:
            self._write("".join(line + "\n" for line in [*plain, *finished]))
            return
        width = shutil.get_terminal_size((120, 24)).columns - 1   # no wrap: \r redraws one row
        out = ""
        if self.drawn:   # back to the first live line, and clear it and what follows
            out += "\r" + (f"\x1b[{self.drawn - 1}A" if self.drawn > 1 else "") + "\x1b[J"
        out += "".join(line + "\n" for line in finished)
        out += "\n".join(progress_line(st)[:width] for st in running)
        self.drawn = len(running)
        self._write(out)

    def clear(self) -> None:
        """Take the live lines off the screen (before other output, and at the end)."""
        if self.tty and self.drawn:
            self.draw([], [], [])


class Monitor:
    """Polls a progress folder in a thread while Snakemake runs; `stop()` shows the last state."""

    def __init__(self, console: Console, folder: Path):
        self.console, self.folder = console, Path(folder)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="aifb-progress", daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def _loop(self) -> None:
        while not self.stopping.wait(POLL_S):
            self.console.update(read_all(self.folder))

    def __exit__(self, *exc):
        self.stopping.set()
        self.thread.join()
        states = read_all(self.folder)
        self.console.update(states)
        self.console.clear()
        for st in states:   # ended without "done" (a failed step, an interruption)
            self.console.result(st["id"])
        shutil.rmtree(self.folder, ignore_errors=True)


ERROR_RULE = re.compile(r"^Error in rule (\S+):")
LOG_LINE = re.compile(r"^\s+log: (\S+)")
STEP_FAILED = re.compile(r"^aifb: (.* failed: .*)")   # aifb.step.step_log's one line


def failures(snakemake_log: Path, root: Path, start: int = 0) -> list[str]:
    """What to say on stderr when Snakemake failed: each failed step's one line (why), its
    rule, its log's path and the last lines of that log; or, when no job failed (a workflow
    error), the log's end. `start`: where this Snakemake's part of the log begins (bytes)."""
    try:
        with open(snakemake_log, "rb") as f:
            f.seek(start)
            text = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return [f"Snakemake failed, and its log {snakemake_log} cannot be read"]
    out, rule = [], None
    for line in text:
        if m := STEP_FAILED.match(line):
            out.append(m.group(1))
        elif m := ERROR_RULE.match(line):
            rule = m.group(1)
        elif rule and (m := LOG_LINE.match(line)):
            log = root / m.group(1)
            out.append(f"step {rule} failed; its log: {shown_path(log)}")
            out += ["  " + ln for ln in _tail(log)]
            rule = None
    if not out:
        out = [f"Snakemake failed; the end of its log {shown_path(snakemake_log)}:",
               *("  " + ln for ln in text[-TAIL_LINES:])]
    return out


def _tail(path: Path, n: int = TAIL_LINES) -> list[str]:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 64 * 1024))
            return f.read().decode("utf-8", "replace").splitlines()[-n:]
    except OSError:
        return ["(the log cannot be read)"]
