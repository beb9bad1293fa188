"""Several runs side by side (`aifb compare`): their headline metrics with deltas against the
first, whether each difference is beyond the measured noise, and what differs between them
(recipe, environment, LLM cache state).

A subject is one column: a benchmark ID, or a sweep level with its repeats (its value is then
the mean over the repeats' completed runs). The noise of a difference is known only where a
subject was measured with repeats (a sweep level with `repeats:`): its relative spread gives the
tolerance of aifb.analysis.compare.tolerances (the one rerun rule: a 95 % prediction interval
for the difference of two runs, conservative for means of repeats). Without repeats the
comparison says "no repeats: noise not known" rather than guessing a default.

Files only, no workflow: the caller (aifb.cli.compare) finds the runs and their spreads.
"""

from __future__ import annotations

from aifb.analysis.compare import DEFAULT_TOLERANCE, get_path, tolerances
from aifb.stats import mean_ci

# (key, path in summary.json, label); key is also the aifb.units.format_metric name.
HEADLINE = (
    ("rps", ("throughput", "rps"), "throughput"),
    ("p50", ("latency_s", "p50"), "latency p50"),
    ("p95", ("latency_s", "p95"), "latency p95"),
    ("p99", ("latency_s", "p99"), "latency p99"),
    ("error_rate", ("requests", "error_rate"), "error rate"),
    ("ttft_p50", ("llm", "ttft_s", "p50"), "TTFT p50"),
    ("ttft_p99", ("llm", "ttft_s", "p99"), "TTFT p99"),
    ("tpot_p50", ("llm", "tpot_s", "p50"), "TPOT p50"),
    ("tpot_p99", ("llm", "tpot_s", "p99"), "TPOT p99"),
)
NO_REPEATS = "no repeats: noise not known"
NOT_MEASURED = "noise not measured for this metric"
# run.json provenance compared between the runs: (label, path)
ENVIRONMENT = (
    ("aifb version", ("environment", "framework_version")),
    ("git commit", ("git_commit",)),
    ("git dirty", ("git_dirty",)),
    ("host", ("environment", "hostname")),
    ("CPU", ("environment", "cpu_model")),
    ("CPU count", ("environment", "cpu_count")),
    ("GPU", ("environment", "gpus")),
    ("python", ("environment", "python")),
    ("service version", ("service", "version")),
    ("target", ("target",)),
)


def flatten(node, prefix: str = "") -> dict:
    """{"load.clients": 4, ...}: a nested dict's leaves by dotted path (lists are leaves)."""
    if not isinstance(node, dict):
        return {prefix: node}
    out = {}
    for key, value in node.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            out.update(flatten(value, path))
        else:
            out[path] = value
    return out


def differing(values: list[dict]) -> list[dict]:
    """[{key, values: [...]}] for the keys whose values are not all equal (missing = None)."""
    keys = sorted({k for v in values for k in v})
    return [{"key": k, "values": [v.get(k) for v in values]}
            for k in keys if len({repr(v.get(k)) for v in values}) > 1]


def subject_value(summaries: list[dict], path: tuple[str, ...]) -> float | None:
    """The metric of one subject: the run's value, or the mean over its repeats."""
    values = [get_path(s, path) for s in summaries]
    values = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return mean_ci(values)["mean"] if values else None


def _noise(base: dict, other: dict) -> tuple[dict | None, str]:
    """The tolerances for a difference between two subjects and where they come from: the
    spread of the baseline's repeats, else of the other's; (None, NO_REPEATS) without repeats."""
    for s in (base, other):
        spread = s.get("spread")
        if spread and (spread.get("n") or 0) >= 2:
            tol, source = tolerances(repeat_spread=spread)
            return tol, f"{s['label']}: {source}"
    return None, NO_REPEATS


def compare_subjects(subjects: list[dict]) -> dict:
    """subjects: [{label, ids, summaries: [summary.json], runs: [run.json], spread: {n, rps, p50,
    p99} | None}], the first the baseline. Returns {subjects, metrics, noise, recipe_diff,
    environment_diff, cache, notes}."""
    if len(subjects) < 2:
        raise ValueError(f"a comparison needs at least 2 runs, got {len(subjects)}")
    base = subjects[0]
    noise = []
    tols = [None]
    for other in subjects[1:]:
        tol, source = _noise(base, other)
        tols.append(tol)
        noise.append({"label": other["label"], "source": source})
    metrics = []
    for key, path, label in HEADLINE:
        values = [subject_value(s["summaries"], path) for s in subjects]
        if all(v is None for v in values):
            continue  # a family figure none of the runs has
        cells = []
        for i, (s, v) in enumerate(zip(subjects, values)):
            cell = {"label": s["label"], "value": v, "rel_delta": None, "tolerance": None,
                    "beyond_noise": None, "noise": None}
            if i:
                b = values[0]
                if v is not None and b is not None and b != 0:
                    cell["rel_delta"] = (v - b) / abs(b)
                elif v is not None and b == v:
                    cell["rel_delta"] = 0.0
                if tols[i] is None:
                    cell["noise"] = NO_REPEATS
                elif key not in DEFAULT_TOLERANCE:
                    cell["noise"] = NOT_MEASURED
                elif cell["rel_delta"] is not None:
                    cell["tolerance"] = tols[i][key]
                    cell["beyond_noise"] = abs(cell["rel_delta"]) > tols[i][key] + 1e-12
                    cell["noise"] = "beyond noise" if cell["beyond_noise"] else "within noise"
            cells.append(cell)
        metrics.append({"metric": key, "label": label, "cells": cells})

    first_runs = [(s["runs"] or [{}])[0] for s in subjects]
    recipes = [flatten(r.get("recipe") or {}) for r in first_runs]
    envs = [{label: get_path(r, path) for label, path in ENVIRONMENT} for r in first_runs]
    caches = [get_path((s["summaries"] or [{}])[0], ("llm_workload", "cache", "state"))
              for s in subjects]
    notes = []
    if any(caches) and len(set(caches)) > 1:
        notes.append("the runs measured different prefix-cache states (workload.cache: "
                     + ", ".join(f"{s['label']} {c or 'unknown'}" for s, c in zip(subjects, caches))
                     + "): their latencies measure different things")
    for s in subjects:
        bad = [r.get("benchmark_id") for r in s["summaries"] if r.get("status") != "completed"]
        if bad:
            notes.append(f"{s['label']}: {', '.join(map(str, bad))} did not complete; its figures "
                         "are partial")
    return {
        "subjects": [{"label": s["label"], "ids": s["ids"], "n": len(s["summaries"]),
                      "spread": s.get("spread")} for s in subjects],
        "baseline": base["label"],
        "metrics": metrics,
        "noise": noise,
        "recipe_diff": differing(recipes),
        "environment_diff": differing(envs),
        "cache": caches if any(caches) else None,
        "notes": notes,
    }
