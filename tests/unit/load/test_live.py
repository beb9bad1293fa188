"""aifb.load.live: the running load's figures for the progress file, sampled off the hot path."""

from __future__ import annotations

from aifb.load.live import MAX_SAMPLES, LiveLoad
from aifb.load.settings import LoadSettings
from aifb.progress import ProgressFile, read_progress

G = 1_000_000_000


def row(t_start: int, t_end: int, ok: bool = True, t_sched: int | None = None) -> tuple:
    return (0, 0, 0, t_sched, t_start, ("get", ok, None if ok else "Timeout", None, 0, 0, None, t_end))


def test_only_measured_ok_latencies_are_sampled_and_open_loop_counts_from_t_sched():
    live = LiveLoad(ProgressFile(None, "BM-1"))
    batch = [row(0, 10), row(0, 20), row(0, 999, ok=False), row(5, 45, t_sched=0)]
    live.sample(batch, ["warmup", "measure", "measure", "measure"])
    assert live.samples == [20, 45]


def test_the_sample_stays_bounded_and_spread_over_the_whole_run():
    live = LiveLoad(ProgressFile(None, "BM-1"))
    n = 0
    for _ in range(400):                       # 400 flushed batches of 128 rows
        batch = [row(0, n + i) for i in range(128)]
        live.sample(batch, ["measure"] * 128)
        n += 128
    assert len(live.samples) <= MAX_SAMPLES + 128
    assert live.stride > 1
    # evenly spread: the sample's quartiles are the run's, within a stride or two
    s = sorted(live.samples)
    for q in (0.25, 0.5, 0.75):
        assert abs(s[int(q * len(s))] - q * n) <= 2 * live.stride


def test_tick_writes_at_most_every_half_second_with_rate_and_p99(tmp_path):
    pf = ProgressFile(tmp_path / "BM-1.json", "BM-1")
    live = LiveLoad(pf)
    live.plan(LoadSettings(clients=1, duration_s=10.0, warmup_s=2.0, cooldown_s=1.0))
    live.sample([row(0, i * 1000) for i in range(1, 101)], ["measure"] * 100)
    live.tick(1 * G, 1 * G, 1000, 0, "warmup")
    assert read_progress(pf.path)["rate"] == 1000.0     # the first write: since the start
    live.tick(int(1.2 * G), int(1.2 * G), 1300, 1, "measure")   # too soon: not written
    assert read_progress(pf.path)["phase"] == "warmup"
    live.tick(2 * G, 2 * G, 3000, 2, "measure")
    state = read_progress(pf.path)
    assert state["phase"] == "measuring" and state["planned_s"] == 13.0
    assert state["requests"] == 3002 and state["errors"] == 2
    assert state["rate"] == 2002.0                               # (3002 - 1000) / 1 s
    assert abs(state["p99_s"] - 99.01e-6) < 1e-9                 # of 1..100 µs, interpolated


def test_requests_mode_plans_a_count():
    pf = ProgressFile(None, "BM-1")
    LiveLoad(pf).plan(LoadSettings(clients=1, requests=5000))
    assert pf.state["planned_requests"] == 5000 and pf.state["planned_s"] is None
