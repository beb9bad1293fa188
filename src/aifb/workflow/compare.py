"""`aifb compare`: find the runs named on the command line (benchmark IDs, one sweep's levels, or
two sweeps level by level), compare them (aifb.analysis.compare_runs) and write the report
(aifb.reporting.compare_report) under reports/.

A sweep's points are its registry entries (the newest epoch of each level and repeat, as
aifb.workflow.sweep.latest_point picks them), so a sweep compares from files alone, wherever
they were copied. The noise of a subject is the spread of its sweep level's repeats
(aifb.workflow.rerun.repeat_spread_for, the same as a rerun's verdict uses).
"""

from __future__ import annotations

import re
from pathlib import Path

from aifb.analysis.compare_runs import compare_subjects
from aifb.errors import AifbError
from aifb.jsonio import read_json
from aifb.reporting.compare_report import write_comparison_report
from aifb.workflow import registry
from aifb.workflow.rerun import repeat_spread_for
from aifb.workflow.sweep import latest_point

USAGE = "give 2 or more benchmark IDs, one sweep name (its levels), or two sweep names"


def _load(bid: str, root: Path) -> tuple[dict, dict]:
    """(run.json, summary.json) of a run, or a one-line error saying what is missing."""
    run_dir = root / "results" / bid
    if not (run_dir / "run.json").is_file():
        known = registry.entry_path(bid, root).is_file()
        raise AifbError(f"{bid}: " + ("registered but never run (no results/"
                                      f"{bid}/run.json)" if known else
                                      "unknown benchmark ID (not in the registry, no "
                                      f"results/{bid}/run.json)"))
    if not (run_dir / "summary.json").is_file():
        raise AifbError(f"{bid}: no results/{bid}/summary.json (the run did not finish, or was "
                        f"not summarised: `aifb summarize results/{bid}`)")
    run, summary = read_json(run_dir / "run.json"), read_json(run_dir / "summary.json")
    if not isinstance(run, dict) or not isinstance(summary, dict):
        raise AifbError(f"{bid}: run.json or summary.json is not a JSON object (corrupt?)")
    return run, summary


def _subject(label: str, ids: list[str], root: Path) -> dict:
    loaded = [_load(b, root) for b in ids]
    spread = (repeat_spread_for(ids[0], root)
              if registry.entry_path(ids[0], root).is_file() else None)
    return {"label": label, "ids": ids, "runs": [r for r, _ in loaded],
            "summaries": [s for _, s in loaded], "spread": spread}


def sweep_levels(name: str, entries: list[dict]) -> dict:
    """{level: [IDs of its repeats]} of a sweep's newest version, levels in the order they were
    first measured; {} when no entry belongs to a sweep of that name."""
    mine = [e for e in entries if (e.get("sweep") or {}).get("name") == name]
    if not mine:
        return {}
    # the newest version: numbers by value (10 after 9), anything else after them by its text
    version = max((e["sweep"].get("version", 1) for e in mine),
                  key=lambda v: (not isinstance(v, (int, float)), v if isinstance(v, (int, float))
                                 else 0, str(v)))
    levels: dict = {}
    for e in sorted(mine, key=lambda e: e["benchmark_id"]):
        s = e["sweep"]
        if s.get("version", 1) != version:
            continue
        key = {"name": name, "version": version, "level": s.get("level"),
               "repeat": s.get("repeat", 0)}
        bid, _ = latest_point(key, entries)
        ids = levels.setdefault(repr(s.get("level")), (s.get("level"), []))[1]
        if bid and bid not in ids:
            ids.append(bid)
    return {level: sorted(ids) for level, ids in levels.values()}


def plan(names: list[str], root: Path) -> list[tuple[str, list[dict]]]:
    """[(file stem, subjects)]: one comparison, or one per level of two sweeps."""
    if len(names) < 1 or (len(names) == 1 and registry.ID_RE.match(names[0])):
        raise AifbError(f"compare: one run is nothing to compare; {USAGE}")
    if len(set(names)) != len(names):
        raise AifbError(f"compare: {', '.join(n for n in names if names.count(n) > 1)} given twice")
    if all(registry.ID_RE.match(n) for n in names):
        return [(f"compare_{'_'.join(names)}", [_subject(b, [b], root) for b in names])]
    entries = registry.all_entries(root)
    sweeps = {}
    for n in names:
        if registry.ID_RE.match(n):
            raise AifbError(f"compare: {' '.join(names)} mixes IDs and sweep names; {USAGE}")
        sweeps[n] = sweep_levels(n, entries)
        if not sweeps[n]:
            raise AifbError(f"compare: {n} is neither a benchmark ID (BM-YYYYMMDD-NNN) nor a "
                            "sweep with registered points")
    if len(names) == 1:
        levels = sweeps[names[0]]
        if len(levels) < 2:
            raise AifbError(f"compare: sweep {names[0]} has one level; nothing to compare")
        return [(f"compare_{names[0]}",
                 [_subject(f"{names[0]}@{lv}", ids, root) for lv, ids in levels.items()])]
    if len(names) > 2:
        raise AifbError(f"compare: {len(names)} sweep names; {USAGE}")
    a, b = names
    common = [lv for lv in sweeps[a] if lv in sweeps[b]]
    if not common:
        raise AifbError(f"compare: sweeps {a} and {b} share no level ({list(sweeps[a])} vs "
                        f"{list(sweeps[b])})")
    return [(f"compare_{a}_{b}_{_safe(lv)}",
             [_subject(f"{a}@{lv}", sweeps[a][lv], root), _subject(f"{b}@{lv}", sweeps[b][lv], root)])
            for lv in common]


def _safe(level) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", str(level))


def compare(names: list[str], root: Path) -> list[dict]:
    """Write every comparison `names` asks for; [{comparison, markdown, json, plots}]."""
    out = []
    for stem, subjects in plan(names, root):
        comparison = compare_subjects(subjects)
        runs = [(s["label"], root / "results" / s["ids"][0] / "requests.jsonl", s["runs"][0],
                 s["summaries"][0]) for s in subjects]
        paths = write_comparison_report(comparison, runs, root / "reports" / stem)
        out.append({"comparison": comparison, **paths})
    return out
