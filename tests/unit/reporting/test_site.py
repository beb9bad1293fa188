"""The offline site (aifb.reporting.site, site_charts): page data, HTML builders, and the whole
site built by aifb.workflow.index from a small dataset made by the real report code."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pytest

from aifb.reporting import site, site_charts
from aifb.workflow.index import write_index
from support import site_dataset

NOW = dt.datetime(2026, 1, 9, 12, 0, tzinfo=dt.timezone.utc)
# A reference to another machine from a page: <script src>, <link href>, <img src>, CSS url().
REMOTE = re.compile(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//|url\(\s*["']?\s*(?:https?:)?//|@import\s+["']?(?:https?:)?//""", re.I)


def inline_json(page: str, element_id: str):
    m = re.search(rf'<script type="application/json" id="{element_id}">(.*?)</script>', page, re.S)
    assert m, element_id
    return json.loads(m.group(1))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("site")
    sweeps = site_dataset(root)
    (root / "reports" / "compare_BM-20260109-001_BM-20260109-002.json").write_text(json.dumps(
        {"subjects": [{"label": "BM-20260109-001", "ids": ["BM-20260109-001"]},
                      {"label": "BM-20260109-002", "ids": ["BM-20260109-002"]}],
         "baseline": "BM-20260109-001"}))
    index = write_index(root, sweeps, root / "reports" / "dataset_index.md",
                        root / "reports" / "index.json", site=root / "reports" / "site" / "index.html",
                        now=NOW)
    return root, root / "reports" / "site", index


def test_json_script_cannot_close_its_element():
    page = site.json_script("x", {"notes": "</script><script>alert(1)</script>"})
    assert page.count("</script>") == 1
    assert json.loads(page.split(">", 1)[1].rsplit("<", 1)[0]) == {
        "notes": "</script><script>alert(1)</script>"}


def test_run_record_keeps_numbers_to_sort_and_texts_to_show():
    row = {"benchmark_id": "BM-20260109-001", "category": "storage", "service_kind": "redis",
           "recipe": "r.yaml", "date": "2026-01-09", "status": "completed", "concurrency": 4,
           "concurrency_per_client": 1, "rps": 58845.31, "latency_metric": "p99",
           "latency_s": 0.000183, "error_rate": 0.01234, "slo_passed": False,
           "sweep": {"name": "redis_sweep", "level": 4}, "notes": "n"}
    rec = site.run_record(row, {"BM-20260109-001": "sweeps/s.html"}, "../BM-20260109-001/report.md")
    assert rec["rps"] == 58845.31 and rec["rps_t"] == "58,845 req/s"
    assert rec["latency"] == 0.000183 and rec["latency_t"] == "P99 183 µs"
    assert rec["errors_t"] == "1.23%" and rec["slo"] == "fail" and rec["slo_t"] == "❌ missed"
    assert rec["sweep"] == "redis_sweep" and rec["sweep_page"] == "sweeps/s.html"
    assert rec["page"] == "runs/BM-20260109-001.html"
    registered = site.run_record({"benchmark_id": "BM-20260109-002", "date": "—",
                                  "status": "registered"}, {}, None)
    assert registered["date"] == "" and registered["rps_t"] is None and registered["slo"] == ""


def _layers(spec):
    return spec.get("layer") or [spec]


def test_sweep_charts_link_points_to_run_pages_and_draw_the_slo(built):
    root, _, index = built
    report = json.loads((root / index["sweeps"][0]["report_dir"] / "report.json").read_text())
    lat = site_charts.latency_spec(report)
    points = [l for l in _layers(lat) if l["mark"].get("type") == "point"]
    assert points and points[0]["encoding"]["href"]["field"] == "href"
    assert {t["title"] for t in points[0]["encoding"]["tooltip"]} >= {"latency", "verdict"}
    rows = [r for l in _layers(lat) for r in (l.get("data") or {}).get("values") or []]
    assert {r.get("href") for r in rows if "href" in r} == {
        "../runs/BM-20260109-001.html", "../runs/BM-20260109-002.html"}
    assert any(r.get("label") == "SLO p99 < 5ms" and r["y"] == pytest.approx(5.0) for r in rows)
    thr = site_charts.throughput_spec(report)
    assert any(l["mark"].get("type") == "point" and "href" in l["encoding"] for l in _layers(thr))


