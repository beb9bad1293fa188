"""aifb.workflow.steps: the command the per-benchmark rules run (shell:), and its frame
aifb.step.step_log (the step's log, one line on the job's stderr when it fails)."""

import subprocess
import sys

import pytest

from aifb.step import step_log
from aifb.workflow import steps


def test_a_failing_step_logs_its_traceback_and_prints_one_line(tmp_path, capsys):
    bid = "BM-20260101-001"
    run_dir = tmp_path / "results" / bid
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text('{"benchmark_id": "')
    log = run_dir / "logs_summarize.log"
    with pytest.raises(SystemExit) as exc:
        steps.main(["summarize", bid, str(log), str(run_dir / "run.json"),
                    str(run_dir / "summary.json")])
    assert exc.value.code == 1
    assert "Traceback" in log.read_text() and "CorruptFileError" in log.read_text()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"aifb: summarize {bid} failed: "), lines
    assert "not valid JSON" in lines[0] and f"(traceback in {log})" in lines[0]
    assert not (run_dir / "summary.json").exists()


def test_step_log_names_the_step_without_wildcards_and_restores_stderr(tmp_path, capsys):
    log = tmp_path / "index.log"
    before = sys.stderr
    with pytest.raises(SystemExit):
        with step_log(log, "index"):
            print("inside", file=sys.stderr)
            raise ValueError("boom")
    assert sys.stderr is before
    assert "inside" in log.read_text() and "ValueError: boom" in log.read_text()
    assert capsys.readouterr().err.strip() == f"aifb: index failed: ValueError: boom (traceback in {log})"


def test_the_command_lists_its_steps():
    out = subprocess.run([sys.executable, "-m", "aifb.workflow.steps", "--help"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    for name in steps.STEPS:
        assert name in out.stdout
