"""The report of one run: reports/<id>/report.md, report.json and plots/*.png.

Built from the run's files alone (run.json, requests.jsonl, summary.json when present), so a
report can be rebuilt for an old run or on another machine. Never imports the engine or clients.
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

from aifb.errors import AifbError
from aifb.jsonio import read_json, write_json, write_text
from aifb.analysis.compare import render_markdown as comparison_markdown
from aifb.analysis.metrics import extensions
from aifb.analysis.slo import parse_rule
from aifb.reporting.plots import write_plots
from aifb.analysis.summary import PERCENTILES, RECORDS, SUMMARY_VERSION, summarize
from aifb.units import format_number, format_percent, format_rate, format_seconds

REPORT_VERSION = 1
_PCT_LABEL = {"p50": "P50", "p90": "P90", "p95": "P95", "p99": "P99", "p999": "P99.9"}


# ----------------------------------------------------------------------------- notes

def notes_percentile(summary: dict, recipe: dict | None = None) -> str:
    """The percentile the notes show: the first latency-percentile SLO rule's (from the summary's
    verdicts, else the recipe's rules), else p95."""
    metrics = [r.get("metric") for r in (summary.get("slo") or {}).get("rules", [])]
    if not metrics and recipe:
        for text in recipe.get("slo") or []:
            try:
                metrics.append(parse_rule(text).metric)
            except (ValueError, TypeError):
                continue
    for metric in metrics:
        if metric in _PCT_LABEL:
            return metric
    return "p95"


def render_notes(summary: dict, *, with_status: bool = True, recipe: dict | None = None) -> str:
    """The dataset index's Notes cell, the seed's 'RPS, P95' in the units every report uses:
    '3.37 req/s, P95=350 ms'.

    Throughput and latency as aifb.units formats them everywhere; the percentile named by the
    recipe's first latency-percentile SLO rule (else P95; P99 when that rule names p99.9 and
    n < 10,000). A run that did not complete gets its status and reason appended.
    """
    rps = (summary.get("throughput") or {}).get("rps")
    stat = notes_percentile(summary, recipe)
    lat = summary.get("latency_s") or {}
    value = lat.get(stat)
    if stat == "p999" and value is None and lat.get("p99") is not None:
        stat, value = "p99", lat["p99"]  # p99.9 needs n >= 10,000: show p99 instead
    text = f"{format_rate(rps)}, {_PCT_LABEL[stat]}={format_seconds(value)}"
    status = summary.get("status")
    if with_status and status in ("failed", "partial"):
        reason = summary.get("reason")
        text += f" ({status}: {reason})" if reason else f" ({status})"
    return text


# ----------------------------------------------------------------------------- helpers

def _load_summary(run_dir: Path) -> dict:
    path = run_dir / "summary.json"
    if path.is_file():
        try:
            s = read_json(path)
        except (OSError, ValueError):
            s = None
        if (isinstance(s, dict) and s.get("summary_version") == SUMMARY_VERSION
                and "metric_definitions" in s):
            return s
    return summarize(run_dir)


def _md(value) -> str:
    """A value for a Markdown table cell."""
    if value is None or value == "":
        return "–"
    return str(value).replace("|", "\\|").replace("\n", " ")


_secs = format_seconds
_rate = format_rate


def _duration(value) -> str | None:
    if value is None:
        return None
    return f"{value} s" if isinstance(value, (int, float)) else str(value)


def _service_facts(run: dict, recipe: dict) -> dict:
    svc = dict(run.get("service") or {})
    rsvc = recipe.get("service") or {}
    keys = ("kind", "name", "version", "binary", "image", "endpoint", "managed", "host", "port",
            "pid", "job_id", "started_at", "ready_at", "stopped_at")
    out = {k: svc.get(k) for k in keys}
    out["kind"] = out["kind"] or rsvc.get("kind")
    for k in ("version", "binary", "image", "endpoint"):
        out[k] = out[k] or rsvc.get(k)
    out["exposure"] = (svc.get("extra") or {}).get("exposure")
    out["services"] = svc.get("services")   # a pipeline's, by name
    return out


def _pipeline_services(services: dict | None) -> str | None:
    """A pipeline's services in one cell: name: kind version (pid or Slurm job)."""
    if not services:
        return None
    return "; ".join(
        f"{name}: {s.get('kind')} {s.get('version') or ''}".rstrip()
        + (f" (job {s['job_id']})" if s.get("job_id") else f" (pid {s['pid']})" if s.get("pid") else "")
        for name, s in services.items())


