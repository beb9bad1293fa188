"""The offline static site of the dataset: reports/site/index.html (every run in a table to
sort, filter and page through), sweeps/<sweep dir>.html (interactive charts of a sweep) and
runs/<id>.html (a run's interactive plots and its run.json), with assets/ holding the one copy
of the Vega, Vega-Lite and vega-embed JavaScript (vl-convert's bundle) and the site's own
CSS/JS (package data in site_files/).

Nothing is fetched: data is inline JSON or a <script src> next to it (a file:// page may not
fetch()), every address is relative, so the site opens from file:// or any static server.
aifb.workflow.index gathers the rows and calls build_site(); this module reads only the
report files it links (report.json, run.json, the charts' .vl.js scripts).
"""

from __future__ import annotations

import html
import importlib.resources
import json
import os
from pathlib import Path

import vl_convert as vlc

from aifb.jsonio import write_text
from aifb.reporting import site_charts
from aifb.reporting.plots import chart_script_path
from aifb.units import format_metric, format_percent, format_rate

ASSET_FILES = ("site.css", "index.js", "charts.js")
VEGA_FILE = "vega.js"
# The index table's columns: key in each run record, label, numeric (right-aligned). A key
# with a `<key>_t` twin sorts on the number and shows the text.
COLUMNS = [("id", "Benchmark ID", False), ("category", "Category", False),
           ("service", "Service", False), ("recipe", "Recipe", False), ("date", "Date", False),
           ("status", "Status", False), ("clients", "Clients", True),
           ("concurrency", "Conc./client", True), ("rps", "Throughput", True),
           ("latency", "Latency", True), ("errors", "Errors", True), ("slo", "SLO", False),
           ("sweep", "Sweep", False), ("report", "Report", False), ("notes", "Notes", False)]


# ----------------------------------------------------------------------------- HTML pieces

def esc(value) -> str:
    return html.escape("" if value is None else str(value))


def json_script(element_id: str, data) -> str:
    """Data inline in a page: '<' escaped so no string can close the <script> element."""
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False).replace("<", "\\u003c")
    return f'<script type="application/json" id="{esc(element_id)}">{text}</script>'


def page(title: str, body: str, *, up: str, scripts: tuple[str, ...] = ()) -> str:
    """A whole page; `up` is the way back to the site's root ('' or '../')."""
    tags = "".join(f'<script src="{esc(s)}"></script>' for s in scripts)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title>"
            f'<link rel="stylesheet" href="{up}assets/site.css"></head>\n<body>'
            f'<header><a href="{up}index.html">All runs</a>'
            f'<a href="{up}index.html#sweeps">Sweeps</a>'
            f'<a href="{up}index.html#comparisons">Comparisons</a></header>\n'
            f"{body}\n{tags}</body></html>\n")


def rel(target: Path, start: Path) -> str:
    """A relative address from the folder `start` to `target` (forward slashes)."""
    return Path(os.path.relpath(target, start)).as_posix()


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A plain table; the cells are HTML already."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# ----------------------------------------------------------------------------- the index

def sweep_name(run_row: dict) -> str | None:
    sweep = run_row.get("sweep")
    return (sweep.get("name") if isinstance(sweep, dict) else sweep) or None


def run_record(row: dict, sweep_pages: dict[str, str], report_href: str | None) -> dict:
    """One run as the index table holds it: raw values to sort and filter on, `_t` texts
    formatted once by aifb.units."""
    metric = row.get("latency_metric") or "p95"
    slo = row.get("slo_passed")
    return {
        "id": row["benchmark_id"], "page": f"runs/{row['benchmark_id']}.html",
        "category": row.get("category") or "", "service": row.get("service_kind") or "",
        "recipe": row.get("recipe") or "", "date": row.get("date") if row.get("date") != "—" else "",
        "status": row.get("status") or "",
        "clients": row.get("concurrency"), "concurrency": row.get("concurrency_per_client"),
        "rps": row.get("rps"), "rps_t": format_rate(row["rps"]) if row.get("rps") is not None else None,
        "latency": row.get("latency_s"),
        "latency_t": (f"{metric.upper()} {format_metric(metric, row['latency_s'])}"
                      if row.get("latency_s") is not None else None),
        "errors": row.get("error_rate"),
        "errors_t": format_percent(row["error_rate"]) if row.get("error_rate") is not None else None,
        "slo": {True: "pass", False: "fail"}.get(slo, ""),
        "slo_t": {True: "✅ met", False: "❌ missed"}.get(slo, ""),
        "sweep": sweep_name(row) or "", "sweep_page": sweep_pages.get(row["benchmark_id"]),
        "report": report_href, "notes": row.get("notes") or "",
    }


