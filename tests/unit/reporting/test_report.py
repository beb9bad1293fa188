"""report.md / report.json / plots of one run, built from files only; render_notes."""

import importlib.util
import json
import sys
from pathlib import Path

import polars as pl
import pytest

from aifb.reporting import plots
from aifb.reporting.report import build_report, render_notes
from aifb.analysis.summary import summarize, write_summary

_spec = importlib.util.spec_from_file_location(
    "synthetic_run", Path(__file__).parents[2] / "data" / "synthetic_run.py")
synthetic = importlib.util.module_from_spec(_spec)
sys.modules["synthetic_run"] = synthetic
_spec.loader.exec_module(synthetic)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PLOTS = ("latency_cdf.png", "latency_over_time.png", "throughput_over_time.png")


def assert_plots(report_dir: Path, min_size: int):
    for name in PLOTS:
        data = (report_dir / "plots" / name).read_bytes()
        assert data[:8] == PNG_MAGIC, name
        assert len(data) > min_size, (name, len(data))


@pytest.fixture(scope="module")
def completed(tmp_path_factory):
    root = tmp_path_factory.mktemp("rep")
    run_dir = root / "results" / "BM-20260109-001"
    synthetic.write_run(run_dir, load_stats_extra={
        "client_cpu": {"cpu_s": 9.7, "util_of_one_core": 0.97}})
    write_summary(run_dir, run_dir / "summary.json")
    report_dir = root / "reports" / "BM-20260109-001"
    report = build_report(run_dir, report_dir)
    return run_dir, report_dir, report


def test_files_exist_and_pngs_are_valid(completed):
    _, report_dir, _ = completed
    assert (report_dir / "report.md").is_file() and (report_dir / "report.json").is_file()
    assert_plots(report_dir, 20_000)


def test_report_json_keys(completed):
    run_dir, report_dir, report = completed
    data = json.loads((report_dir / "report.json").read_text())
    assert data == json.loads(json.dumps(report))
    for key in ("benchmark_id", "status", "recipe_name", "service", "headline", "slo",
                "validity", "plots", "per_op", "metric_definitions", "notes", "where"):
        assert key in data, key
    assert data["benchmark_id"] == "BM-20260109-001" and data["status"] == "completed"
    assert data["recipe_name"] == "redis_synthetic"
    assert data["service"]["kind"] == "redis" and data["service"]["managed"] is True
    summary = json.loads((run_dir / "summary.json").read_text())
    assert data["headline"]["rps"] == summary["throughput"]["rps"]
    assert data["headline"]["p99_s"] == summary["latency_s"]["p99"]
    assert data["slo"] == summary["slo"]
    assert [p["path"] for p in data["plots"]] == [f"plots/{n}" for n in PLOTS]
    assert all(p["caption"] for p in data["plots"])
    assert set(data["per_op"]) == {"get", "set"}


def test_report_md_content(completed):
    _, report_dir, report = completed
    md = (report_dir / "report.md").read_text()
    assert md.startswith("# Benchmark BM-20260109-001: redis_synthetic\n")
    assert "| rule | measured | passed |" in md
    assert "| `p95 < 5ms` |" in md and "| `error_rate < 5%` |" in md
    assert "## Metric definitions" in md
    for name in report["metric_definitions"]:
        assert f"- **{name}**:" in md
    for name in PLOTS:
        assert f"](plots/{name})" in md
    # validity warning shown prominently, before the first section
    warning = "The load generator used 97% of a CPU core"
    assert warning in md and md.index(warning) < md.index("## What ran")
    assert "redis://127.0.0.1:6390" in md and "7.0.15" in md and "/usr/bin/redis-server" in md
    assert "managed" in md and "dirty" in md and "sha256:" in md
    assert "2 client(s) × 1 in flight" in md
    assert "| get |" in md and "| set |" in md


