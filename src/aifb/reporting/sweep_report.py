"""The sweep report: reports/sweep_<first>_<last>/{report.md, report.json, plots/*.png}.

Judges every level with aifb.analysis.sweep_verdict (its docstring says how), renders report.md,
writes report.json and draws the plots (aifb.reporting.sweep_plots). Reads files only
(run.json, summary.json), so it can be rebuilt anywhere.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from aifb.analysis.compare import cache_states_note
from aifb.analysis.slo import SloRule, parse_rules
from aifb.analysis.sweep_verdict import (LATENCY_KEYS, OPTIMUM_SENTENCE, STATUS_LABEL,
                                         choose_optimal, closest_level, headline, judge_level,
                                         judged_rules, level_str, level_summary, read_point,
                                         short_reason, verdict_rule_text)
from aifb.jsonio import read_json, write_json, write_text
from aifb.reporting import family_plots
from aifb.reporting.sweep_plots import PLOT_FILES, write_sweep_plots
from aifb.units import format_metric, format_number, format_seconds


def _pm(metric: str, ci: dict | None) -> str:
    """'mean ± half-width' (or the single value) of a mean_ci dict."""
    if not ci or ci.get("mean") is None:
        return "n/a"
    if ci.get("half_width") is None:
        return format_metric(metric, ci["mean"])
    half = ci["half_width"]
    if abs(half) <= 1e-9 * max(abs(ci["mean"]), 1e-300):  # identical repeats: float noise
        half = 0.0
    if metric == "rps":  # the table's column names the unit
        return f"{format_number(ci['mean'])} ± {format_number(half)}"
    return f"{format_metric(metric, ci['mean'])} ± {format_metric(metric, half)}"


def md_cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


# ----------------------------------------------------------------------------- markdown

def _slo_cell(level: dict, item: dict) -> str:
    if item.get("note") is None:
        return item["measured"]
    if level["n_used"] == 0:
        return "—"
    return f"n/a ({item['note']})"


def _render_md(report: dict, rules: list[SloRule], view: dict | None = None) -> str:
    """report.md; `view` (see build_sweep_report) lets another mode present the same report."""
    view = view or {}
    param = report["param"]
    levels = report["levels"]
    multi = any(l["n_runs"] > 1 for l in levels)
    out = [view.get("title") or f"# Sweep report: {report['sweep']}", ""]
    out += view.get("intro") or [report["headline"], ""]
    bits = []
    if report.get("service"):
        bits.append(f"**Service**: {report['service']}")
    bits.append(f"**Swept parameter**: `{param}` = {', '.join(level_str(l['level']) for l in levels)}")
    bits.append(f"**SLO**: {' and '.join(report['slo']) or 'none given'} "
                "(the sweep's SLO from config/config.yaml), within an error budget of "
                f"{report['error_budget'] * 100:g}% failed requests")
    bits.append(f"**Repeats per level**: {report['repeats']}")
    if report.get("purpose"):
        bits.append(f"**Purpose**: {report['purpose']}")
    out += [b + "  " for b in bits[:-1]] + [bits[-1], ""]

    out += [view.get("levels_heading") or "## Levels", ""]
    star = view["star"] if "star" in view else (report["optimal"] or {}).get("level")
    head = ["Level", "Runs", "Status", "Throughput (req/s)", "p50", "p95", "p99", "Error rate",
            *[r.text for r in rules], "Verdict"]
    out.append("| " + " | ".join(md_cell(h) for h in head) + " |")
    out.append("|" + "|".join("---" for _ in head) + "|")
    for l in levels:
        ci = l["ci"]
        if ci:
            thr = _pm("rps", ci["rps"])
            lats = [_pm(k, ci[k]) for k in LATENCY_KEYS]
            err = _pm("error_rate", ci["error_rate"])
        else:
            thr = format_number(l["throughput"])
            lats = [format_seconds(l["latency"][k]) for k in LATENCY_KEYS]
            err = format_metric("error_rate", l["error_rate"])
        name = level_str(l["level"])
        if star is not None and l["level"] == star:
            name = f"**{name}** ★"
        cells = [name, ", ".join(str(i) for i in l["ids"]), STATUS_LABEL.get(l["status"], l["status"]),
                 thr, *lats, err, *[_slo_cell(l, r) for r in l["slo"]], l["verdict_text"]]
        out.append("| " + " | ".join(md_cell(c) for c in cells) + " |")
    out.append("")
    if multi or report.get("confidence") is not None:
        out.append("Values are the mean ± the half-width of the 95% confidence interval over the "
                   "repeats; the SLO columns show the value each rule was checked against ("
                   + (f"the one-sided {report['confidence']:.0%} bound" if report.get("confidence")
                      is not None else "the mean") + ") with its interval.")
        out.append("")

    out += list(report.get("sections") or [])
    rule = report["verdict_rule"]
    if view.get("optimum_sentence"):
        rule = rule.replace(OPTIMUM_SENTENCE, view["optimum_sentence"])
    out += ["## How the verdict is made", "", rule, "",
            "Throughput = successful requests / measurement window (warmup excluded). The p50, "
            "p95 and p99 columns are over the pooled per-request samples of all clients, "
            "successful requests only; latency rules are checked on the worse of these and the "
            "same percentiles over all requests (summary.json latency_all_s: a failed request "
            "at its elapsed time). "
            "Error rate = failed / all requests in the window.", ""]

    if multi:
        out += ["## Runs", "", "| Level | Repeat | Benchmark ID | Status | Throughput (req/s) | p50 | "
                "p95 | p99 | Error rate |", "|---|---|---|---|---|---|---|---|---|"]
        for l in levels:
            for r in l["runs"]:
                cells = [level_str(l["level"]), r["repeat"], r["benchmark_id"],
                         STATUS_LABEL.get(r["status"], r["status"]),
                         format_number(r["rps"]),
                         *[format_seconds(r[k]) for k in LATENCY_KEYS],
                         format_metric("error_rate", r["error_rate"])]
                out.append("| " + " | ".join(md_cell(c) for c in cells) + " |")
        out.append("")

    out += list(view.get("before_plots") or [])
    out += ["## Plots", "",
            f"![Throughput vs {param}]({PLOT_FILES['throughput']})", "",
            f"![Latency percentiles vs {param}]({PLOT_FILES['latency']})", "",
            f"![Error rate vs {param}]({PLOT_FILES['error_rate']})", ""]

    notes = [report["cache_states_note"]] if report.get("cache_states_note") else []
    for p in report["points"]:
        if p["status"] != "completed":
            notes.append(f"{p['benchmark_id']} ({param} = {level_str(p['level'])}): "
                         f"{p['status']} — {short_reason(p['reason'], 200)}")
        for w in p["warnings"]:
            notes.append(f"{p['benchmark_id']}: {w}")
    if notes:
        out += ["## Warnings", ""] + [f"- {md_cell(n)}" for n in notes] + [""]
    out += ["## Runs and reports", ""]
    for p in report["points"]:
        out.append(f"- {p['benchmark_id']} ({param} = {level_str(p['level'])}, repeat "
                   f"{p['repeat']}): `results/{p['benchmark_id']}/`, "
                   f"`reports/{p['benchmark_id']}/report.md`")
    out += ["", f"*Generated {report['generated_at']} from the runs' summary.json files.*", ""]
    return "\n".join(out)


# ----------------------------------------------------------------------------- entry point

def build_sweep_report(sweep: dict, run_dirs: list[Path], out_dir: Path, *,
                       view: dict | None = None) -> dict:
    """Judge every level of `sweep` (Sweep.describe()) against its SLO and write
    out_dir/report.md, out_dir/report.json and the three plots. Returns the report.json dict.

    `run_dirs` are the results/<id> directories of the sweep's points, in point order; they are
    matched to points by benchmark ID (by position when the names are not IDs).

    `view` presents the same judgement for another mode (the capacity search): `title`,
    `intro` (lines instead of the headline), `headline` (report.json's; the sweep's own is kept
    as `sweep_headline`), `star` (the level marked ★ instead of the optimum; None: none),
    `levels_heading`, `optimum_sentence` (instead of OPTIMUM_SENTENCE in the verdict rule),
    `before_plots` (lines) and `extra` (more report.json keys).
    """
    view = view or {}
    out_dir = Path(out_dir)
    slo_rules = parse_rules(sweep.get("slo"))
    rules, confidence = judged_rules(sweep)
    budget = rules[-1].threshold
    points = list(sweep.get("points") or [])
    by_name = {Path(d).name: Path(d) for d in run_dirs}
    records = []
    for i, pt in enumerate(points):
        d = by_name.get(pt.get("benchmark_id") or "")
        if d is None and i < len(run_dirs) and not pt.get("benchmark_id"):
            d = Path(run_dirs[i])
        records.append(read_point(pt, d, rules))

    order = list(sweep.get("levels") or [])
    for r in records:
        if r["level"] not in order:
            order.append(r["level"])
    levels = [judge_level(lv, [r for r in records if r["level"] == lv], rules, confidence)
              for lv in order
              if any(r["level"] == lv for r in records)]
    optimal = choose_optimal(levels)
    closest = closest_level(levels) if optimal is None else None
    multi = any(l["n_runs"] > 1 for l in levels)
    param = sweep.get("param", "level")
    report = {
        "sweep": sweep.get("name"),
        "param": param,
        "version": sweep.get("version"),
        "repeats": sweep.get("repeats", 1),
        "service": sweep.get("service"),
        "purpose": sweep.get("purpose"),
        "generated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "headline": headline(param, levels, optimal, closest, slo_rules),
        "slo": [r.text for r in slo_rules],
        "error_budget": budget,
        "confidence": confidence,
        "verdict_rule": verdict_rule_text(multi, budget, confidence),
        "levels": levels,
        "optimal": level_summary(optimal),
        "closest": level_summary(closest),
        "plots": dict(PLOT_FILES),
        "points": [{k: v for k, v in r.items() if k != "rule_values"} for r in records],
        # LLM points that measured different prefix-cache states are not comparable
        "cache_states_note": cache_states_note({r["benchmark_id"]: r["cache_state"]
                                                for r in records}),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    report["sections"], report["extra_plots"] = _extension_sections(records, by_name, param, out_dir)
    md = _render_md(report, rules, view)
    if view.get("headline"):
        report["sweep_headline"], report["headline"] = report["headline"], view["headline"]
    report.update(view.get("extra") or {})
    write_json(out_dir / "report.json", report)
    write_text(out_dir / "report.md", md)
    write_sweep_plots(out_dir, param, sweep.get("name") or "sweep", levels, rules, optimal)
    return report


def _extension_sections(records: list[dict], by_name: dict, param: str, out_dir: Path):
    """Service-specific sweep sections (LLM tokens/s and TTFT/TPOT, vector recall vs QPS) from
    the aifb.reporting.family_plots modules of the metric families that apply to the sweep's runs."""
    points, first_run = [], None
    for r in records:
        d = by_name.get(r.get("benchmark_id") or "")
        if d is None or not (d / "summary.json").is_file():
            continue
        if first_run is None and (d / "run.json").is_file():
            first_run = read_json(d / "run.json")
        points.append({"level": r["level"], "benchmark_id": r["benchmark_id"],
                       "summary": read_json(d / "summary.json")})
    lines, plots = [], []
    for family in family_plots.plotters(first_run or {}):
        if hasattr(family, "sweep_section"):
            section = family.sweep_section(points, param, out_dir)
            lines += section.get("lines") or []
            plots += section.get("plots") or []
    return lines, plots