def index_html(records: list[dict], sweeps: list[dict], comparisons: list[dict],
               generated_at: str) -> str:
    cols = [{"key": k, "label": label, "num": num} for k, label, num in COLUMNS]
    filters = "".join(
        f'<label>{esc(k)}<select id="f-{k}"><option value="">all</option></select></label>'
        for k in ("category", "service", "status", "sweep"))
    sweep_rows = [[f'<a href="{esc(s["page"])}">{esc(s["name"])}</a>' if s.get("page")
                   else esc(s["name"]), esc(s["service"]), esc(s.get("param")),
                   esc(", ".join(str(v) for v in s.get("levels") or [])),
                   esc(s.get("status_text")), esc(s.get("optimal_text"))] for s in sweeps]
    comp_rows = [[f'<a href="{esc(c["href"])}">{esc(c["name"])}</a>',
                  esc(" vs ".join(c["labels"])), esc(c.get("baseline"))] for c in comparisons]
    body = (
        f"<h1>AI Factory Bench: {len(records):,} runs</h1>"
        f'<p class="muted">Built {esc(generated_at)} by <code>aifb index</code> from the files on '
        "disk; the same rows as <code>dataset_index.md</code> and <code>index.json</code>. "
        "Click a column to sort; the filters are kept in the address.</p>"
        f'<div class="filters">{filters}'
        '<label>from date<input type="date" id="f-from"></label>'
        '<label>to date<input type="date" id="f-to"></label>'
        '<label>ID, recipe or notes<input type="search" id="f-q"></label>'
        '<button id="f-reset" type="button">reset</button></div>'
        '<div class="pager"><button id="prev" type="button">◀ previous</button>'
        '<button id="next" type="button">next ▶</button><span id="page-info"></span></div>'
        '<table id="runs"><thead id="runs-head"></thead><tbody id="runs-body"></tbody></table>'
        '<h2 id="sweeps">Sweeps</h2>'
        + (table(["Sweep", "Service", "Parameter", "Levels", "Status", "Optimal"], sweep_rows)
           if sweep_rows else '<p class="muted">No sweep configured.</p>')
        + '<h2 id="comparisons">Comparisons (<code>aifb compare</code>)</h2>'
        + (table(["Comparison", "Subjects", "Baseline"], comp_rows) if comp_rows
           else '<p class="muted">None yet: <code>aifb compare A B</code> writes '
                "reports/compare_A_B.md and .json.</p>")
        + json_script("aifb-runs", {"columns": cols, "runs": records}))
    return page("AI Factory Bench runs", body, up="", scripts=("assets/index.js",))


# ----------------------------------------------------------------------------- a sweep

def sweep_html(sweep: dict, report: dict | None, report_href: str) -> str:
    name = sweep["name"]
    parts = [f"<h1>Sweep {esc(name)}</h1>",
             f"<p>{esc(sweep.get('purpose') or '')}</p>",
             f'<dl class="facts"><dt>service</dt><dd>{esc(sweep.get("service"))}</dd>'
             f'<dt>parameter</dt><dd>{esc(sweep.get("param"))}</dd>'
             f'<dt>SLO</dt><dd>{esc(", ".join(sweep.get("slo") or []) or "none")}</dd>'
             f'<dt>status</dt><dd>{esc(sweep.get("status_text"))}</dd>'
             f'<dt>optimal</dt><dd>{esc(sweep.get("optimal_text"))}</dd>'
             f'<dt>report</dt><dd><a href="{esc(report_href)}">report.md</a></dd></dl>']
    if report:
        parts.append(f"<p><strong>{esc(report.get('headline'))}</strong></p>")
        parts.append('<p class="muted">Hover a point for its numbers; click it to open that '
                     "level's run. Dashed red lines are SLO thresholds.</p>")
        for i, spec in enumerate((site_charts.throughput_spec(report),
                                  site_charts.latency_spec(report))):
            parts.append(f'<div class="chart" data-spec="spec-{i}"></div>'
                         + json_script(f"spec-{i}", spec))
        rows = [[esc(l["level"]), esc(l["status"]), esc(l["throughput"]), esc(l["p50"]),
                 esc(l["p95"]), esc(l["p99"]), esc(l["error_rate"]), esc(l["verdict"]),
                 " ".join(f'<a href="../runs/{esc(i)}.html">{esc(i)}</a>' for i in l["ids"])]
                for l in site_charts.level_rows(report)]
        parts.append("<h2>Levels</h2>" + table(
            ["Level", "Status", "Throughput", "P50", "P95", "P99", "Errors", "Verdict", "Runs"],
            rows))
    else:
        parts.append('<p class="muted">The sweep report has not been built yet.</p>')
    return page(f"Sweep {name}", "".join(parts), up="../",
                scripts=("../assets/vega.js", "../assets/charts.js"))


