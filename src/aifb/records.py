"""requests.jsonl: the fast append-only writer the engine uses, and tolerant readers.

The engine keeps each completed request as a plain tuple (a "row"; no dict on the hot path):

    (client, worker, seq, t_sched_ns | None, t_start_ns, result)

with `result` the client's tuple (op, ok, err_type, err_msg, bytes_out, bytes_in, t_first_ns,
t_end_ns) - see aifb.clients.base. `RecordWriter.write_rows` turns a batch of rows into JSON
lines (fields and order as in workflow/schemas/request.schema.yaml; times as seconds since the
clock's t0 with exactly 9 decimals, the same text as aifb.clock.ns_to_s_text) and appends them
with one write() per batch of whole lines, so a crash leaves a valid prefix (at worst a last
line cut short, which the readers drop and report).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Iterator

from aifb.clock import ns_to_s_text

log = logging.getLogger("aifb.records")

FIELDS = ("client", "worker", "seq", "op", "t_sched", "t_start", "t_first", "t_end", "ok",
          "error", "bytes_out", "bytes_in", "phase")
PHASES = ("warmup", "measure", "cooldown")
# A second hard link to a run's requests.jsonl for as long as the run writes it. On Slurm, a
# cancelled job's Snakemake (inside the job) removes the job's outputs at once, while the runner
# is still writing and stopping; through this link the records survive (aifb.workflow.runner
# keeps them; aifb.slurm.client_jobs appends the client jobs' records to it then).
INFLIGHT = ".requests.jsonl.inflight"

_OP_JSON: dict[str, str] = {}


def _op_json(op: str) -> str:
    s = _OP_JSON.get(op)
    if s is None:
        s = _OP_JSON[op] = json.dumps(op, ensure_ascii=False)
    return s


def _t(ns: int | None, t0: int) -> str:
    return "null" if ns is None else ns_to_s_text(ns - t0)


def _n(v) -> str:
    return "null" if v is None else str(int(v))


def encode_row(row: tuple, phase: str, t0_ns: int) -> str:
    """One record line (with its newline), the general path: any None, errors, negatives, and
    the service-specific fields of a result's optional 9th element (see _extra_json)."""
    ci, wi, seq, ts, t_start, res = row
    op, ok, et, em, bo, bi, tf, te = res[:8]
    err = "null" if et is None else json.dumps({"type": et, "message": em or ""}, ensure_ascii=False)
    extra = _extra_json(res[8], t0_ns) if len(res) > 8 and res[8] else ""
    return (f'{{"client":{ci},"worker":{wi},"seq":{seq},"op":{_op_json(op)},'
            f'"t_sched":{_t(ts, t0_ns)},"t_start":{_t(t_start, t0_ns)},'
            f'"t_first":{_t(tf, t0_ns)},"t_end":{_t(te, t0_ns)},'
            f'"ok":{"true" if ok else "false"},"error":{err},"bytes_out":{_n(bo)},'
            f'"bytes_in":{_n(bi)},"phase":"{phase}"{extra}}}\n')


def _extra_json(extra: dict, t0_ns: int) -> str:
    """Service-specific fields (LLM tokens, vector recall, ...) appended to the record.
    `chunk_times` is a list of clock ns values, written as seconds since t0 like every time;
    so are the times inside a pipeline request's `stages`."""
    parts = []
    for key, value in extra.items():
        if key == "chunk_times":   # one per token: ns_to_s_text's text, inline for d >= 0
            text = "[" + ",".join([f"{d // 1_000_000_000}.{d % 1_000_000_000:09d}"
                                   if (d := v - t0_ns) >= 0 else ns_to_s_text(d)
                                   for v in value]) + "]"
        elif key == "stages":
            text = _stages_json(value, t0_ns)
        else:
            text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        parts.append(f',"{key}":{text}')
    return "".join(parts)


STAGE_TIMES = ("t_start", "t_first", "t_end")


def _stages_json(stages: dict, t0_ns: int) -> str:
    """A pipeline request's `stages` ({name: {t_start, t_end, ok, error, ...}}, see
    aifb.clients.pipeline): its times (clock ns) as seconds since t0 like every time."""
    out = []
    for name, st in stages.items():
        fields = [f'"{k}":{_t(st[k], t0_ns)}' if k in STAGE_TIMES else
                  f'"{k}":' + json.dumps(v, ensure_ascii=False, separators=(",", ":"))
                  for k, v in st.items()]
        out.append(json.dumps(name) + ":{" + ",".join(fields) + "}")
    return "{" + ",".join(out) + "}"


# The common line (ok, no t_sched/t_first, times after t0) is one %-format of the
# numbers that change between the parts that rarely do, each built once and kept: its head up
# to "seq": (per client and worker) and its tail from "ok" on (per byte counts and phase).
# 1.9 -> 1.55 us a line (benchmarks/README.md); the text is encode_row's
# (tests/unit/load/test_engine.py::test_fast_encoding_matches_the_general_one).
_LINE = '%s%d,"op":%s,"t_sched":null,"t_start":%d.%09d,"t_first":null,"t_end":%d.%09d%s'
_HEADS: dict[tuple, str] = {}
_TAILS: dict[tuple, str] = {}
_CACHE_MAX = 1 << 16   # a client whose byte counts vary widely would grow _TAILS without end


