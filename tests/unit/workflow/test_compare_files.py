"""`aifb compare` from files: synthetic results/<id>/ (run.json, requests.jsonl, summary.json) of
known latencies, registered as plain runs and as sweep points with repeats; the report files;
bad input as one-line errors with exit 2."""

import json
from pathlib import Path

import pytest

from aifb.analysis.compare_runs import NO_REPEATS
from aifb.analysis.summary import write_summary
from aifb.cli import main
from aifb.workflow import registry
from aifb.workflow.compare import sweep_levels
from support import synthetic_run

synthetic = synthetic_run()

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write(root: Path, bid: str, *, seed: int, scale: float = 1.0, clients: int = 2,
          host: str = "testhost", summarise: bool = True) -> None:
    run_dir = root / "results" / bid
    synthetic.write_run(run_dir, seed=seed, latency_scale=scale, per_client=400)
    run = json.loads((run_dir / "run.json").read_text())
    run["benchmark_id"] = bid
    run["recipe"]["load"]["clients"] = clients
    run["environment"]["hostname"] = host
    (run_dir / "run.json").write_text(json.dumps(run))
    if summarise:
        write_summary(run_dir, run_dir / "summary.json")


def register(root: Path, sweep: dict | None = None) -> str:
    entry = registry.make_entry(synthetic.run_json()["recipe"])
    if sweep:
        return registry.allocate_sweep_point(sweep, entry, root, day="20260109")
    return registry.allocate(entry, root, day="20260109")


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """Two plain runs (the second 3x slower, 4 clients, another host) and a sweep `s` with
    levels 1, 2 (the same latencies, other seeds) and 4 (twice as slow), 3 repeats each."""
    root = tmp_path_factory.mktemp("cmp")
    plain = [register(root), register(root)]
    write(root, plain[0], seed=1)
    write(root, plain[1], seed=2, scale=3.0, clients=4, host="otherhost")
    seed = 10
    levels = {}
    for level, scale in ((1, 1.0), (2, 1.0), (4, 2.0)):
        for repeat in range(3):
            bid = register(root, {"name": "s", "version": 1, "level": level, "repeat": repeat,
                                  "epoch": 1})
            write(root, bid, seed=seed, scale=scale)
            seed += 1
            levels.setdefault(level, []).append(bid)
    for level, scale in ((1, 1.0), (2, 1.5)):  # sweep `t`: one run a level, level 2 1.5x slower
        bid = register(root, {"name": "t", "version": 1, "level": level, "repeat": 0, "epoch": 1})
        write(root, bid, seed=seed, scale=scale)
        seed += 1
    return root, plain, levels


def compare(monkeypatch, root, *names):
    monkeypatch.setenv("AIFB_ROOT", str(root))
    return main(["compare", *names])


def test_two_ids_without_repeats(ws, monkeypatch, capsys):
    root, (a, b), _ = ws
    assert compare(monkeypatch, root, a, b) == 0
    out = capsys.readouterr().out
    assert f"reports/compare_{a}_{b}.md" in out and NO_REPEATS in out
    c = json.loads((root / "reports" / f"compare_{a}_{b}.json").read_text())
    p50 = next(m for m in c["metrics"] if m["metric"] == "p50")["cells"][1]
    assert p50["rel_delta"] == pytest.approx(2.0, rel=0.1)  # 3x the latency: +200 %
    assert p50["noise"] == NO_REPEATS
    rps = next(m for m in c["metrics"] if m["metric"] == "rps")["cells"][1]
    assert rps["rel_delta"] < -0.5  # closed loop: 3x slower is far fewer requests/s
    assert {"key": "load.clients", "values": [2, 4]} in c["recipe_diff"]
    assert [d["key"] for d in c["environment_diff"]] == ["host"]
    md = (root / "reports" / f"compare_{a}_{b}.md").read_text()
    assert "| latency p50 |" in md and "+2" in md and "`load.clients`" in md
    for png in ("latency_cdf.png", "throughput_over_time.png"):
        data = (root / "reports" / f"compare_{a}_{b}_plots" / png).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 10_000


