"""The offline site in a real browser: `snakemake index` builds reports/site/ from a small
dataset, and headless Chromium (Debian's `chromium`, scripts/install.sh --all) opens its pages
from file://: the index lists and filters the runs (10,000 of them, timed), a sweep page and a
run page draw their charts, no page logs to the console and no request leaves the machine.
A screenshot of each page kind is saved in the test's folder (or AIFB_SITE_SCREENSHOTS) for a
person to look at."""

from __future__ import annotations

import functools
import html
import http.server
import json
import os
import random
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from aifb.reporting import site
from aifb.units import format_rate
from aifb.workflow.index import write_index
from support import make_workspace, require, site_dataset, snakemake

pytestmark = [pytest.mark.workflow, pytest.mark.slow]

# Chromium's own background traffic (updates, sign-in) is started by the browser ("not an
# origin"); a page's requests carry the page's origin, "null" for file://.
BROWSER_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--enable-logging=stderr", "--v=0", "--window-size=1400,1000"]


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        require("no chromium: scripts/install.sh --all installs Debian's chromium package")
    return path


def browse(url: str, work: Path, *, wait_ms: int = 0, screenshot: Path | None = None,
           flags: tuple[str, ...] = ()) -> dict:
    """Open `url` in a fresh headless Chromium; returns the DOM after load (or the screenshot),
    the console lines and every non-file request a page made (from Chromium's net log)."""
    work.mkdir(parents=True, exist_ok=True)
    profile, netlog = work / "profile", work / "net.json"
    shutil.rmtree(profile, ignore_errors=True)
    args = [chromium(), *BROWSER_FLAGS, *flags, f"--user-data-dir={profile}",
            f"--log-net-log={netlog}"]
    if wait_ms:
        args.append(f"--virtual-time-budget={wait_ms}")
    args += [f"--screenshot={screenshot}"] if screenshot else ["--dump-dom"]
    t0 = time.monotonic()
    proc = subprocess.run([*args, url], capture_output=True, text=True, timeout=120)
    wall = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = [l for l in proc.stderr.splitlines() if ":CONSOLE" in l]
    log = json.loads(netlog.read_text())
    types = {v: k for k, v in log["constants"]["logEventTypes"].items()}
    starts = [e.get("params") or {} for e in log["events"]
              if types.get(e["type"]) == "URL_REQUEST_START_JOB"]
    requests = [p["url"] for p in starts if "url" in p and p.get("initiator") != "not an origin"
                and not p["url"].startswith("file:")]
    return {"dom": proc.stdout, "console": console, "requests": requests, "wall_s": wall}


# A page that opens a site page in a frame, waits until `ready` holds in it, runs `action` as a
# user would (events on its elements) and writes what `action` reports into its own <body>.
# Chromium lets a file:// page read its frame only with --allow-file-access-from-files.
HARNESS = """<!DOCTYPE html><html><body><iframe id="f" src="%(src)s" width="1300" height="1000"></iframe>
<script>
var f = document.getElementById("f"), tries = 0;
function done(result) { Object.keys(result).forEach(function (k) { document.body.dataset[k] = result[k]; }); }
function poll(test, then) {
  var n = 0;
  (function again() { var v = test(); if (v || ++n > 200) return then(v); setTimeout(again, 50); })();
}
function act(d, w) { %(action)s }
f.addEventListener("load", function () {
  poll(function () { var d = f.contentDocument; return d && d.body && (%(ready)s) ? d : null; },
       function (d) { if (!d) return done({result: "not ready"}); act(d, f.contentWindow); });
}, {once: true});
</script></body></html>"""


def act_in(site_dir: Path, work: Path, src: str, ready: str, action: str) -> dict:
    harness = site_dir / "test-harness.html"
    harness.write_text(HARNESS % {"src": src, "ready": ready, "action": action})
    try:
        seen = browse(harness.as_uri(), work, wait_ms=20000,
                      flags=("--allow-file-access-from-files",))
    finally:
        harness.unlink()
    assert seen["console"] == [] and seen["requests"] == []
    return body_data(seen["dom"])


def body_data(dom: str) -> dict:
    m = re.search(r"<body([^>]*)>", dom)
    return ({k: html.unescape(v) for k, v in re.findall(r'data-([a-z-]+)="([^"]*)"', m.group(1))}
            if m else {})


def test_the_browser_check_sees_console_errors_and_remote_requests(tmp_path):
    """The two checks below can fail: a page that logs and loads from the network is caught."""
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><script src="https://198.18.0.7/vega.js"></script>'
                   '<img src="http://198.18.0.8/x.png"><script>console.error("boom")</script>')
    seen = browse(bad.as_uri(), tmp_path / "b")
    assert any("boom" in l for l in seen["console"])
    assert {"https://198.18.0.7/vega.js", "http://198.18.0.8/x.png"} <= set(seen["requests"])


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("site")
    sweeps = site_dataset(root)
    write_index(root, sweeps, root / "reports" / "dataset_index.md", root / "reports" / "index.json",
                site=root / "reports" / "site" / "index.html")
    # AIFB_SITE_SCREENSHOTS=DIR keeps the screenshots (and the browsers' scratch) in DIR
    shots = os.environ.get("AIFB_SITE_SCREENSHOTS")
    if shots:
        Path(shots).mkdir(parents=True, exist_ok=True)
    return root / "reports" / "site", Path(shots) if shots else tmp_path_factory.mktemp("shots")


