"""A benchmark's live progress for the terminal: one small JSON file per benchmark, replaced
atomically (write a temporary file, then rename), that the processes of Snakemake's jobs write
and the `aifb` command reads while Snakemake runs (aifb.workflow.console draws it).

Where: $AIFB_PROGRESS_DIR/<benchmark id>.json. The `aifb` command sets the variable for the
Snakemake it starts (aifb.workflow.snakemake), and Snakemake's jobs inherit it; without it
(plain `snakemake`) nothing is written. Who writes what, one after the other:

    the runner (aifb.workflow.runner)   phase "deploying", then the load's planned length
    the load engine (aifb.load.live)    warmup / measuring / cooldown, from a timer, <= 2 per s
                                        (load.processes > 1: the parent, from its workers'
                                        messages, <= 2 per s, a p99 pooled over all of them)
    the summarize and report shims      "summarising", "reporting", then "done"

Fields: id, phase, elapsed_s (since the load started, by the writer's clock, so a job on
another node needs no common clock), planned_s (warmup + duration + cooldown) or
planned_requests, requests (completed, every phase), errors, rate (completions/s over the last
second or so), p99_s (of a sample of the measured ok requests so far, every process's requests
weighed alike; the summary's is exact), updated (epoch s); part, when a Slurm run splits its clients over client jobs: which clients
the figures cover (the benchmark job's own; the other jobs' figures reach it only at the end). A reader tolerates a missing or half-known file (returns None).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

ENV = "AIFB_PROGRESS_DIR"
PHASES = ("deploying", "warmup", "measuring", "cooldown", "summarising", "reporting", "done")


def progress_dir() -> Path | None:
    """The folder this process writes progress into, None when nobody reads it."""
    d = os.environ.get(ENV)
    return Path(d) if d else None


class ProgressFile:
    """The progress of one benchmark: `update(**fields)` merges and rewrites the file."""

    def __init__(self, path: Path | None, benchmark_id: str):
        self.path = path
        self.state: dict = {"id": benchmark_id}
        if path is not None and path.is_file():   # a later step keeps what the earlier wrote
            self.state = read_progress(path) or self.state

    @classmethod
    def for_benchmark(cls, benchmark_id: str) -> "ProgressFile":
        d = progress_dir()
        return cls(d / f"{benchmark_id}.json" if d else None, benchmark_id)

    @property
    def enabled(self) -> bool:
        return self.path is not None

    def update(self, **fields) -> None:
        self.state.update(fields)
        if self.path is None:
            return
        self.state["updated"] = round(time.time(), 3)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(self.state), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError:
            pass  # progress is a courtesy: a full disk must not fail the benchmark


def mark(benchmark_id: str, phase: str) -> None:
    """Set a benchmark's phase (the summarize and report shims)."""
    ProgressFile.for_benchmark(benchmark_id).update(phase=phase)


def read_progress(path: Path) -> dict | None:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("phase") in PHASES else None


def read_all(folder: Path) -> list[dict]:
    """Every benchmark's progress in `folder`, in the order they started (their file's birth is
    not portable; the ID sorts in allocation order)."""
    out = []
    for p in sorted(Path(folder).glob("*.json")):
        state = read_progress(p)
        if state is not None:
            out.append(state)
    return out