def test_failed_run_without_records(tmp_path):
    run_dir = tmp_path / "results" / "BM-20260109-002"
    synthetic.write_failed_run(run_dir)
    report_dir = tmp_path / "reports" / "BM-20260109-002"
    report = build_report(run_dir, report_dir)  # no summary.json: computed on the fly
    assert_plots(report_dir, 5_000)
    md = (report_dir / "report.md").read_text()
    reason = "redis-server did not become ready within 30 s (port 6390 in use)"
    assert "Status: FAILED" in md and reason in md
    assert md.index(reason) < md.index("## What ran")
    assert "| rule | measured | passed |" in md and "## Metric definitions" in md
    assert report["status"] == "failed" and report["reason"] == reason
    assert report["headline"]["latency_n"] == 0
    assert all("nothing to plot" in p["caption"] or "No " in p["caption"] for p in report["plots"])
    data = json.loads((report_dir / "report.json").read_text())
    assert data["status"] == "failed"


def test_open_loop_report(tmp_path):
    run_dir = tmp_path / "r"
    synthetic.write_run(run_dir, open_loop=True)
    report = build_report(run_dir, tmp_path / "out")
    md = (tmp_path / "out" / "report.md").read_text()
    assert "open loop" in md and "t_end - t_sched (includes queueing)" in md
    assert "Scheduling lag" in md and "Service time" in md
    assert report["headline"]["latency_definition"] == "t_end - t_sched (includes queueing)"


def test_plot_sampling_is_capped(tmp_path, monkeypatch):
    monkeypatch.setattr(plots, "MAX_POINTS", 300)
    run_dir = tmp_path / "r"
    synthetic.write_run(run_dir)
    run = json.loads((run_dir / "run.json").read_text())
    data = plots.plot_data(run_dir / "requests.jsonl", run, summarize(run_dir))
    assert data.sample.height == 300 and data.sampled and data.n_records == 1160
    # exact counts in the throughput bins (the last row closes the final step)
    bins = data.bins.filter(pl.col("t") < data.bins["t"].max())
    assert bins["rate"].sum() * data.bin_s == 1160


@pytest.mark.parametrize("rps,stat,value,want", [
    (3.3712, "p95", 0.3512, "3.37 req/s, P95=351 ms"),
    (1.11, "p99", 0.98, "1.11 req/s, P99=980 ms"),
    (12.8, "p95", 0.37, "12.8 req/s, P95=370 ms"),
    (58845.0, "p99", 0.00021, "58,845 req/s, P99=210 µs"),
    (6.97, "p95", 1.6249, "6.97 req/s, P95=1.62 s"),
])
def test_render_notes_in_the_units_of_every_report(rps, stat, value, want):
    rules = [{"rule": f"{stat} < 1s", "metric": stat}] if stat != "p95" else []
    summary = {"status": "completed", "throughput": {"rps": rps},
               "latency_s": {"p95": value if stat == "p95" else 0.0, stat: value},
               "slo": {"rules": rules + [{"rule": "error_rate < 1%", "metric": "error_rate"}]}}
    assert render_notes(summary) == want


def test_render_notes_uses_first_latency_percentile_rule_and_failure():
    summary = {"status": "failed", "reason": "service crashed",
               "throughput": {"rps": 0.0}, "latency_s": {"p99": None, "p95": None},
               "slo": {"rules": [{"metric": "error_rate"}, {"metric": "mean"},
                                 {"metric": "p99"}, {"metric": "p50"}]}}
    assert render_notes(summary) == "0 req/s, P99=n/a (failed: service crashed)"
    summary["status"], summary["throughput"]["rps"] = "completed", 12.345
    summary["latency_s"] = {"n": 500, "p99": 0.0123, "p999": None, "p95": 0.01}
    summary["slo"]["rules"] = [{"metric": "p999"}]
    assert render_notes(summary) == "12.3 req/s, P99=12.3 ms"  # p99.9 needs n >= 10,000
