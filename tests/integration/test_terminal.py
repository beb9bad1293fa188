"""What `aifb run` and `aifb index` print (issue 18's terminal), against a real Redis: one line
per benchmark and a result line, Snakemake's output in its log file unless --verbose, a failed
step named with its log, and on a TTY (a pty) the live line redrawn in place."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import time

import pytest

from aifb.units import format_seconds
from support import VENV_BIN, aifb, benchmark_id_from, make_workspace, read_json

pytestmark = [pytest.mark.workflow, pytest.mark.redis]
SHORT = ["--set", "load.duration=2s", "--set", "load.warmup=0.5s"]
LOG_LINE = re.compile(r"Snakemake's output goes to (\S+snakemake-\S+\.log)")
BOOKKEEPING = ("localrule run_benchmark", "Finished jobid", "steps (")


def result_re(bid: str) -> str:
    return (rf"^{bid}: completed  [\d,.]+ req/s  p50 [\d.]+ [µm]?s / p99 [\d.]+ [µm]?s  "
            rf"SLO pass  report: reports/{bid}/report\.md$")


@pytest.fixture(scope="module")
def quiet_run(tmp_path_factory):
    ws = make_workspace(tmp_path_factory.mktemp("term"))
    proc = aifb(ws, "run", "recipes/recipe_redis_1client.yaml", *SHORT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return ws, benchmark_id_from(proc.stdout), proc


def test_not_a_tty_plain_lines_per_phase_then_the_result_line(quiet_run):
    ws, bid, proc = quiet_run
    lines = proc.stdout.splitlines()
    assert lines[0] == f"benchmark id: {bid}"
    phases = [ln.split()[1] for ln in lines[1:-1]]
    assert phases[0] == "deploying" and {"measuring", "summarising", "reporting"} <= set(phases)
    # a line when the phase changes (and again every 10 s within one): each phase one stretch
    assert [p for i, p in enumerate(phases) if i == 0 or p != phases[i - 1]] == \
        sorted(set(phases), key=phases.index)
    measuring = next(ln for ln in lines if ln.split()[1] == "measuring")
    assert re.match(rf"^{bid} measuring   [\d.]+/2.5 s  [\d,]+ req  ", measuring), measuring
    assert re.match(result_re(bid), lines[-1]), lines[-1]
    assert "\r" not in proc.stdout and "\x1b" not in proc.stdout
    summary = read_json(ws / "results" / bid / "summary.json")   # the result is the summary's
    assert f"/ p99 {format_seconds(summary['latency_s']['p99'])}  SLO pass" in lines[-1]


def test_snakemake_bookkeeping_is_in_the_log_file_not_on_the_terminal(quiet_run):
    ws, _, proc = quiet_run
    for text in BOOKKEEPING:
        assert text not in proc.stdout + proc.stderr
    path = ws / LOG_LINE.search(proc.stderr).group(1)
    assert path.parent == ws / "results" / "logs"
    log = path.read_text()
    for text in BOOKKEEPING:
        assert text in log
    assert not list(path.parent.glob(".progress-*")), "the progress folder is removed"


def test_verbose_shows_snakemake_s_output(tmp_path):
    ws = make_workspace(tmp_path)
    proc = aifb(ws, "run", "recipes/recipe_redis_1client.yaml", *SHORT, "--verbose")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    bid = benchmark_id_from(proc.stdout)
    for text in BOOKKEEPING:
        assert text in proc.stderr
    assert not LOG_LINE.search(proc.stderr) and not (ws / "results" / "logs").exists()
    assert re.match(result_re(bid), proc.stdout.splitlines()[-1])


def test_a_failed_step_prints_its_log_path_and_last_lines(tmp_path):
    ws = make_workspace(tmp_path)
    (ws / "reports" / "index.json" / "x").mkdir(parents=True)   # the index cannot replace it
    proc = aifb(ws, "index", timeout=120)
    assert proc.returncode == 1
    assert "index failed: IsADirectoryError" in proc.stderr
    assert "aifb: step index failed; its log: reports/logs/index.log" in proc.stderr
    assert "  Traceback (most recent call last):" in proc.stderr
    assert "Error in rule" not in proc.stderr            # Snakemake's own words stay in its log


def test_a_failed_benchmark_s_result_line_points_at_its_log(tmp_path):
    ws = make_workspace(tmp_path)
    proc = aifb(ws, "run", "recipes/recipe_redis_1client.yaml", *SHORT,
                "--set", "service.args=[--no-such-option, x1]")
    assert proc.returncode == 1
    bid = benchmark_id_from(proc.stdout)
    last = proc.stdout.splitlines()[-1]
    assert last.startswith(f"{bid}: failed - redis exited with code 1 before it was ready")
    assert last.endswith(f"  log: results/{bid}/logs/benchmark.log") and "req/s" not in last


def test_on_a_tty_the_line_is_redrawn_in_place_and_ends_with_the_result(tmp_path):
    ws = make_workspace(tmp_path)
    pid, fd = pty.fork()
    if pid == 0:   # the child: aifb with the pty as its terminal
        os.chdir(ws)
        os.environ.update(AIFB_ROOT=str(ws), COLUMNS="200")
        os.execv(str(VENV_BIN / "aifb"), ["aifb", "run", "recipes/recipe_redis_1client.yaml",
                                          *SHORT])
    out = b""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if select.select([fd], [], [], 1)[0]:
            try:
                chunk = os.read(fd, 65536)
            except OSError:   # EIO: the child closed the pty
                break
            if not chunk:
                break
            out += chunk
    _, status = os.waitpid(pid, 0)
    text = out.decode("utf-8", "replace")
    assert os.waitstatus_to_exitcode(status) == 0, text
    bid = benchmark_id_from(text.replace("\r\n", "\n"))
    live = text.split(f"benchmark id: {bid}", 1)[1]
    redraws = live.count("\r\x1b[J")
    assert redraws >= 8, f"the line is redrawn a few times per second: {redraws}\n{text}"
    assert f"\r\x1b[J{bid} measuring   [" in live
    final = live.split("\r\x1b[J")[-1].replace("\r\n", "\n")
    assert re.match(result_re(bid), final.split("\n")[0]), final
    assert "Finished jobid" not in text


def test_dry_run_still_shows_snakemake_s_plan(tmp_path):
    ws = make_workspace(tmp_path, sweeps={"redis_sweep": {
        "service": "Redis", "param": "load.clients", "slo": ["p99 < 100ms"],
        "recipe": "recipes/recipe_redis_1client.yaml", "levels": [1, 2]}})
    proc = subprocess.run([str(VENV_BIN / "aifb"), "sweep", "redis_sweep", "--dry-run"], cwd=ws,
                          env=dict(os.environ, AIFB_ROOT=str(ws)), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "run_benchmark" in proc.stdout + proc.stderr