def test_sweep_chart_without_numbers_says_so():
    spec = site_charts.latency_spec({"sweep": "s", "param": "p", "levels": [
        {"level": 1, "ids": [], "latency": {"p50": None, "p95": None, "p99": None},
         "throughput": None}]})
    assert "no level has numbers yet" in json.dumps(spec)


def test_index_page_holds_every_run_and_links(built):
    _, site_dir, index = built
    page = (site_dir / "index.html").read_text()
    data = inline_json(page, "aifb-runs")
    assert [r["id"] for r in data["runs"]] == ["BM-20260109-001", "BM-20260109-002"]
    assert {c["key"] for c in data["columns"]} >= {"id", "category", "service", "status", "sweep",
                                                  "date", "rps", "latency", "slo", "report"}
    for r in data["runs"]:
        assert r["status"] == "completed" and r["rps"] > 0 and r["sweep"] == "redis_sweep"
        assert (site_dir / r["page"]).is_file() and (site_dir / r["report"]).is_file()
        assert (site_dir / r["sweep_page"]).is_file()
    assert 'href="sweeps/sweep_BM-20260109-001_BM-20260109-002.html"' in page
    assert "compare_BM-20260109-001_BM-20260109-002" in page


def test_run_page_draws_the_reports_charts_and_shows_run_json(built):
    root, site_dir, _ = built
    page = (site_dir / "runs" / "BM-20260109-002.html").read_text()
    for name in ("latency_cdf", "latency_over_time", "throughput_over_time"):
        src = f"../../BM-20260109-002/plots/{name}.vl.js"
        assert f'<script src="{src}">' in page and (site_dir / "runs" / src).is_file()
        assert f'data-chart="{name}.png"' in page
    run = json.loads((root / "results" / "BM-20260109-002" / "run.json").read_text())
    assert site.esc(json.dumps(run, indent=2, ensure_ascii=False)) in page
    assert 'href="../../compare_BM-20260109-001_BM-20260109-002.md"' in page  # reports/
    script = (root / "reports" / "BM-20260109-002" / "plots" / "latency_cdf.vl.js").read_text()
    spec = json.loads(script.split("] = ", 1)[1].rstrip().rstrip(";"))
    assert spec["$schema"].startswith("https://vega.github.io/schema/vega-lite/")  # an ID, not a fetch


def test_a_report_without_chart_scripts_shows_its_pngs(tmp_path):
    report_dir = tmp_path / "reports" / "BM-20260109-001"
    (report_dir / "plots").mkdir(parents=True)
    (report_dir / "plots" / "latency_cdf.png").write_bytes(b"png")
    plots = site.run_plots({"plots": [{"path": "plots/latency_cdf.png", "title": "CDF"}]},
                           report_dir, tmp_path / "reports" / "site" / "runs")
    assert plots[0]["script"] is None and plots[0]["png"] == "../../BM-20260109-001/plots/latency_cdf.png"
    page = site.run_html({"benchmark_id": "BM-20260109-001"}, None, plots, {}, [])
    assert '<img src="../../BM-20260109-001/plots/latency_cdf.png"' in page


def test_no_page_references_another_machine(built):
    """Offline: no script, stylesheet or image from http(s):// (or protocol-relative //) in any
    page or in the site's own CSS/JS, and no fetch or XMLHttpRequest in them."""
    _, site_dir, _ = built
    pages = list(site_dir.rglob("*.html"))
    assert len(pages) == 4   # index, one sweep, two runs
    for p in pages + [site_dir / "assets" / n for n in site.ASSET_FILES]:
        text = p.read_text()
        assert not REMOTE.search(text), (p, REMOTE.search(text))
        assert "fetch(" not in text and "XMLHttpRequest" not in text, p
    assert REMOTE.search('<script src="https://cdn.jsdelivr.net/npm/vega@5">')  # the check works
    assert REMOTE.search("<link href='//cdn.example/x.css'>")


def test_stale_pages_are_removed_and_unchanged_files_are_not_rewritten(built):
    root, site_dir, index = built
    (site_dir / "runs" / "BM-20250101-001.html").write_text("old")
    vega, run_page = site_dir / "assets" / "vega.js", site_dir / "runs" / "BM-20260109-001.html"
    before = {p: p.stat().st_mtime_ns for p in (vega, run_page)}
    site.build_site(root, index, site_dir)
    assert not (site_dir / "runs" / "BM-20250101-001.html").exists()
    assert {p: p.stat().st_mtime_ns for p in (vega, run_page)} == before   # unchanged: not rewritten
    assert vega.stat().st_size > 500_000 and "vegaEmbed" in vega.read_text()
