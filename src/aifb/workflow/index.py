"""The dataset index: the generated twin of the seed document (reports/dataset_index.md) and its
machine-readable form (reports/index.json), rebuilt from the files on disk.

Reads every registry entry (results/registry/<id>.json), each run's results/<id>/run.json and
summary.json, rerun comparisons (reports/<id>/comparison.json) and sweep reports
(reports/sweep_<first>_<last>/report.json). Knows files, not services: it can be rebuilt
anywhere the files are. The Markdown is drawn by aifb.reporting.index_page.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

from aifb.analysis.compare import cache_state, cache_states_note
from aifb.workflow import registry
from aifb.jsonio import write_json, write_text
from aifb.kinds import all_kinds, kind_info
from aifb.reporting.index_page import render_markdown
from aifb.reporting.report import notes_percentile, render_notes
from aifb.reporting.site import build_site

BUNDLE_FIELDS = [
    ("benchmark_id", "Unique identifier"),
    ("created_at", "Timestamp"),
    ("git_commit", "Code version"),
    ("recipe_hash", "Recipe fingerprint"),
    ("recipe", "Full recipe embedded"),
    ("target", "Cluster name"),
    ("service", "Service deployment details (name, job_id, image, port, etc.)"),
    ("clients", "Client deployment details (job_id, command, etc.)"),
    ("environment", "Framework version"),
]
REASON_LIMIT = 60


# ----------------------------------------------------------------------------- small helpers

def _read(path: Path):
    """A JSON file's content, or None if it is missing, unreadable or half-written."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def _kind_category(kind) -> str | None:
    """The index category of a service kind (aifb.kinds), None for an unknown kind."""
    info = kind_info(kind)
    return info.category if info else None


def _id_key(bid: str):
    m = registry.ID_RE.match(bid)
    return (m.group(1), int(m.group(2)), bid) if m else ("", 0, bid)


def shorten(text: str | None, limit: int = REASON_LIMIT) -> str:
    """First line of a reason, at most `limit` characters (an ellipsis marks a cut)."""
    if not text or not str(text).strip():
        return "no reason recorded"
    line = str(text).strip().splitlines()[0].strip()
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


def performance_note(summary: dict | None, recipe: dict) -> str:
    """'3.37 req/s, P95=350 ms' from a summary (one convention with report.json's notes)."""
    return render_notes(summary, with_status=False, recipe=recipe) if summary else ""


def _present(value) -> bool:
    return value is not None and value != "" and value != {} and value != []


# ----------------------------------------------------------------------------- runs

def _run_row(bid: str, entry: dict | None, run: dict | None, summary: dict | None,
             comparison: dict | None) -> dict:
    recipe = (run or {}).get("recipe") or (entry or {}).get("recipe") or {}
    recipe_path = (run or {}).get("recipe_path") or (entry or {}).get("recipe_path")
    kind = ((run or {}).get("service") or {}).get("kind") or (recipe.get("service") or {}).get("kind")
    category = recipe.get("category") or _kind_category(kind)
    if run is None:
        status = "registered"
        date = ((entry or {}).get("registered_at") or "")[:10]
    else:
        status = run.get("status") or "running"
        date = (run.get("created_at") or (entry or {}).get("registered_at") or "")[:10]
    reason = (run or {}).get("reason")
    rerun_of = (run or {}).get("rerun_of") or (entry or {}).get("rerun_of")

    if status == "completed":
        notes = performance_note(summary, recipe) or "no summary.json yet"
    elif status == "failed":
        notes = shorten(reason)
    elif status == "partial":
        perf = performance_note(summary, recipe)
        notes = f"{perf}; {shorten(reason)}" if perf else shorten(reason)
    elif status == "running":
        notes = "running"
    elif status == "registered":
        notes = "registered, not run yet"
    else:
        notes = shorten(reason) if reason else status
    reproduced = None
    if rerun_of:
        verdict = (comparison or {}).get("verdict")
        if verdict == "reproduced":
            reproduced = True
            extra = f"rerun of {rerun_of}; reproduced ✓"
        elif verdict == "not reproduced":
            reproduced = False
            extra = f"rerun of {rerun_of}; reproduced ✗"
        elif verdict:
            extra = f"rerun of {rerun_of}; {verdict}"
        else:
            extra = f"rerun of {rerun_of}"
        notes = f"{notes}; {extra}" if notes else extra

    lat = (summary or {}).get("latency_s") or {}
    metric = notes_percentile(summary or {}, recipe)
    return {
        "benchmark_id": bid,
        "recipe": os.path.basename(recipe_path) if recipe_path else (recipe.get("name") or "—"),
        "recipe_path": recipe_path,
        "recipe_name": recipe.get("name"),
        "date": date or "—",
        "created_at": (run or {}).get("created_at"),
        "purpose": recipe.get("purpose") or "—",
        "category": category,
        "service_kind": kind,
        "status": status,
        "reason": reason,
        "concurrency": (recipe.get("load") or {}).get("clients"),  # the seed's name for clients
        "concurrency_per_client": (recipe.get("load") or {}).get("concurrency", 1),
        "rps": ((summary or {}).get("throughput") or {}).get("rps"),
        "latency_metric": metric,
        "latency_s": lat.get(metric) if lat.get("n") else None,
        "error_rate": ((summary or {}).get("requests") or {}).get("error_rate"),
        "slo_passed": ((summary or {}).get("slo") or {}).get("passed"),
        "has_summary": summary is not None,
        "rerun_of": rerun_of,
        "reproduced": reproduced,
        "comparison": (comparison or {}).get("line"),
        "sweep": (run or {}).get("sweep") or (entry or {}).get("sweep"),
        "cache_state": cache_state(summary, run),     # LLM runs: workload.cache measured
        "cache_states_note": None,                    # a rerun whose original had another
        "notes": notes,
        "bundle_missing": ([f for f, _ in BUNDLE_FIELDS if not _present(run.get(f))]
                           if run is not None else None),
    }


