"""A three-level Redis sweep through the local profile: verdicts, optimum, plots, stable IDs,
the dataset index rebuilt from it, a rerun of one point with its verdict, Snakemake's --report."""

from __future__ import annotations

import json
import re
import zipfile

import pytest

from aifb.units import format_number
from support import REPO, aifb, make_workspace, read_json, redis_servers_under, snakemake, tree

pytestmark = [pytest.mark.workflow, pytest.mark.redis, pytest.mark.slow]

SWEEPS = {
    "redis_sweep": {
        "service": "Redis",
        "purpose": "Find optimal concurrency for database operations under SLO",
        "param": "load.clients",
        "points": ["recipes/recipe_redis_1client.yaml", "recipes/recipe_redis_2client.yaml",
                   "recipes/recipe_redis_4client.yaml"],
        "slo": ["p99 < 100ms"],
        "set": ["load.duration=1.5s", "load.warmup=0.3s"],
    }
}


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    ws = make_workspace(tmp_path_factory.mktemp("sweep"), SWEEPS)
    dry_before = tree(ws)
    dry = snakemake(ws, "-n", "sweep_all")
    assert dry.returncode == 0, dry.stderr
    assert tree(ws) == dry_before, "a dry run wrote files"
    proc = aifb(ws, "sweep", "redis_sweep", timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return ws, proc, dry


def sweep_dir(ws):
    dirs = sorted((ws / "reports").glob("sweep_BM-*_BM-*"))
    assert len(dirs) == 1, dirs
    return dirs[0]


def test_dry_run_showed_the_whole_dag(swept):
    _, _, dry = swept
    out = dry.stdout + dry.stderr
    assert re.search(r"run_benchmark\s+3", out) and re.search(r"sweep_report\s+1", out)


def test_each_point_has_its_own_completed_run(swept):
    ws, proc, _ = swept
    d = sweep_dir(ws)
    first, last = d.name.removeprefix("sweep_").split("_")
    ids = sorted(p.name for p in (ws / "results").glob("BM-*"))
    assert len(ids) == 3 and ids[0] == first and ids[-1] == last
    for bid, clients in zip(ids, (1, 2, 4)):
        run = read_json(ws / "results" / bid / "run.json")
        assert run["status"] == "completed" and run["recipe"]["load"]["clients"] == clients
        assert run["sweep"]["name"] == "redis_sweep" and run["sweep"]["level"] == clients
        assert (ws / "reports" / bid / "report.md").is_file()
    assert redis_servers_under(ws) == []
    assert "sweep report:" in proc.stdout and "dataset index:" in proc.stdout


def test_sweep_report_names_the_optimum(swept):
    ws, _, _ = swept
    d = sweep_dir(ws)
    rep = read_json(d / "report.json")
    assert [lv["level"] for lv in rep["levels"]] == [1, 2, 4]
    passing = [lv for lv in rep["levels"] if lv["passed"]]
    assert passing, "Redis on loopback should meet p99 < 100ms at 1-4 clients"
    best = max(passing, key=lambda lv: (lv["throughput"]["rps"] if isinstance(lv["throughput"], dict) else lv["throughput"]))
    assert rep["optimal"]["level"] == best["level"]
    md = (d / "report.md").read_text()
    assert "Optimal" in md and "p99 < 100ms" in md
    for png in ("throughput_vs_level", "latency_vs_level", "error_rate_vs_level"):
        assert (d / "plots" / f"{png}.png").read_bytes()[:4] == b"\x89PNG"


def test_ids_are_stable_across_invocations(swept):
    ws, _, _ = swept
    before = sorted(p.name for p in (ws / "results" / "registry").glob("BM-*.json"))
    proc = snakemake(ws, "sweep_all")
    assert proc.returncode == 0 and "Nothing to be done" in proc.stdout + proc.stderr
    assert sorted(p.name for p in (ws / "results" / "registry").glob("BM-*.json")) == before


def test_the_index_is_the_seeds_twin(swept):
    ws, _, _ = swept
    md = (ws / "reports" / "dataset_index.md").read_text()
    headings = [line for line in md.splitlines() if line.startswith("#")]
    for h in ("# AI Factory Benchmarking Dataset Index", "## Dataset Structure",
              "## Benchmark Categories", "## Concurrency Sweeps", "## Reproducibility Guide",
              "## Notes"):
        assert h in headings
    assert "| Benchmark ID | Recipe | Date | Purpose | Status | Concurrency | Notes |" in md
    assert "recipe_redis_4client.yaml" in md and "req/s, P99=" in md
    index = read_json(ws / "reports" / "index.json")
    assert len(index["runs"]) == 3


def test_the_site_shows_the_sweep_and_its_runs(swept):
    """`aifb sweep` ends with the index, which builds reports/site/: the sweep's page charts its
    three levels, each point linking to a run page that draws the report's own charts."""
    ws, _, _ = swept
    site_dir = ws / "reports" / "site"
    page = (site_dir / "sweeps" / f"{sweep_dir(ws).name}.html").read_text()
    ids = sorted(p.name for p in (ws / "results").glob("BM-*"))
    for bid in ids:
        assert f"../runs/{bid}.html" in page
        run_page = (site_dir / "runs" / f"{bid}.html").read_text()
        assert f'<script src="../../{bid}/plots/latency_cdf.vl.js">' in run_page
        assert (ws / "reports" / bid / "plots" / "latency_cdf.vl.js").is_file()
    assert "SLO p99 \\u003c 100ms" in page   # the threshold line ("<" escaped in inline JSON)
    index = (site_dir / "index.html").read_text()
    assert all(f'"id":"{bid}"' in index for bid in ids) and '"sweep":"redis_sweep"' in index


def test_a_throughput_reads_the_same_in_every_report(swept):
    """One formatting per quantity: a run's throughput is the same text in its run report, the
    sweep report and the dataset index (3 significant figures, every integer digit, req/s)."""
    ws, _, _ = swept
    sweep_md = (sweep_dir(ws) / "report.md").read_text()
    index_md = (ws / "reports" / "dataset_index.md").read_text()
    for run_dir in sorted((ws / "results").glob("BM-*")):
        rps = read_json(run_dir / "summary.json")["throughput"]["rps"]
        text = format_number(rps)
        run_md = (ws / "reports" / run_dir.name / "report.md").read_text()
        assert f"| Throughput | {text} req/s (ok requests" in run_md
        assert f"| {run_dir.name} | ✅ completed | {text} |" in sweep_md
        assert re.search(rf"\| {run_dir.name} \|.*\| {re.escape(text)} req/s, P99=", index_md)
    for md in (sweep_md, index_md):
        assert "RPS" not in md and not re.search(r"\d{3}\.\d+ req/s", md)  # no decimals past 100


def test_a_sweep_leaves_no_logs_outside_results_and_reports(swept):
    """`make demo` left an untracked logs/ (sweep and index logs) in the checkout."""
    ws, _, _ = swept
    assert not (ws / "logs").exists()
    assert (ws / "reports" / "logs" / "index.log").is_file()
    assert (ws / "reports" / "logs" / f"{sweep_dir(ws).name}.log").is_file()


def test_every_rule_logs_under_results_or_reports():
    """Every log: of the workflow is under results/ or reports/ (both ignored by git)."""
    logs = []
    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        logs += re.findall(r"^\s+log:\s*\n\s+(?:\w+=)?\"([^\"]+)\"", smk.read_text(), re.M)
    assert len(logs) >= 5
    assert all(p.startswith(("results/", "reports/")) for p in logs), logs


def test_rerun_says_whether_it_reproduced(swept):
    ws, _, _ = swept
    first = sorted(p.name for p in (ws / "results").glob("BM-*"))[0]
    proc = aifb(ws, "rerun", first, timeout=300)
    out = proc.stdout + proc.stderr
    assert re.search(r"\b(reproduced|not reproduced)\b", out), out
    new = re.search(r"benchmark id: (BM-\S+)", proc.stdout).group(1)
    run = read_json(ws / "results" / new / "run.json")
    assert run["rerun_of"] == first and run["recipe_hash"] == read_json(
        ws / "results" / first / "run.json")["recipe_hash"]
    comparison = read_json(ws / "reports" / new / "comparison.json")
    assert comparison["verdict"] in ("reproduced", "not reproduced")
    assert comparison["tolerance_source"]
    assert "Reproducibility" in (ws / "reports" / new / "report.md").read_text()


def test_manual_rerun_path_of_the_seed(swept):
    """jq '.recipe' run.json > recipe.yaml, then run that recipe (JSON is YAML)."""
    ws, _, _ = swept
    first = sorted(p.name for p in (ws / "results").glob("BM-*"))[0]
    recipe = read_json(ws / "results" / first / "run.json")["recipe"]
    (ws / "recipe.yaml").write_text(json.dumps(recipe, indent=2))
    proc = aifb(ws, "validate", "recipe.yaml")
    assert proc.returncode == 0, proc.stderr


def test_snakemake_html_report_carries_the_plots(swept):
    ws, _, _ = swept
    proc = snakemake(ws, "sweep_all", "--report", "report.zip")
    assert proc.returncode == 0, proc.stderr[-3000:]
    names = zipfile.ZipFile(ws / "report.zip").namelist()
    assert any(n.endswith("latency_cdf.png") for n in names)
    assert any(n.endswith("throughput_vs_level.png") for n in names)