def test_snakemake_index_builds_the_site(tmp_path):
    ws = make_workspace(tmp_path)
    site_dataset(ws)
    shutil.rmtree(ws / "reports" / "site", ignore_errors=True)
    proc = snakemake(ws, "index")
    assert proc.returncode == 0, proc.stderr[-3000:]
    page = (ws / "reports" / "site" / "index.html").read_text()
    assert "BM-20260109-001" in page and "BM-20260109-002" in page
    assert (ws / "reports" / "site" / "runs" / "BM-20260109-002.html").is_file()
    assert (ws / "reports" / "site" / "assets" / "vega.js").stat().st_size > 500_000


def test_index_page_lists_the_runs(built):
    site_dir, shots = built
    seen = browse((site_dir / "index.html").as_uri(), shots / "index")
    assert seen["console"] == [] and seen["requests"] == []
    assert body_data(seen["dom"])["shown"] == "2"
    assert 'href="runs/BM-20260109-001.html"' in seen["dom"]
    browse((site_dir / "index.html").as_uri(), shots / "index", screenshot=shots / "index.png")
    print(f"screenshot: {shots / 'index.png'}")


def test_sweep_page_draws_its_charts(built):
    site_dir, shots = built
    page = next((site_dir / "sweeps").glob("*.html"))
    seen = browse(page.as_uri(), shots / "sweep", wait_ms=8000)
    assert seen["console"] == [] and seen["requests"] == []
    assert body_data(seen["dom"]).get("charts-drawn") == "2"
    # the points are drawn: one per level on the throughput chart, one per level and
    # percentile on the latency chart, each linking to its level's run page
    points = re.findall(r'<path aria-label="([^"]*)" role="graphics-symbol" '
                        r'aria-roledescription="point"', seen["dom"])
    assert len(points) == 2 + 2 * 3, points
    assert all("href: ../runs/BM-20260109-00" in p for p in points)
    browse(page.as_uri(), shots / "sweep", wait_ms=8000, screenshot=shots / "sweep.png")
    print(f"screenshot: {shots / 'sweep.png'}")


def test_sweep_point_shows_its_numbers_on_hover_and_opens_its_run_on_click(built):
    site_dir, shots = built
    page = next((site_dir / "sweeps").glob("*.html"))
    seen = act_in(site_dir, shots / "click", f"sweeps/{page.name}",
                  'd.body.dataset.chartsDrawn === "2"', """
      var p = d.querySelector('path[aria-roledescription="point"]'), r = p.getBoundingClientRect();
      var at = {bubbles: true, cancelable: true, view: w, clientX: r.x + r.width / 2,
                clientY: r.y + r.height / 2};
      p.dispatchEvent(new PointerEvent("pointermove", at));
      p.dispatchEvent(new MouseEvent("mousemove", at));
      var tip = d.getElementById("vg-tooltip-element");
      done({label: p.getAttribute("aria-label"), tooltip: tip ? tip.textContent : "none"});
      p.dispatchEvent(new MouseEvent("click", at));
      poll(function () { return w.location.href.indexOf("/runs/") >= 0; },
           function () { done({opened: w.location.href}); });""")
    assert "BM-20260109-001" in seen["label"]
    report = json.loads((site_dir.parent / page.stem / "report.json").read_text())
    first = report["levels"][0]
    assert "throughput" in seen["tooltip"] and format_rate(first["throughput"]) in seen["tooltip"]
    assert seen["opened"] == (site_dir / "runs" / f"{first['ids'][0]}.html").as_uri()


def test_index_filters_and_sorts_when_the_user_clicks(built):
    site_dir, shots = built
    seen = act_in(site_dir, shots / "filter", "index.html", 'd.body.dataset.shown === "2"', """
      var q = d.getElementById("f-q"), to = d.getElementById("f-to");
      q.value = "BM-20260109-002"; q.dispatchEvent(new Event("input"));
      var one = d.body.dataset.matched;
      to.value = "2026-01-08"; to.dispatchEvent(new Event("change"));
      var none = d.body.dataset.matched;
      d.getElementById("f-reset").click();
      var th = d.querySelector('th[data-key="rps"]');
      th.click(); th.click();   // ascending, then descending
      var first = d.querySelector("#runs-body tr td a").textContent;
      done({one: one, none: none, all: d.body.dataset.matched, first: first,
            hash: w.location.hash});""")
    assert (seen["one"], seen["none"], seen["all"]) == ("1", "0", "2")
    rps = {r["benchmark_id"]: r["rps"] for r in json.loads(
        (site_dir.parent / "index.json").read_text())["runs"]}
    assert seen["first"] == max(rps, key=rps.get)
    assert seen["hash"] == "#sort=rps&desc=1"


