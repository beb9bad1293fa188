"""The registry of benchmark IDs: `BM-YYYYMMDD-NNN`, allocated once, never reused.

Each ID is a small JSON file `results/registry/<id>.json` holding the resolved recipe it runs
(overrides applied, validated), where it came from, and - for sweep points - the sweep key that
maps to it, so asking again for the same sweep point returns the same ID. Allocation takes an
exclusive flock on `results/registry/.lock` and creates the file complete or not at all (a hard
link that fails if the name exists), so concurrent `aifb run` invocations (and Snakemake jobs
re-parsing the workflow) never share or reuse an ID. An ID counts as used if it appears in the
registry (a retired `<id>.json.corrupt` too), in results/ or in reports/. A corrupt entry is an
error that names the file and `aifb repair <id>`, never skipped.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import re
from pathlib import Path

from aifb.errors import RegistryError
from aifb.jsonio import read_json
from aifb.paths import work_root
from aifb.workflow.recipe import recipe_hash

ID_RE = re.compile(r"^BM-(\d{8})-(\d{3,})$")


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
            m = ID_RE.match(p.name.removesuffix(".corrupt").removesuffix(".json"))
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


def _create_exclusive(path: Path, text: str) -> bool:
    """Create `path` holding `text`, complete or not at all: written to a temporary file, then
    hard-linked into place (the link fails if the name exists). A reader never sees a half-
    written entry, so one that does not parse is corrupt, never "being written"."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


def _allocate_locked(d: Path, root: Path | None, day: str, entry: dict) -> str:
    n = max(_used_numbers(root, day), default=0) + 1
    while True:
        bid = _format_id(day, n)
        record = {"benchmark_id": bid,
                  "registered_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                  **entry}
        if _create_exclusive(d / f"{bid}.json", json.dumps(record, indent=2) + "\n"):
            return bid
        n += 1


def allocate(entry: dict, root: Path | None = None, day: str | None = None) -> str:
    """Mint a new ID for `entry` (see make_entry) and record it; returns the ID."""
    with _locked(root) as d:
        all_entries(root)  # a corrupt entry stops every allocation until it is repaired
        return _allocate_locked(d, root, day or today(), entry)


def predict_next(count: int, root: Path | None = None, day: str | None = None) -> list[str]:
    """The IDs the next `count` allocations would get (dry runs show these, writing nothing)."""
    if count <= 0:
        return []  # without listing results/, reports/ and the registry (every parse asks)
    day = day or today()
    start = max(_used_numbers(root, day), default=0) + 1
    return [_format_id(day, start + i) for i in range(count)]


def check_id(benchmark_id: str) -> str:
    """`benchmark_id` if it is one (BM-YYYYMMDD-NNN), else a RegistryError; every path built
    from an ID the user typed goes through here first (no `../` reaches the filesystem)."""
    if not isinstance(benchmark_id, str) or not ID_RE.match(benchmark_id):
        raise RegistryError(f"{benchmark_id!r} is not a benchmark ID (expected BM-YYYYMMDD-NNN)")
    return benchmark_id


def get(benchmark_id: str, root: Path | None = None) -> dict:
    path = registry_dir(root) / f"{check_id(benchmark_id)}.json"
    if not path.is_file():
        raise RegistryError(
            f"{benchmark_id} is not registered (no {path}); allocate IDs with `aifb run RECIPE` "
            "or through a sweep in config/config.yaml")
    return read_entry(path)


def read_entry(path: Path) -> dict:
    """One registry entry, checked: a file that does not parse, or is not an entry for the ID
    its name says, is a RegistryError naming the file and the repair."""
    bid = path.name.removesuffix(".json")
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
        problem = None
    except UnicodeDecodeError:
        problem = "is not UTF-8 text"
    except json.JSONDecodeError as exc:
        problem = f"is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}; truncated?)"
    except RecursionError:
        problem = "is nested too deeply to be a registry entry"
    if problem is None:
        if not isinstance(entry, dict) or entry.get("benchmark_id") != bid:
            problem = f"is not a registry entry for {bid} (no benchmark_id {bid!r})"
        elif not isinstance(entry.get("recipe"), dict):
            problem = "has no recipe"
    if problem:
        raise RegistryError(f"registry entry {path} {problem}. Nothing that reads the registry "
                            f"(runs, sweeps, the index) can trust it: repair it with "
                            f"`aifb repair {bid}` ({REPAIR_TEXT})")
    return entry


REPAIR_TEXT = ("rebuilds the entry from results/<id>/run.json when that is intact, otherwise "
               "retires the ID, keeping the bad file as <id>.json.corrupt")


def repair(benchmark_id: str, root: Path | None = None) -> str:
    """Repair a corrupt registry entry; returns what was done. An intact entry is left alone."""
    base = root or work_root()
    path = registry_dir(base) / f"{check_id(benchmark_id)}.json"
    with _locked(base):
        if not path.is_file():
            raise RegistryError(f"{benchmark_id} is not registered (no {path}): nothing to repair")
        try:
            read_entry(path)
            return f"{path} is intact: nothing to repair"
        except RegistryError:
            pass
        run_path = base / "results" / benchmark_id / "run.json"
        try:
            run = read_json(run_path)
            usable = (isinstance(run, dict) and run.get("benchmark_id") == benchmark_id
                      and isinstance(run.get("recipe"), dict))
        except (OSError, ValueError):
            usable = False
        corrupt = path.with_name(path.name + ".corrupt")
        os.replace(path, corrupt)
        if not usable:
            # The number stays used (_used_numbers counts <id>.json.corrupt), so it is never
            # handed out again; a sweep point it held gets a new ID when the sweep is built.
            return (f"{benchmark_id} retired: {run_path} is missing or unusable, so the entry "
                    f"cannot be rebuilt; the bad file is kept as {corrupt}")
        record = {"benchmark_id": benchmark_id, "registered_at": run.get("created_at"),
                  **make_entry(run["recipe"], recipe_path=run.get("recipe_path"),
                               overrides=run.get("overrides"), sweep=run.get("sweep"),
                               rerun_of=run.get("rerun_of")),
                  "repaired_from": str(run_path.relative_to(base))}
        _create_exclusive(path, json.dumps(record, indent=2) + "\n")
        return f"{path} rebuilt from {run_path} (the bad file is kept as {corrupt})"


def entry_path(benchmark_id: str, root: Path | None = None) -> Path:
    return registry_dir(root) / f"{benchmark_id}.json"


def all_entries(root: Path | None = None) -> list[dict]:
    """Every registry entry; a corrupt one is an error (see read_entry), never skipped: a
    skipped sweep point would be planned again under a new ID and its run orphaned."""
    d = registry_dir(root)
    if not d.is_dir():
        return []
    return [read_entry(p) for p in sorted(d.glob("BM-*.json"))]


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