def collect_runs(root: Path) -> list[dict]:
    """One row per benchmark: every registry entry, plus any results/<id>/ with a run.json that
    has no registry entry (e.g. copied from another machine). Sorted by ID."""
    root = Path(root)
    entries = {e["benchmark_id"]: e for e in registry.all_entries(root) if "benchmark_id" in e}
    results = root / "results"
    ids = set(entries)
    if results.is_dir():
        with os.scandir(results) as it:
            for d in it:
                if registry.ID_RE.match(d.name) and os.path.isfile(os.path.join(d.path, "run.json")):
                    ids.add(d.name)
    rows = []
    for bid in sorted(ids, key=_id_key):
        run_dir = results / bid
        run = _read(run_dir / "run.json")
        summary = _read(run_dir / "summary.json") if run is not None else None
        entry = entries.get(bid)
        rerun_of = (run or {}).get("rerun_of") or (entry or {}).get("rerun_of")
        comparison = _read(root / "reports" / bid / "comparison.json") if rerun_of else None
        rows.append(_run_row(bid, entry, run if isinstance(run, dict) else None,
                             summary if isinstance(summary, dict) else None,
                             comparison if isinstance(comparison, dict) else None))
    by_id = {r["benchmark_id"]: r for r in rows}
    for r in rows:   # a rerun that measured another prefix-cache state than its original
        orig = by_id.get(r["rerun_of"]) if r["rerun_of"] else None
        note = orig and cache_states_note({orig["benchmark_id"]: orig["cache_state"],
                                           r["benchmark_id"]: r["cache_state"]})
        if note:
            r["cache_states_note"] = note
            r["notes"] += (f"; ⚠️ prefix cache {r['cache_state']}, its original's "
                           f"{orig['cache_state']}: not comparable")
    return rows


# ----------------------------------------------------------------------------- sweeps

def _sweep_category(sweep: dict, root: Path, runs_by_id: dict) -> str | None:
    for p in sweep.get("points") or []:
        row = runs_by_id.get(p.get("benchmark_id"))
        if row and row.get("category"):
            return row["category"]
    for p in sweep.get("points") or []:
        path = p.get("recipe_path")
        if path and (root / path).is_file():
            try:
                import yaml
                recipe = yaml.safe_load((root / path).read_text(encoding="utf-8")) or {}
            except Exception:  # an unreadable recipe only costs the category
                continue
            cat = recipe.get("category") or _kind_category((recipe.get("service") or {}).get("kind"))
            if cat:
                return cat
    service = (sweep.get("service") or "").lower()
    for k in all_kinds():
        if service.startswith(k.display_name.lower()) or service.startswith(k.kind):
            return k.category
    return None