def _load_text(load: dict, clients: dict, workload: dict | None = None) -> str:
    n_clients = load.get("clients", clients.get("count"))
    if load.get("rate") is not None:
        # multi-turn LLM workloads: the rate starts conversations, their turns follow
        turns = (workload or {}).get("turns")
        unit = "conversations/s" if turns not in (None, 1, [1, 1]) else "req/s"
        text = (f"open loop, {load['rate']} {unit} offered over {n_clients} client(s) "
                f"({load.get('arrival', 'poisson')} arrivals"
                + (f", at most {load['concurrency']} in flight per client" if load.get("concurrency") else "")
                + ")")
    else:
        conc = load.get("concurrency", clients.get("concurrency", 1))
        text = f"closed loop, {n_clients} client(s) × {conc} in flight"
    if load.get("duration") is not None:
        text += f"; duration {_duration(load['duration'])}"
    if load.get("requests") is not None:
        text += f"; {load['requests']} measured requests"
    text += f"; warmup {_duration(load.get('warmup')) or '0 s'}"
    if load.get("cooldown"):
        text += f"; cooldown {_duration(load['cooldown'])}"
    if load.get("timeout"):
        text += f"; timeout {_duration(load['timeout'])}"
    return text


def _headline(summary: dict) -> dict:
    lat = summary.get("latency_s") or {}
    req = summary.get("requests") or {}
    thr = summary.get("throughput") or {}
    h = {
        "rps": thr.get("rps"),
        "mib_s": thr.get("mib_s"),
        "window_s": summary.get("window_s"),
        "requests": req.get("total", 0),
        "ok": req.get("ok", 0),
        "errors": req.get("errors", 0),
        "error_rate": req.get("error_rate"),
        "errors_by_type": req.get("errors_by_type", {}),
        "latency_n": lat.get("n", 0),
        "latency_definition": lat.get("definition"),
        **{f"{k}_s": lat.get(k) for k, _ in PERCENTILES},
        "mean_s": lat.get("mean"),
        "max_s": lat.get("max"),
        "slo_passed": (summary.get("slo") or {}).get("passed"),
    }
    h["text"] = (f"{_rate(h['rps'])}; p50 {_secs(h['p50_s'])}, p95 {_secs(h['p95_s'])}, "
                 f"p99 {_secs(h['p99_s'])} (n={h['latency_n']:,}); {h['errors']:,} errors of "
                 f"{h['requests']:,} requests")
    return h


def _slo_word(passed) -> str:
    return {True: "✅ passed", False: "❌ failed"}.get(passed, "– (no rules)")


# ----------------------------------------------------------------------------- report

def _client_cpu(v: dict) -> str | None:
    """The busiest client process's share of a core, then the CPU of every client process per
    request (and per streamed token): validity.client_cpu_*."""
    parts = []
    if v.get("client_cpu_util") is not None:
        parts.append(f"{v['client_cpu_util']:.0%} of one core")
    for key, what in (("client_cpu_us_per_request", "request"), ("client_cpu_us_per_token",
                                                                 "streamed token")):
        if v.get(key) is not None:
            parts.append(f"{format_number(v[key])} µs per {what}")
    return "; ".join(parts) or None


