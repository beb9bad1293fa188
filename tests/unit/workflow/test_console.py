"""aifb.workflow.console: the benchmark lines `aifb` prints instead of Snakemake's output."""

from __future__ import annotations

import io
import json

import pytest

from aifb.workflow.console import PLAIN_EVERY_S, Console, bar, failures, progress_line, result_line

BID = "BM-20261205-001"
MEASURING = {"id": BID, "phase": "measuring", "elapsed_s": 6.04, "planned_s": 13.0,
             "planned_requests": None, "requests": 52311, "errors": 3, "rate": 8412.4,
             "p99_s": 0.000412}


def test_bar():
    assert bar(0.0, 10) == "[..........]" and bar(0.5, 10) == "[#####.....]"
    assert bar(1.7, 10) == "[##########]" and bar(-1, 4) == "[....]"


def test_a_measuring_line_has_every_figure():
    assert progress_line(MEASURING) == (
        f"{BID} measuring   [#########...........] 6.0/13 s  52,311 req  8,412 req/s  "
        "p99 412 µs  3 errors")
    assert progress_line(MEASURING, with_bar=False) == (
        f"{BID} measuring   6.0/13 s  52,311 req  8,412 req/s  p99 412 µs  3 errors")


def test_a_slurm_client_jobs_share_is_labelled_as_such():
    """With client jobs the benchmark job's figures cover its own clients only: the line says so."""
    st = dict(MEASURING, part="clients 1-2 of 4")
    assert progress_line(st, with_bar=False) == (
        f"{BID} measuring   6.0/13 s  52,311 req  8,412 req/s  p99 412 µs  3 errors  "
        "(clients 1-2 of 4)")


def test_requests_mode_counts_towards_the_planned_requests():
    st = dict(MEASURING, planned_s=None, planned_requests=100000, p99_s=None, errors=1)
    assert progress_line(st) == (
        f"{BID} measuring   [##########..........] 6.0 s  52,311/100,000 req  8,412 req/s  "
        "p99 -  1 error")


def test_phases_outside_the_load_name_the_kind():
    assert progress_line({"id": BID, "phase": "deploying", "kind": "redis"}) == \
        f"{BID} deploying   redis ..."
    assert progress_line({"id": BID, "phase": "reporting"}) == f"{BID} reporting ..."


def write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "results" / BID / "run.json", {"status": "completed", "reason": None})
    write(tmp_path / "results" / BID / "summary.json", {
        "throughput": {"rps": 12692.2}, "latency_s": {"p50": 3.33e-5, "p99": 6.66e-4},
        "slo": {"passed": False, "rules": [
            {"rule": "p99 < 100ms", "passed": True, "measured": "666 µs"},
            {"rule": "error_rate < 0.1%", "passed": False, "measured": "1.2%"}]}})
    (tmp_path / "reports" / BID).mkdir(parents=True)
    (tmp_path / "reports" / BID / "report.md").write_text("#")
    return tmp_path


def test_the_result_line(root):
    assert result_line(BID, root) == (
        f"{BID}: completed  12,692 req/s  p50 33.3 µs / p99 666 µs  "
        f"SLO FAIL: error_rate < 0.1% (1.2%)  report: reports/{BID}/report.md")


def test_a_failed_run_points_at_its_log_not_at_figures(root):
    write(root / "results" / BID / "run.json", {"status": "failed", "reason": "redis exited"})
    assert result_line(BID, root) == \
        f"{BID}: failed - redis exited  log: results/{BID}/logs/benchmark.log"
    assert "no run.json" in result_line("BM-20261205-009", root)


def test_plain_lines_on_phase_changes_and_every_ten_seconds_then_the_result(root):
    out = io.StringIO()
    con = Console(root, stream=out, tty=False)
    warm = dict(MEASURING, phase="warmup")
    con.update([warm], now=0.0)
    con.update([warm], now=1.0)                  # same phase, 1 s later: nothing
    con.update([MEASURING], now=2.0)             # a new phase: a line
    later = dict(MEASURING, requests=90000)
    con.update([later], now=2.0 + PLAIN_EVERY_S / 2)
    con.update([later], now=2.0 + PLAIN_EVERY_S)   # 10 s on: a line
    con.update([later], now=2.0 + 3 * PLAIN_EVERY_S)   # nothing moved (a queued job): none
    con.update([dict(MEASURING, phase="done")], now=13.0)
    con.update([dict(MEASURING, phase="done")], now=14.0)   # the result once
    lines = out.getvalue().splitlines()
    assert [ln.split()[1] for ln in lines] == ["warmup", "measuring", "measuring", "completed"]
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()
    assert lines[-1] == result_line(BID, root)


def test_a_tty_redraws_the_line_in_place_and_ends_with_the_result(root):
    out = io.StringIO()
    con = Console(root, stream=out, tty=True)
    con.update([dict(MEASURING, phase="warmup")])
    con.update([MEASURING])
    con.update([dict(MEASURING, phase="done")])
    text = out.getvalue()
    first, second, last = text.split("\r")
    assert first.startswith(f"{BID} warmup") and "\n" not in first
    assert second == "\x1b[J" + progress_line(MEASURING)
    assert last == "\x1b[J" + result_line(BID, root) + "\n"


def test_two_running_benchmarks_are_two_lines_redrawn_together(root):
    out = io.StringIO()
    con = Console(root, stream=out, tty=True)
    other = dict(MEASURING, id="BM-20261205-002")
    con.update([MEASURING, other])
    con.update([MEASURING, other])
    assert out.getvalue().count("\n") == 2 and "\x1b[1A" in out.getvalue()


SNAKEMAKE_LOG = """\
localrule summarize:
aifb: summarize {bid} failed: run.json: not valid JSON (traceback in results/{bid}/logs/summarize.log)
    input: results/{bid}/run.json
    jobid: 2
RuleException:
Error in rule summarize:
    message: None
    jobid: 2
    input: results/{bid}/run.json, results/{bid}/requests.jsonl
    output: results/{bid}/summary.json
    log: results/{bid}/logs/summarize.log (check log file(s) for error details)
Shutting down, this might take some time.
"""


def test_a_failed_step_is_named_with_its_log_and_its_last_lines(root):
    log = root / "results" / BID / "logs" / "summarize.log"
    log.parent.mkdir(parents=True)
    log.write_text("".join(f"line {i}\n" for i in range(40)) + "CorruptFileError: run.json\n")
    sm = root / "results" / "logs" / "snakemake.log"
    sm.parent.mkdir(parents=True)
    earlier = "Error in rule index:\n    log: reports/logs/index.log\n"   # an earlier call's
    sm.write_text(earlier + SNAKEMAKE_LOG.format(bid=BID))
    out = failures(sm, root, start=len(earlier))
    assert out[0] == (f"summarize {BID} failed: run.json: not valid JSON "
                      f"(traceback in results/{BID}/logs/summarize.log)")
    assert out[1] == f"step summarize failed; its log: results/{BID}/logs/summarize.log"
    assert out[-1] == "  CorruptFileError: run.json" and out[2] == "  line 26"


def test_a_workflow_error_quotes_the_end_of_snakemake_s_log(root):
    sm = root / "snakemake.log"
    sm.write_text("Building DAG of jobs...\nWorkflowError: BM-20000101-001 is not registered\n")
    out = failures(sm, root)
    assert out[0].startswith("Snakemake failed; the end of its log snakemake.log")
    assert out[-1] == "  WorkflowError: BM-20000101-001 is not registered"