def _sweep_row(sweep: dict, root: Path, runs_by_id: dict) -> dict:
    points = sweep.get("points") or []
    ids = [p.get("benchmark_id") for p in points]
    report_dir = sweep.get("report_dir")
    statuses = [runs_by_id[i]["status"] if i in runs_by_id else "registered" for i in ids if i]
    statuses += ["registered"] * sum(1 for i in ids if not i)
    report = _read(root / report_dir / "report.json") if report_dir else None
    optimal = "—"
    optimal_level = None
    if not report_dir and sweep.get("skip_reason"):
        status_text = f"❌ Skipped: {sweep['skip_reason']}"
        status = "skipped"
    elif not report_dir:  # runnable, never built: no IDs are registered for it yet
        status_text, status = f"⏳ Not run (`aifb sweep {sweep.get('name')}`)", "not run"
    elif statuses and all(s == "completed" for s in statuses):
        status_text, status = "✅ Complete", "complete"
    elif all(s == "registered" for s in statuses):
        status_text, status = "⏳ Not run", "not run"
    elif "running" in statuses:
        status_text, status = "🏃 Running", "running"
    elif all(s == "failed" for s in statuses):
        status_text, status = "❌ Failed", "failed"
    else:
        done = sum(s == "completed" for s in statuses)
        status_text, status = f"⚠️ Partial ({done}/{len(statuses)} complete)", "partial"
    cache_note = cache_states_note({i: runs_by_id[i]["cache_state"] for i in ids
                                    if i in runs_by_id})
    if cache_note:
        status_text += " ⚠️ mixed prefix-cache states"
    if isinstance(report, dict) and report_dir:
        opt = report.get("optimal")
        if opt:
            optimal_level = opt.get("level")
            optimal = str(optimal_level)
        elif report.get("levels") is not None:
            optimal = "none met the SLO"
    return {
        "name": sweep.get("name"),
        "service": sweep.get("service") or "—",
        "category": _sweep_category(sweep, root, runs_by_id),
        "param": sweep.get("param"),
        "levels": list(sweep.get("levels") or []),
        "repeats": sweep.get("repeats", 1),
        "purpose": sweep.get("purpose"),
        "slo": list(sweep.get("slo") or []),
        "report_dir": f"{report_dir}/" if report_dir else None,
        "report_built": isinstance(report, dict),
        "status": status,
        "status_text": status_text,
        "skip_reason": sweep.get("skip_reason"),
        "optimal": optimal_level,
        "optimal_text": optimal,
        "ids": [i for i in ids if i],
        "cache_states_note": cache_note,
    }


# ----------------------------------------------------------------------------- markdown

def _bundle_summary(runs: list[dict]) -> list[dict]:
    with_run = [r for r in runs if r["bundle_missing"] is not None]
    out = []
    for field, desc in BUNDLE_FIELDS:
        lacking = [r["benchmark_id"] for r in with_run if field in r["bundle_missing"]]
        out.append({"field": field, "description": desc, "checked": len(with_run),
                    "missing": lacking})
    return out


# ----------------------------------------------------------------------------- entry point

def write_index(root: Path, sweeps: list[dict], md_path: Path, json_path: Path,
                *, site: Path | None = None, now: dt.datetime | None = None) -> dict:
    """Build the dataset index from the files under `root` and write it as markdown (the seed's
    structure) and JSON, and, given `site` (its index.html), the offline HTML site
    (aifb.reporting.site) beside it. `sweeps` are Sweep.describe() dicts plus report_dir /
    skip_reason. Returns the index.json content."""
    root = Path(root)
    now = now or dt.datetime.now(dt.timezone.utc)
    runs = collect_runs(root)
    runs_by_id = {r["benchmark_id"]: r for r in runs}
    sweep_rows = [_sweep_row(s, root, runs_by_id) for s in sweeps]
    bundle = _bundle_summary(runs)
    updated = now.strftime("%Y-%m-%d")
    md = render_markdown(runs, sweep_rows, bundle, updated)
    counts = {}
    for r in runs:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    index = {
        "generated_at": now.isoformat(timespec="seconds"),
        "counts": counts,
        "runs": runs,
        "sweeps": sweep_rows,
        "bundle": bundle,
    }
    write_text(md_path, md)
    write_json(json_path, index)
    if site is not None:
        build_site(root, index, Path(site).parent)
    return index
