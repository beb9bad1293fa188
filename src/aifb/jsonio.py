"""Atomic files (JSON, text, bytes): write to a temporary file in the same directory, fsync,
rename.

A reader (or a crash) sees either the old or the new run.json or report, never half of one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from aifb.errors import CorruptFileError


def write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, data, *, indent: int = 2) -> None:
    write_text(path, json.dumps(data, indent=indent, ensure_ascii=False, default=str) + "\n")


def read_json(path: str | Path):
    """The parsed file; one that does not parse is a CorruptFileError naming it."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except UnicodeDecodeError:
        raise CorruptFileError(f"{path}: not UTF-8 text (corrupt?)") from None
    except json.JSONDecodeError as exc:
        raise CorruptFileError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: "
                               f"{exc.msg}); the file is truncated or corrupt") from None
    except RecursionError:
        raise CorruptFileError(f"{path}: nested too deeply to be one of our files") from None


def iter_jsonl(path: str | Path):
    """(line number, parsed value) of each non-blank line of a JSONL file; ValueError
    "line N is not JSON" on the first line that is not."""
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield n, json.loads(line)
            except ValueError:
                raise ValueError(f"line {n} is not JSON") from None