def test_a_sweeps_levels_within_and_beyond_noise(ws, monkeypatch, capsys):
    root, _, levels = ws
    assert compare(monkeypatch, root, "s") == 0
    c = json.loads((root / "reports" / "compare_s.json").read_text())
    assert [s["label"] for s in c["subjects"]] == ["s@1", "s@2", "s@4"]
    assert [s["ids"] for s in c["subjects"]] == [levels[1], levels[2], levels[4]]
    for metric in ("rps", "p50", "p99"):
        cells = next(m for m in c["metrics"] if m["metric"] == metric)["cells"]
        assert cells[1]["noise"] == "within noise", (metric, cells[1])  # same latencies
        assert cells[2]["noise"] == "beyond noise", (metric, cells[2])  # twice as slow
    p50 = next(m for m in c["metrics"] if m["metric"] == "p50")["cells"]
    assert p50[2]["rel_delta"] == pytest.approx(1.0, rel=0.1)
    assert "3 repeats" in c["noise"][0]["source"]
    assert "within noise" in capsys.readouterr().out


def test_an_id_of_a_sweep_level_takes_its_repeats_noise(ws, monkeypatch):
    root, _, levels = ws
    assert compare(monkeypatch, root, levels[1][0], levels[4][0]) == 0
    c = json.loads((root / "reports" / f"compare_{levels[1][0]}_{levels[4][0]}.json").read_text())
    assert next(m for m in c["metrics"] if m["metric"] == "p50")["cells"][1]["beyond_noise"] is True


def test_two_sweeps_level_by_level(ws, monkeypatch, capsys):
    root = ws[0]
    assert compare(monkeypatch, root, "s", "t") == 0
    out = capsys.readouterr().out
    assert "reports/compare_s_t_1.md" in out and "reports/compare_s_t_2.md" in out
    assert not (root / "reports" / "compare_s_t_4.json").exists()  # t has no level 4
    one = json.loads((root / "reports" / "compare_s_t_1.json").read_text())
    two = json.loads((root / "reports" / "compare_s_t_2.json").read_text())
    assert [s["label"] for s in two["subjects"]] == ["s@2", "t@2"]
    p50 = {c["baseline"]: next(m for m in c["metrics"] if m["metric"] == "p50")["cells"][1]
           for c in (one, two)}
    assert p50["s@1"]["noise"] == "within noise"  # the same latencies, s's repeats as noise
    assert p50["s@2"]["noise"] == "beyond noise"
    assert p50["s@2"]["rel_delta"] == pytest.approx(0.5, rel=0.15)


@pytest.mark.parametrize("names, message", [
    (["BM-20260109-001"], "one run is nothing to compare"),
    (["BM-20260109-001", "BM-20990101-001"], "BM-20990101-001: unknown benchmark ID"),
    (["nosuchsweep"], "nosuchsweep is neither a benchmark ID"),
    (["BM-20260109-001", "s"], "mixes IDs and sweep names"),
    (["s", "t", "s"], "s given twice"),
    (["s", "t", "nosuchsweep"], "nosuchsweep is neither"),
])
def test_bad_input_is_one_line_and_exit_2(ws, monkeypatch, capsys, names, message):
    root = ws[0]
    assert compare(monkeypatch, root, *names) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_a_run_without_summary(tmp_path, monkeypatch, capsys):
    a, b = register(tmp_path), register(tmp_path)
    write(tmp_path, a, seed=1)
    write(tmp_path, b, seed=2, summarise=False)
    assert compare(monkeypatch, tmp_path, a, b) == 2
    err = capsys.readouterr().err
    assert f"{b}: no results/{b}/summary.json" in err and len(err.strip().splitlines()) == 1


def test_a_sweep_compares_its_newest_version_and_epoch():
    def entry(bid, version, level, repeat=0, epoch=1):
        return {"benchmark_id": bid, "sweep": {"name": "v", "version": version, "level": level,
                                               "repeat": repeat, "epoch": epoch}}
    entries = [entry("BM-20260109-001", 9, 1), entry("BM-20260109-002", 9, 2),
               entry("BM-20260109-003", 10, 1), entry("BM-20260109-004", 10, 2),
               entry("BM-20260109-005", 10, 1, epoch=2), entry("BM-20260109-006", 10, 2, repeat=1)]
    assert sweep_levels("v", entries) == {1: ["BM-20260109-005"],
                                          2: ["BM-20260109-004", "BM-20260109-006"]}
    assert sweep_levels("w", entries) == {}
