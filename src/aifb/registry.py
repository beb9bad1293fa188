"""The registry of benchmark IDs: `BM-YYYYMMDD-NNN`, allocated once, never reused.

Each ID is a small JSON file `results/registry/<id>.json` holding the resolved recipe it runs
(overrides applied, validated), where it came from, and - for sweep points - the sweep key that
maps to it, so asking again for the same sweep point returns the same ID. Allocation takes an
exclusive flock on `results/registry/.lock` and creates the file with O_EXCL, so concurrent
`aifb run` invocations (and Snakemake jobs re-parsing the workflow) never share or reuse an ID.
An ID counts as used if it appears in the registry, in results/ or in reports/.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import re
from pathlib import Path

from .errors import RegistryError
from .paths import work_root
from .recipe import recipe_hash

ID_RE = re.compile(r"^BM-(\d{8})-(\d{3,})$")
ID_PATTERN = r"BM-\d{8}-\d{3,}"


def registry_dir(root: Path | None = None) -> Path:
    return (root or work_root()) / "results" / "registry"


@contextlib.contextmanager
def _locked(root: Path | None):
    d = registry_dir(root)
    d.mkdir(parents=True, exist_ok=True)
    with open(d / ".lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield d
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _used_numbers(root: Path, day: str) -> set[int]:
    used = set()
    base = root or work_root()
    for folder in (registry_dir(base), base / "results", base / "reports"):
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            m = ID_RE.match(p.name.removesuffix(".json"))
            if m and m.group(1) == day:
                used.add(int(m.group(2)))
    return used


def _format_id(day: str, n: int) -> str:
    return f"BM-{day}-{n:03d}"


def today() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d")


def make_entry(recipe: dict, *, recipe_path: str | None = None, overrides: list[str] | None = None,
               sweep: dict | None = None, rerun_of: str | None = None) -> dict:
    return {
        "recipe": recipe,
        "recipe_hash": recipe_hash(recipe),
        "recipe_path": recipe_path,
        "overrides": list(overrides or []),
        "sweep": sweep,
        "rerun_of": rerun_of,
    }


def _allocate_locked(d: Path, root: Path | None, day: str, entry: dict) -> str:
    n = max(_used_numbers(root, day), default=0) + 1
    while True:
        bid = _format_id(day, n)
        try:
            fd = os.open(d / f"{bid}.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            n += 1
            continue
        record = {"benchmark_id": bid,
                  "registered_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                  **entry}
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(record, indent=2) + "\n")
        return bid


def allocate(entry: dict, root: Path | None = None, day: str | None = None) -> str:
    """Mint a new ID for `entry` (see make_entry) and record it; returns the ID."""
    with _locked(root) as d:
        return _allocate_locked(d, root, day or today(), entry)


def predict_next(count: int, root: Path | None = None, day: str | None = None) -> list[str]:
    """The IDs the next `count` allocations would get (dry runs show these, writing nothing)."""
    day = day or today()
    start = max(_used_numbers(root, day), default=0) + 1
    return [_format_id(day, start + i) for i in range(count)]


def get(benchmark_id: str, root: Path | None = None) -> dict:
    if not ID_RE.match(benchmark_id):
        raise RegistryError(f"{benchmark_id!r} is not a benchmark ID (expected BM-YYYYMMDD-NNN)")
    path = registry_dir(root) / f"{benchmark_id}.json"
    if not path.is_file():
        raise RegistryError(
            f"{benchmark_id} is not registered (no {path}); allocate IDs with `aifb run RECIPE` "
            "or through a sweep in config/config.yaml")
    return json.loads(path.read_text(encoding="utf-8"))


def entry_path(benchmark_id: str, root: Path | None = None) -> Path:
    return registry_dir(root) / f"{benchmark_id}.json"


def all_entries(root: Path | None = None) -> list[dict]:
    d = registry_dir(root)
    if not d.is_dir():
        return []
    out = []
    for p in sorted(d.glob("BM-*.json")):
        try:
            out.append(json.loads(p.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError):
            continue  # a file being written by a concurrent allocation is skipped, not fatal
    return out


def sweep_key(name: str, version: int | str, level, repeat: int) -> dict:
    return {"name": name, "version": version, "level": level, "repeat": repeat}


def find_sweep_point(key: dict, entries: list[dict]) -> str | None:
    for e in entries:
        s = e.get("sweep") or {}
        if all(s.get(k) == v for k, v in key.items()):
            return e["benchmark_id"]
    return None


def allocate_sweep_point(key: dict, entry: dict, root: Path | None = None,
                         day: str | None = None) -> str:
    """The ID of a sweep point: the registered one if any, else a new one (one critical section,
    so two invocations asking for the same point at once get the same ID)."""
    with _locked(root) as d:
        existing = find_sweep_point(key, all_entries(root))
        if existing:
            return existing
        return _allocate_locked(d, root, day or today(), {**entry, "sweep": key})