def _cached(cache: dict, key, text: str) -> str:
    if len(cache) >= _CACHE_MAX:
        cache.clear()
    cache[key] = text
    return text


def encode_rows(rows: list, phases: list, t0_ns: int) -> str:
    """Many lines at once; the common case through _LINE and its cached parts, the rest (and
    only the rest) through encode_row: the same text either way."""
    out = []
    append = out.append
    heads, tails, ops, line = _HEADS, _TAILS, _OP_JSON, _LINE
    G = 1_000_000_000
    for row, phase in zip(rows, phases):
        ci, wi, seq, ts, t_start, res = row
        if len(res) > 8:
            append(encode_row(row, phase, t0_ns))
            continue
        op, ok, et, em, bo, bi, tf, te = res
        if ok and ts is None and tf is None and t_start >= t0_ns:
            try:   # subscripts, not .get(): no method call (a line is ~1 us in all)
                head = heads[ci, wi]
            except KeyError:
                head = _cached(heads, (ci, wi), f'{{"client":{ci},"worker":{wi},"seq":')
            try:
                tail = tails[bo, bi, phase]
            except KeyError:
                tail = _cached(tails, (bo, bi, phase), f',"ok":true,"error":null,"bytes_out":'
                               f'{_n(bo)},"bytes_in":{_n(bi)},"phase":"{phase}"}}\n')
            try:
                opj = ops[op]
            except KeyError:
                opj = _op_json(op)
            a = t_start - t0_ns
            b = te - t0_ns
            append(line % (head, seq, opj, a // G, a % G, b // G, b % G, tail))
        else:
            append(encode_row(row, phase, t0_ns))
    return "".join(out)


class RecordWriter:
    """Append-only JSONL file; every write() carries whole lines. Opening truncates.

    With background=True (what the engine uses) the write() system calls happen on a helper
    thread, so a slow disk (ext4 journal commits, dirty-page throttling can block a write for
    tens of ms) never stalls the event loop that times requests; formatting stays on the
    caller's thread. Each batch is still one write() of whole lines, issued as soon as it is
    queued; close() waits until everything queued is on disk (in the page cache, fsynced).
    """

    def __init__(self, path: str | Path, t0_ns: int, *, truncate: bool = True,
                 background: bool = False):
        self.path = Path(path)
        self.t0_ns = t0_ns
        self.path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | (os.O_TRUNC if truncate else 0)
        self._fd = os.open(self.path, flags, 0o644)
        self.lines = 0
        self.bytes = 0
        self._error: BaseException | None = None
        self._queue = None
        self._thread = None
        if background:
            import queue
            import threading

            self._queue = queue.SimpleQueue()
            self._thread = threading.Thread(target=self._drain, name="aifb-records", daemon=True)
            self._thread.start()

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]

    def _drain(self) -> None:
        while True:
            data = self._queue.get()
            if data is None:
                return
            if self._error is None:
                try:
                    self._write_all(data)
                except BaseException as exc:  # disk full, ...: raised on the caller's side
                    self._error = exc

    def _check(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            raise err

    def write_text(self, text: str, nlines: int) -> None:
        if not text:
            return
        if self._fd is None:
            raise ValueError(f"{self.path}: the record writer is closed")
        self._check()
        data = text.encode("utf-8")
        if self._queue is not None:
            self._queue.put(data)
        else:
            self._write_all(data)
        self.lines += nlines
        self.bytes += len(data)

    def write_rows(self, rows: list, phases: list) -> None:
        if rows:
            self.write_text(encode_rows(rows, phases, self.t0_ns), len(rows))

    def close(self) -> None:
        """Write out everything queued, fsync, close. Idempotent."""
        if self._fd is None:
            return
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        try:
            os.fsync(self._fd)
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None
        self._check()

    @property
    def closed(self) -> bool:
        return self._fd is None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Records(list):
    """A list of record dicts that also says how many trailing lines were dropped."""

    dropped_lines: int = 0


def iter_records(path: str | Path, report: dict | None = None) -> Iterator[dict]:
    """Yield each record of a requests.jsonl. A last line cut short by a crash (no newline and
    not valid JSON) is dropped, logged, and counted in report["dropped_lines"]; a bad line
    anywhere else is corruption and raises ValueError naming the line."""
    if report is not None:
        report.setdefault("dropped_lines", 0)
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw)
                if not isinstance(rec, dict):
                    raise ValueError("not an object")
            except ValueError as exc:
                if not raw.endswith(b"\n"):  # only the last line can lack its newline
                    log.warning("%s: dropped a truncated last line (%d bytes)", path, len(raw))
                    if report is not None:
                        report["dropped_lines"] += 1
                    return
                raise ValueError(f"{path}:{lineno}: not a JSON record ({exc})") from None
            yield rec


def read_records(path: str | Path) -> Records:
    report: dict = {}
    out = Records(iter_records(path, report))
    out.dropped_lines = report.get("dropped_lines", 0)
    return out