def build_report(run_dir: Path, report_dir: Path, comparison: dict | None = None) -> dict:
    """Write report_dir/report.md, report.json and plots/*.png for the run in run_dir; return
    the report.json content. `comparison` (aifb.analysis.compare.compare_runs, for a rerun) adds a
    Reproducibility section."""
    run_dir, report_dir = Path(run_dir), Path(report_dir)
    if not (run_dir / "run.json").is_file():
        raise AifbError(f"{run_dir / 'run.json'} not found: cannot report on a run without it")
    run = read_json(run_dir / "run.json")
    summary = _load_summary(run_dir)
    recipe = run.get("recipe") or {}
    load = recipe.get("load") or {}
    clients = run.get("clients") or {}
    env = run.get("environment") or {}
    service = _service_facts(run, recipe)
    bid = run.get("benchmark_id") or summary.get("benchmark_id") or run_dir.name
    status = run.get("status") or summary.get("status")
    reason = run.get("reason")

    plots = write_plots(run_dir / RECORDS, run, summary, report_dir / "plots")
    headline = _headline(summary)
    validity = summary.get("validity") or {}
    slo = summary.get("slo") or {"rules": [], "passed": None}

    per_op = {}
    thr_ops = (summary.get("throughput") or {}).get("per_op") or {}
    lat_ops = summary.get("latency_by_op") or {}
    for op in sorted(set(thr_ops) | set(lat_ops)):
        t, la = thr_ops.get(op, {}), lat_ops.get(op, {})
        per_op[op] = {"rps": t.get("rps"), "ok": t.get("ok", 0), "errors": t.get("errors", 0),
                      "mib_s": t.get("mib_s"), "n": la.get("n", 0),
                      **{f"{k}_s": la.get(k) for k in ("mean", "p50", "p95", "p99", "p999", "max")}}

    where = {
        "target": run.get("target") or recipe.get("target"),
        "service_host": service.get("host"),
        "client_hosts": clients.get("hosts") or [],
        "client_job_ids": clients.get("job_ids") or [],
        "hostname": env.get("hostname"),
        "cpu_model": env.get("cpu_model"),
        "cpu_count": env.get("cpu_count"),
        "gpus": env.get("gpus") or [],
        "os": env.get("os"),
        "python": env.get("python"),
        "framework_version": env.get("framework_version"),
        "git_commit": run.get("git_commit"),
        "git_dirty": run.get("git_dirty"),
        "recipe_hash": run.get("recipe_hash"),
        "created_at": run.get("created_at"),
        "finished_at": run.get("finished_at"),
        "rerun_of": run.get("rerun_of"),
    }

    report = {
        "report_version": REPORT_VERSION,
        "benchmark_id": bid,
        "status": status,
        "reason": reason,
        "recipe_name": recipe.get("name"),
        "recipe": {"name": recipe.get("name"), "category": recipe.get("category"),
                   "purpose": recipe.get("purpose"), "hash": run.get("recipe_hash"),
                   "load": load, "workload": recipe.get("workload"), "slo": recipe.get("slo", [])},
        "service": service,
        "clients": {"count": clients.get("count", load.get("clients")),
                    "concurrency": clients.get("concurrency", load.get("concurrency")),
                    "command": clients.get("command"), "hosts": clients.get("hosts"),
                    "job_ids": clients.get("job_ids")},
        "load": _load_text(load, clients, recipe.get("workload")),
        "where": where,
        "headline": headline,
        "notes": render_notes(summary),
        "slo": slo,
        "validity": validity,
        "per_op": per_op,
        "plots": plots,
        "metric_definitions": summary.get("metric_definitions") or {},
        "reproducibility": comparison,
        "sections": [line for ext in extensions(run) if hasattr(ext, "markdown")
                     for line in ext.markdown(summary)],
        "generated_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }

    write_text(report_dir / "report.md", render_markdown(report, summary))
    write_json(report_dir / "report.json", report)
    return report


def render_markdown(report: dict, summary: dict) -> str:
    r = report
    svc, where, h = r["service"], r["where"], r["headline"]
    lines: list[str] = [f"# Benchmark {r['benchmark_id']}: {r['recipe_name'] or '(unnamed recipe)'}", ""]

    status = r["status"] or "unknown"
    if status == "completed":
        lines.append("**Status:** ✅ completed")
    else:
        icon = {"failed": "❌", "partial": "⚠️", "running": "⏳"}.get(status, "⚠️")
        lines.append(f"> {icon} **Status: {status.upper()}** — "
                     f"{r['reason'] or 'no reason recorded'}")
        if status in ("failed", "partial"):
            lines.append(">")
            lines.append("> The numbers below cover only the requests recorded before the run "
                         "stopped.")
    lines.append("")

    warnings = (r["validity"] or {}).get("warnings") or []
    if warnings:
        lines.append("> **⚠️ Validity warnings**")
        lines.append(">")
        lines.extend(f"> - {w}" for w in warnings)
        lines.append("")

    purpose = r["recipe"].get("purpose")
    lines += ["## What ran", ""]
    managed = svc.get("managed")
    mode = {True: "managed (deployed and torn down by this run)",
            False: "external (an already-running service; nothing deployed)"}.get(managed, "–")
    artefact = " ".join(x for x in (
        f"binary `{svc['binary']}`" if svc.get("binary") else "",
        f"image `{svc['image']}`" if svc.get("image") else "") if x) or "–"
    facts = [
        ("Recipe", f"{r['recipe_name']} ({r['recipe'].get('category') or '–'}"
                   + (f"; {purpose}" if purpose else "") + ")"),
        ("Service", f"{svc.get('kind') or '–'}" + (f" ({svc['name']})" if svc.get("name") else "")),
        *([("Services", _pipeline_services(svc["services"]))] if svc.get("services") else []),
        ("Version", svc.get("version")),
        ("Binary / image", artefact),
        ("Endpoint", f"`{svc['endpoint']}`" if svc.get("endpoint") else None),
        ("Deployment", mode),
        ("Exposure", svc.get("exposure")),
        ("Service job / pid", svc.get("job_id") or svc.get("pid")),
        ("Target", where.get("target")),
        ("Load", r["load"]),
        ("Clients", f"{r['clients'].get('count')} × concurrency {r['clients'].get('concurrency')}"),
        ("Client command", f"`{' '.join(r['clients']['command'])}`" if r["clients"].get("command") else None),
        ("Workload", f"`{json.dumps(r['recipe'].get('workload'), sort_keys=True)}`"
                     if r["recipe"].get("workload") else None),
        ("SLO", ", ".join(f"`{s}`" for s in r["recipe"].get("slo") or []) or None),
    ]
    lines += ["| | |", "|---|---|"] + [f"| {k} | {_md(v)} |" for k, v in facts] + [""]

    lines += ["## Where", ""]
    dirty = where.get("git_dirty")
    commit = where.get("git_commit")
    commit_text = (f"`{commit}`" + {True: " (dirty: uncommitted changes)", False: " (clean)"}
                   .get(dirty, "")) if commit else "unknown (not a git checkout)"
    gpus = ", ".join(f"{g.get('name')} (driver {g.get('driver')})" for g in where["gpus"]) or None
    cpu = where.get("cpu_model")
    if cpu and where.get("cpu_count"):
        cpu = f"{cpu} ({where['cpu_count']} CPUs)"
    wfacts = [
        ("Service host", where.get("service_host")),
        ("Client hosts", ", ".join(map(str, where["client_hosts"])) or None),
        ("Client jobs", ", ".join(map(str, where["client_job_ids"])) or None),
        ("Run host", where.get("hostname")),
        ("CPU", cpu),
        ("GPUs", gpus),
        ("OS", where.get("os")),
        ("Python", where.get("python")),
        ("aifb", where.get("framework_version")),
        ("Git commit", commit_text),
        ("Recipe hash", f"`{where['recipe_hash']}`" if where.get("recipe_hash") else None),
        ("Created", where.get("created_at")),
        ("Finished", where.get("finished_at")),
        ("Rerun of", where.get("rerun_of")),
    ]
    lines += ["| | |", "|---|---|"] + [f"| {k} | {_md(v)} |" for k, v in wfacts if v is not None]
    lines.append("")

    lines += ["## Headline", ""]
    window = h.get("window_s")
    err_types = ", ".join(f"{t}: {c:,}" for t, c in (h.get("errors_by_type") or {}).items())
    err_rate = f" ({format_percent(h['error_rate'])})" if h.get("error_rate") is not None else ""
    lat_def = h.get("latency_definition") or "t_end - t_start"
    hfacts = [
        ("Throughput", f"{_rate(h['rps'])} (ok requests / {window:.3f} s window)"
                       if window else _rate(h["rps"])),
        ("Data rate", format_rate(h["mib_s"], "MiB/s") if h.get("mib_s") else None),
        ("Latency p50 / p95 / p99", f"{_secs(h['p50_s'])} / {_secs(h['p95_s'])} / "
                                    f"{_secs(h['p99_s'])} (n = {h['latency_n']:,}, {lat_def})"),
        ("Latency p99.9", _secs(h["p999_s"]) if h.get("p999_s") is not None else
         "n/a (needs n ≥ 10,000)"),
        ("Latency mean / max", f"{_secs(h['mean_s'])} / {_secs(h['max_s'])}"),
        ("Requests", f"{h['requests']:,} in the measurement window: {h['ok']:,} ok, "
                     f"{h['errors']:,} errors{err_rate}" + (f" — {err_types}" if err_types else "")),
        ("SLO", _slo_word(h.get("slo_passed"))),
    ]
    st, sl = summary.get("service_time_s"), summary.get("sched_lag_s")
    if st:
        hfacts.append(("Service time p50 / p99", f"{_secs(st.get('p50'))} / {_secs(st.get('p99'))} "
                                                  "(t_end - t_start)"))
    if sl:
        hfacts.append(("Scheduling lag p50 / p99", f"{_secs(sl.get('p50'))} / {_secs(sl.get('p99'))} "
                                                    "(t_start - t_sched)"))
    tt = summary.get("ttfb_s")
    if tt:
        hfacts.append(("Time to first byte p50 / p99", f"{_secs(tt.get('p50'))} / {_secs(tt.get('p99'))}"))
    lines += ["| metric | value |", "|---|---|"]
    lines += [f"| {k} | {_md(v)} |" for k, v in hfacts if v is not None] + [""]

    lines += ["## SLO verdict", ""]
    rules = r["slo"].get("rules") or []
    if rules:
        lines += ["| rule | measured | passed |", "|---|---|---|"]
        for rule in rules:
            measured = rule.get("measured", "n/a")
            if rule.get("note"):
                measured += f" ({rule['note']})"
            if rule.get("source") and rule.get("value") is not None:
                measured += f" from {rule['source']}"
            lines.append(f"| `{_md(rule['rule'])}` | {_md(measured)} | "
                         f"{'✅ yes' if rule.get('passed') else '❌ no'} |")
        lines += ["", f"**Overall: {_slo_word(r['slo'].get('passed'))}** "
                      "(every rule must pass; a rule without a measured value fails). Latency "
                      "rules read the worse of the figures over every request (latency_all_s, a "
                      "failed request at its elapsed time) and over the ok ones (latency_s); "
                      "ttft_/e2el_ rules likewise (llm.*_all_s), measured from the scheduled "
                      "time in open loop.", ""]
    else:
        lines += ["The recipe states no SLO.", ""]

    v = r["validity"] or {}
    lines += ["## Validity", ""]
    vfacts = [
        ("Client CPU", _client_cpu(v)),
        ("Event-loop lag p99", _secs(v.get("loop_lag_p99_s")) if v.get("loop_lag_p99_s") is not None else None),
        ("Client saturated", {True: "⚠️ yes", False: "no"}.get(v.get("client_saturated"))),
        ("Offered rate", _rate(v.get("offered_rate")) if v.get("offered_rate") is not None else None),
        ("Scheduled rate (in the window)", _rate(v.get("scheduled_rate")) if v.get("scheduled_rate") is not None else None),
        ("Achieved rate", _rate(v.get("achieved_rate")) if v.get("achieved_rate") is not None else None),
        ("Rate shortfall", {True: "⚠️ yes (< 95% of scheduled)", False: "no"}.get(v.get("rate_shortfall"))),
        ("Stopped by", v.get("stopped_by")),
    ]
    vfacts = [(k, x) for k, x in vfacts if x is not None]
    if vfacts:
        lines += ["| check | value |", "|---|---|"] + [f"| {k} | {_md(x)} |" for k, x in vfacts] + [""]
    if warnings:
        lines += [f"- ⚠️ {w}" for w in warnings] + [""]
    else:
        lines += ["No validity warnings.", ""]

    lines += ["## Per operation", ""]
    if r["per_op"]:
        lines += ["| op | ok | errors | req/s | p50 | p95 | p99 | max |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for op, o in r["per_op"].items():
            lines.append(f"| {_md(op)} | {o['ok']:,} | {o['errors']:,} | {format_number(o['rps'])} | "
                         f"{_secs(o['p50_s'])} | {_secs(o['p95_s'])} | {_secs(o['p99_s'])} | "
                         f"{_secs(o['max_s'])} |")
        lines.append("")
    else:
        lines += ["No requests in the measurement window.", ""]

    lines += list(r.get("sections") or [])
    lines += ["## Plots", ""]
    for p in r["plots"]:
        lines += [f"![{p['title']}]({p['path']})", "", f"*{p['caption']}*", ""]

    if r.get("reproducibility"):
        lines += [comparison_markdown(r["reproducibility"]).rstrip(), ""]
    lines += ["## Metric definitions", ""]
    for name, sentence in (r["metric_definitions"] or {}).items():
        lines.append(f"- **{name}**: {sentence}")
    lines += ["", f"*Report generated {r['generated_at']} by aifb from results/"
                  f"{r['benchmark_id']}/ (run.json, requests.jsonl, summary.json).*", ""]
    return "\n".join(lines)