# ----------------------------------------------------------------------------- a run

def run_html(row: dict, run: dict | None, plots: list[dict], links: dict[str, str],
             comparisons: list[dict]) -> str:
    """`plots`: [{title, caption, key, script, png}] with addresses relative to the page;
    `links`: label -> address of the run's files."""
    bid = row["benchmark_id"]
    facts = [("status", row.get("status")), ("category", row.get("category")),
             ("service", row.get("service_kind")), ("recipe", row.get("recipe")),
             ("date", row.get("date")), ("purpose", row.get("purpose")),
             ("clients × concurrency", f"{row.get('concurrency')} × {row.get('concurrency_per_client')}"),
             ("throughput", format_rate(row.get("rps"))),
             (row.get("latency_metric") or "latency",
              format_metric(row.get("latency_metric") or "p95", row.get("latency_s"))),
             ("errors", format_percent(row.get("error_rate"))),
             ("SLO", {True: "✅ met", False: "❌ missed"}.get(row.get("slo_passed"), "not judged")),
             ("notes", row.get("notes"))]
    sweep = row.get("sweep")
    if isinstance(sweep, dict):
        facts.append(("sweep", f"{sweep.get('name')} (level {sweep.get('level')})"))
    parts = [f"<h1>{esc(bid)}</h1>", '<dl class="facts">'
             + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in facts) + "</dl>",
             "<p>" + " · ".join(f'<a href="{esc(h)}">{esc(label)}</a>' for label, h in links.items())
             + "</p>"]
    if comparisons:
        parts.append("<p>Compared in: " + ", ".join(
            f'<a href="../{esc(c["href"])}">{esc(c["name"])}</a>' for c in comparisons) + "</p>")
    scripts = ["../assets/vega.js"]
    if plots:
        parts.append("<h2>Plots</h2>")
    for p in plots:
        if p.get("script"):
            scripts.append(p["script"])
            shown = f'<div class="chart" data-chart="{esc(p["key"])}" data-renderer="canvas"></div>'
        else:  # a report built before the charts were kept as specs: its PNG
            shown = f'<img src="{esc(p["png"])}" alt="{esc(p["title"])}" width="640">'
        parts.append(f"<figure>{shown}<figcaption>{esc(p.get('caption'))}</figcaption></figure>")
    parts.append("<h2>run.json</h2>" + (
        f"<pre>{esc(json.dumps(run, indent=2, ensure_ascii=False))}</pre>" if run is not None
        else '<p class="muted">No run.json yet (registered, not run).</p>'))
    scripts.append("../assets/charts.js")
    return page(bid, "".join(parts), up="../", scripts=tuple(scripts))


def run_plots(report: dict | None, report_dir: Path, page_dir: Path) -> list[dict]:
    """The plots a run's report.json lists, each with its chart script when it was kept."""
    out = []
    for p in (report or {}).get("plots") or []:
        png = report_dir / p["path"]
        script = chart_script_path(png)
        out.append({"title": p.get("title"), "caption": p.get("caption"), "key": png.name,
                    "png": rel(png, page_dir),
                    "script": rel(script, page_dir) if script.is_file() else None})
    return out


# ----------------------------------------------------------------------------- files

