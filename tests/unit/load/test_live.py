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


def test_pooled_p99_of_two_workers_weighs_each_request_the_same(tmp_path):
    """Two workers: a fast one (100k requests of 1-2 ms, thinned to a stride of 32) and a slow
    one (4k of 10-50 ms, stride 1), relayed in messages as the workers' LiveRelays send them.
    The pooled p99 is the p99 of all their requests together, within the sample's resolution;
    pooling the values without their strides would put it among the slow worker's."""
    import random

    from aifb.load.figures import pct
    from aifb.load.live import LiveRelay

    rng = random.Random(7)
    fast = [rng.randrange(1_000_000, 2_000_000) for _ in range(100_000)]
    slow = [rng.randrange(10_000_000, 50_000_000) for _ in range(4_000)]
    pf = ProgressFile(tmp_path / "BM-1.json", "BM-1")
    parent = LiveLoad(pf)
    sent = []
    for k, lat in enumerate((fast, slow)):
        relay = LiveRelay(lambda *m, k=k: sent.append((k, m)))
        for i in range(0, len(lat), 128):         # flushed batches, a message every 2 of them
            relay.sample([row(0, t) for t in lat[i:i + 128]], ["measure"] * 128)
            if i // 128 % 2 == 1:
                relay.due = 0
                relay.tick(i, i, i, 0, "measure")
        relay.due = 0
        relay.tick(len(lat), len(lat), len(lat), 0, "measure")
    for k, (_, _, _, _, values, stride) in sent:
        assert len(values) <= 512
        parent.pool(k, values, stride)
    assert parent.workers[0].stride >= 32 and parent.workers[1].stride == 1
    union = sorted(fast + slow)
    truth = pct(union, 0.99)
    parent.tick(G, G, len(union), 0, "measure")
    got = read_progress(pf.path)["p99_s"] * G
    # the resolution: the union's percentiles a stride's share of its rank either side
    n, s = len(union), parent.workers[0].stride
    lo, hi = union[int(0.99 * n - 2 * s)], union[int(0.99 * n + 2 * s)]
    assert lo <= got <= hi, (got, truth, lo, hi)
    unweighted = pct(sorted(parent.workers[0].samples + parent.workers[1].samples), 0.99)
    assert unweighted > hi                      # the strides matter here


def test_pooled_pct_equals_pct_of_the_replicated_values():
    """Each value weighs its stride / the smallest: the percentile is pct's (Hyndman-Fan 7) of
    the list with every value repeated that often; random small cases, ties and empties."""
    import random

    from aifb.load.figures import pct
    from aifb.load.live import Sampler, pooled_pct

    rng = random.Random(1)
    for _ in range(500):
        parts = []
        for _ in range(rng.randint(1, 4)):
            p = Sampler()
            p.samples = [rng.randrange(0, 100) for _ in range(rng.randint(0, 30))]
            p.stride = 2 ** rng.randint(0, 3)
            parts.append(p)
        full = [p for p in parts if p.samples]
        if not full:
            assert pooled_pct(parts, 0.99) is None
            continue
        low = min(p.stride for p in full)
        rep = sorted(v for p in full for v in p.samples for _ in range(p.stride // low))
        for q in (0.0, 0.01, 0.37, 0.5, 0.9, 0.99, 1.0):
            assert pooled_pct(parts, q) == pct(rep, q), (q, rep)


def test_pooling_many_small_messages_keeps_the_stride_honest():
    """A slow worker's messages carry a value or two: thinning each message on its own would
    keep the first of every one and give its requests more weight than its stride says."""
    from aifb.load.live import Sampler

    pool = Sampler()
    for i in range(20_000):
        pool.add([i], 1)
    assert pool.stride > 1 and len(pool.samples) <= MAX_SAMPLES
    assert abs(len(pool.samples) * pool.stride - 20_000) <= 2 * pool.stride