def test_the_site_works_from_a_static_web_server(built):
    """Served over HTTP (reports/ as the server's root, on loopback), the pages load only from
    that server and still draw."""
    site_dir, shots = built
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site_dir.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    origin = f"http://127.0.0.1:{server.server_address[1]}/"
    base = origin + "site/"
    try:
        index = browse(base + "index.html", shots / "http")
        page = next((site_dir / "sweeps").glob("*.html")).name
        sweep = browse(base + f"sweeps/{page}", shots / "http", wait_ms=8000)
    finally:
        server.shutdown()
        server.server_close()
    assert body_data(index["dom"])["shown"] == "2"
    assert body_data(sweep["dom"]).get("charts-drawn") == "2"
    for seen in (index, sweep):
        assert seen["console"] == [] and seen["requests"]
        # the browser adds its own /favicon.ico request, to the same server
        assert all(u.startswith(origin) for u in seen["requests"]), seen["requests"]
        assert any(u == base + "assets/site.css" for u in seen["requests"])


def test_run_page_draws_its_plots(built):
    site_dir, shots = built
    page = site_dir / "runs" / "BM-20260109-001.html"
    seen = browse(page.as_uri(), shots / "run", wait_ms=8000)
    assert seen["console"] == [] and seen["requests"] == []
    assert body_data(seen["dom"]).get("charts-drawn") == "3"
    assert seen["dom"].count("<canvas") == 3
    browse(page.as_uri(), shots / "run", wait_ms=8000, screenshot=shots / "run.png")
    print(f"screenshot: {shots / 'run.png'}")


def synthetic_records(n: int) -> list[dict]:
    """n index rows with varied categories, services, statuses, sweeps and dates."""
    rnd = random.Random(18)
    kinds = [("storage", "redis"), ("storage", "postgres"), ("inference", "llamacpp"),
             ("retrieval", "qdrant")]
    rows = []
    for i in range(n):
        cat, kind = kinds[i % len(kinds)]
        status = rnd.choice(["completed"] * 8 + ["failed", "partial"])
        done = status != "failed"
        rows.append(site.run_record({
            "benchmark_id": f"BM-2026{1 + i % 12:02d}{1 + i % 28:02d}-{i:05d}", "category": cat,
            "service_kind": kind, "recipe": f"recipe_{kind}_{i % 7}.yaml",
            "date": f"2026-{1 + i % 12:02d}-{1 + i % 28:02d}", "status": status,
            "concurrency": 2 ** (i % 6), "concurrency_per_client": 1,
            "rps": rnd.uniform(1, 60000) if done else None, "latency_metric": "p99",
            "latency_s": rnd.uniform(1e-4, 2) if done else None,
            "error_rate": rnd.uniform(0, 0.02) if done else None,
            "slo_passed": rnd.random() < 0.7 if done else None,
            "sweep": {"name": f"sweep_{i % 40}"} if i % 3 == 0 else None,
            "notes": "synthetic"}, {}, None))
    return rows


def test_index_with_10000_runs_pages_filters_and_sorts(tmp_path, capsys):
    rows = synthetic_records(10_000)
    site_dir = tmp_path / "site"
    site.write_assets(site_dir)
    (site_dir / "index.html").write_text(site.index_html(rows, [], [], "synthetic"))
    url = (site_dir / "index.html").as_uri()

    seen = browse(url, tmp_path / "b")
    assert seen["console"] == [] and seen["requests"] == []
    data = body_data(seen["dom"])
    assert data["matched"] == "10000" and data["shown"] == "100"
    assert seen["dom"].count("<tr><td") == 100
    assert "runs 1–100 of 10000 matching (10000 in all), page 1 of 100" in seen["dom"]

    failed = [r for r in rows if r["status"] == "failed" and r["category"] == "inference"]
    seen = browse(url + "#status=failed&category=inference&page=1", tmp_path / "b")
    assert body_data(seen["dom"])["matched"] == str(len(failed))
    assert f"runs 101–{min(200, len(failed))} of {len(failed)} matching" in seen["dom"]

    fastest = max((r for r in rows if r["rps"] is not None), key=lambda r: r["rps"])
    seen = browse(url + "#sort=rps&desc=1", tmp_path / "b")
    first = re.search(r'<tbody id="runs-body"><tr><td><a href="([^"]+)"', seen["dom"]).group(1)
    assert first == fastest["page"]

    with open("/proc/loadavg") as fh:
        load = fh.read().split()[:3]
    timings = [body_data(browse(url, tmp_path / "b")["dom"]) for _ in range(3)]
    size = (site_dir / "index.html").stat().st_size
    with capsys.disabled():
        print(f"\n10,000 runs, index.html {size / 1e6:.1f} MB: ready at "
              f"{sorted(float(t['ready-ms']) for t in timings)} ms after navigation start, "
              f"table script {sorted(float(t['render-ms']) for t in timings)} ms "
              f"(load average {' '.join(load)})")