def _read(path: Path):
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def write_page(path: Path, text: str) -> None:
    """Write a page unless it already holds `text`: most pages are unchanged between two index
    builds, and each atomic write costs an fsync (10,000 run pages: docs/site.md)."""
    try:
        if path.read_text(encoding="utf-8") == text:
            return
    except (OSError, ValueError):
        pass
    write_text(path, text)


def write_assets(site_dir: Path) -> None:
    """The site's CSS/JS, and the Vega bundle once (rewritten only for another vl-convert)."""
    assets = Path(site_dir) / "assets"
    files = importlib.resources.files("aifb.reporting") / "site_files"
    for name in ASSET_FILES:
        write_page(assets / name, (files / name).read_text(encoding="utf-8"))
    stamp = f"/* vega, vega-lite and vega-embed from vl-convert-python {vlc.__version__} */\n"
    vega = assets / VEGA_FILE
    try:
        current = vega.open(encoding="utf-8").readline()
    except OSError:
        current = ""
    if current != stamp:
        write_text(vega, stamp + vlc.javascript_bundle())


def comparisons_on_disk(reports: Path, site_dir: Path) -> list[dict]:
    """reports/compare_*.json: name, subjects' labels and IDs, and the .md's address."""
    out = []
    for path in sorted(Path(reports).glob("compare_*.json")):
        data = _read(path)
        if data is None:
            continue
        subjects = data.get("subjects") or []
        out.append({"name": path.stem, "href": rel(path.with_suffix(".md"), site_dir),
                    "labels": [str(s.get("label")) for s in subjects],
                    "ids": sorted({i for s in subjects for i in s.get("ids") or []}),
                    "baseline": data.get("baseline")})
    return out


def _prune(folder: Path, keep: set[str]) -> None:
    """Pages of runs or sweeps that are no longer in the index (their files were removed)."""
    if folder.is_dir():
        for p in folder.glob("*.html"):
            if p.name not in keep:
                p.unlink()


def build_site(root: Path, index: dict, site_dir: Path) -> dict:
    """Write the whole site for `index` (aifb.workflow.index's index.json content) into
    site_dir; returns {runs, sweeps, comparisons} counts."""
    root, site_dir = Path(root), Path(site_dir)
    reports = root / "reports"
    write_assets(site_dir)
    comparisons = comparisons_on_disk(reports, site_dir)

    sweep_pages, sweeps = {}, []
    for s in index.get("sweeps") or []:
        entry = dict(s)
        if s.get("report_dir") and s.get("report_built"):
            report_dir = root / s["report_dir"]
            name = f"{report_dir.name}.html"
            entry["page"] = f"sweeps/{name}"
            write_page(site_dir / "sweeps" / name,
                       sweep_html(s, _read(report_dir / "report.json"),
                                  rel(report_dir / "report.md", site_dir / "sweeps")))
            for bid in s.get("ids") or []:
                sweep_pages[bid] = entry["page"]
        sweeps.append(entry)
    _prune(site_dir / "sweeps", {Path(s["page"]).name for s in sweeps if s.get("page")})

    records, runs_dir = [], site_dir / "runs"
    for row in index.get("runs") or []:
        bid = row["benchmark_id"]
        report_dir, results_dir = reports / bid, root / "results" / bid
        report = _read(report_dir / "report.json")
        links = {label: rel(path, runs_dir) for label, path in (
            ("report.md", report_dir / "report.md"), ("report.json", report_dir / "report.json"),
            ("run.json", results_dir / "run.json"), ("summary.json", results_dir / "summary.json"))
            if path.is_file()}
        mine = [c for c in comparisons if bid in c["ids"]]
        write_page(runs_dir / f"{bid}.html",
                   run_html(row, _read(results_dir / "run.json"),
                            run_plots(report, report_dir, runs_dir), links, mine))
        records.append(run_record(row, sweep_pages, rel(report_dir / "report.md", site_dir)
                                  if (report_dir / "report.md").is_file() else None))
    _prune(runs_dir, {f"{r['id']}.html" for r in records})

    write_page(site_dir / "index.html",
               index_html(records, sweeps, comparisons, index.get("generated_at") or ""))
    return {"runs": len(records), "sweeps": sum(1 for s in sweeps if s.get("page")),
            "comparisons": len(comparisons)}
