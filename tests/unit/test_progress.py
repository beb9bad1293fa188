"""aifb.progress: the progress file a benchmark's jobs write and the `aifb` command reads."""

from __future__ import annotations

import json

from aifb import progress
from aifb.progress import ProgressFile, mark, read_all, read_progress


def test_without_the_variable_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.delenv(progress.ENV, raising=False)
    pf = ProgressFile.for_benchmark("BM-20261205-001")
    assert not pf.enabled
    pf.update(phase="deploying")          # no error, no file anywhere
    assert pf.state["phase"] == "deploying"
    assert list(tmp_path.iterdir()) == []


def test_update_replaces_the_whole_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    monkeypatch.setenv(progress.ENV, str(tmp_path / "live"))
    pf = ProgressFile.for_benchmark("BM-20261205-001")
    pf.update(phase="deploying", kind="redis")
    pf.update(phase="measuring", requests=12, errors=1)
    path = tmp_path / "live" / "BM-20261205-001.json"
    data = json.loads(path.read_text())
    assert data["id"] == "BM-20261205-001" and data["phase"] == "measuring"
    assert data["kind"] == "redis" and data["requests"] == 12 and data["updated"] > 0
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_a_later_step_keeps_what_the_earlier_wrote(tmp_path, monkeypatch):
    monkeypatch.setenv(progress.ENV, str(tmp_path))
    ProgressFile.for_benchmark("BM-20261205-002").update(phase="cooldown", requests=500, p99_s=0.001)
    mark("BM-20261205-002", "summarising")
    state = read_progress(tmp_path / "BM-20261205-002.json")
    assert state["phase"] == "summarising" and state["requests"] == 500 and state["p99_s"] == 0.001


def test_the_reader_tolerates_missing_torn_and_unknown_files(tmp_path):
    assert read_progress(tmp_path / "none.json") is None
    (tmp_path / "BM-1.json").write_text('{"id": "BM-1", "pha')
    (tmp_path / "BM-2.json").write_text('{"id": "BM-2", "phase": "flying"}')
    (tmp_path / "BM-3.json").write_text('["not", "a", "dict"]')
    (tmp_path / "BM-5.json").write_text('{"id": "BM-5", "phase": "done"}')
    (tmp_path / "BM-4.json").write_text('{"id": "BM-4", "phase": "warmup"}')
    assert [s["id"] for s in read_all(tmp_path)] == ["BM-4", "BM-5"]
