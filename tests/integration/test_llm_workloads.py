"""Production-like LLM workloads (issue 16) against the FAKE servers of tests/fakes/ (their
timings and request log are exactly known): request ids, length distributions, shared
prefixes with the cache state, multi-turn conversations. The real llama-server checks are in
tests/integration/test_llm_llamacpp.py."""

from __future__ import annotations

import json
import urllib.request

import pytest

from aifb.clock import RunClock
from aifb.load.engine import run_load_sync
from aifb.errors import ServiceError
from aifb.clients.llm.openai import VLLMClient
from test_llm_fakes import (ITL_MS, TTFT_MS, fake_ollama, fake_vllm, measured,  # noqa: F401
                            start_ollama, start_openai, stop)

pytestmark = pytest.mark.slow


def run(tmp_path, kind, endpoint, workload, *, concurrency=1, clients=1, duration=0.6,
        warmup=0.1, identity=None, processes=1, name="r"):
    path = tmp_path / f"{name}.jsonl"
    stats = run_load_sync(kind=kind, endpoint=endpoint, workload=workload,
                          load={"clients": clients, "concurrency": concurrency,
                                "duration_s": duration, "warmup_s": warmup, "timeout_s": 10.0,
                                "processes": processes},
                          seed=7, records_path=path, clock=RunClock(), log=lambda m: None,
                          identity=identity)
    recs = [json.loads(line) for line in path.read_text().splitlines()]
    return stats, recs


def fake_log(endpoint) -> list[dict]:
    with urllib.request.urlopen(endpoint + "/fake/log", timeout=5) as r:
        return json.loads(r.read())


# ----------------------------------------------------------------------------- request ids

@pytest.mark.parametrize("kind,api", [("vllm", "openai-chat"), ("ollama", "ollama-chat"),
                                      ("ollama", "openai-completions")])
def test_request_ids_in_headers_and_records(fake_vllm, fake_ollama, tmp_path, kind, api):
    endpoint = fake_vllm if kind == "vllm" else fake_ollama
    before = len(fake_log(endpoint))
    wl = {"api": api, "prompts": {"input_tokens": 4, "output_tokens": 3}}
    if kind == "ollama":
        wl["model"] = "llama2"
    stats, recs = run(tmp_path, kind, endpoint, wl, concurrency=2, clients=2,
                      identity={"benchmark_id": "b-123"})
    ids = [r["request_id"] for r in recs]
    assert all(ids) and len(set(ids)) == len(ids)
    for c in (0, 1):
        seqs = sorted(int(i.rsplit("-", 1)[1]) for i in ids if i.startswith(f"b-123-{c}-"))
        assert seqs == list(range(1, len(seqs) + 1)) and seqs       # per client, from 1
    seen = [e["request_id"] for e in fake_log(endpoint)[before:]]
    assert set(ids) <= set(seen)                       # the server saw exactly these headers
    assert stats["client"]["request_id_header"] == "X-Request-Id"


def test_request_id_header_name_and_off(fake_vllm, tmp_path):
    before = len(fake_log(fake_vllm))
    wl = {"prompts": {"input_tokens": 4, "output_tokens": 2}, "request_id_header": False}
    _, recs = run(tmp_path, "vllm", fake_vllm, wl, duration=0.3)
    assert all(r["request_id"].startswith("aifb-0-") for r in recs)   # kept in the record
    assert all(e["request_id"] is None for e in fake_log(fake_vllm)[before:])
    with pytest.raises(ServiceError, match="request_id_header"):
        VLLMClient(fake_vllm, {"request_id_header": "bad header"}, 1)


def test_request_ids_over_processes_are_unique(fake_vllm, tmp_path):
    wl = {"prompts": {"input_tokens": 4, "output_tokens": 2}}
    _, recs = run(tmp_path, "vllm", fake_vllm, wl, clients=4, processes=2, duration=0.5,
                  identity={"benchmark_id": "p"})
    ids = [r["request_id"] for r in recs]
    assert len(set(ids)) == len(ids) and {i.split("-")[1] for i in ids} == {"0", "1", "2", "3"}


def test_failed_requests_keep_their_id(tmp_path):
    proc, url = start_openai("fake-model", "--ttft-ms", "5", "--itl-ms", "1")
    try:
        wl = {"prompts": {"input_tokens": 4, "output_tokens": 4},
              "extra_body": {"fake_error_after": 1}}
        _, recs = run(tmp_path, "vllm", url, wl, duration=0.3)
    finally:
        stop(proc)
    assert recs and all(not r["ok"] and r["request_id"] for r in recs)


# ----------------------------------------------------------------------------- length distributions

def test_length_distributions_are_seeded_and_have_their_moments():
    import random
    import statistics

    from aifb.clients.llm.shapes import Lengths

    for spec, mean, sd in (({"dist": "normal", "mean": 200, "sd": 40}, 200, 40),
                           ({"dist": "lognormal", "mean": 300, "sd": 150}, 300, 150),
                           ({"dist": "uniform", "min": 10, "max": 30}, 20, 20 / 12 ** 0.5)):
        d = Lengths.parse(spec, "prompts.input_tokens")
        xs = [d.draw(random.Random(f"s:{i}")) for i in range(4000)]
        assert xs[:50] == [d.draw(random.Random(f"s:{i}")) for i in range(50)]  # seeded
        assert abs(statistics.fmean(xs) - mean) < 0.05 * mean, spec
        assert abs(statistics.stdev(xs) - sd) < 0.1 * sd, spec
        assert min(xs) >= 1
    clipped = Lengths.parse({"dist": "normal", "mean": 50, "sd": 100, "min": 20, "max": 60}, "x")
    xs = [clipped.draw(random.Random(i)) for i in range(500)]
    assert min(xs) == 20 and max(xs) == 60
    assert Lengths.parse({"dist": "fixed", "value": 7}, "x").draw(random.Random(1)) == 7
    # the integer forms draw exactly as before (random.randint), so old seeds keep their prompts
    r1, r2 = random.Random(3), random.Random(3)
    assert Lengths.parse([5, 9], "x").draw(r1) == r2.randint(5, 9)
    for bad, msg in (({"dist": "gamma"}, "dist"), ({"dist": "normal", "mean": 5}, "sd"),
                     ({"dist": "normal", "mean": 5, "sd": 1, "value": 3}, "not value"),
                     ({"dist": "lognormal", "mean": -1, "sd": 1}, "mean > 0"), (True, "integer")):
        with pytest.raises(ServiceError, match=msg):
            Lengths.parse(bad, "prompts.output_tokens")


def test_lognormal_output_lengths_and_ignore_eos_reach_the_server(fake_vllm, tmp_path):
    before = len(fake_log(fake_vllm))
    wl = {"prompts": {"input_tokens": {"dist": "normal", "mean": 12, "sd": 3, "min": 4},
                      "output_tokens": {"dist": "lognormal", "mean": 6, "sd": 3, "max": 20}},
          "ignore_eos": True}
    stats, recs = run(tmp_path, "vllm", fake_vllm, wl, concurrency=4, duration=0.8)
    ok = [r for r in recs if r["ok"]]
    assert len(ok) > 20
    assert all(1 <= r["max_tokens"] <= 20 and r["output_tokens"] == r["max_tokens"] for r in ok)
    assert len({r["max_tokens"] for r in ok}) > 3 and len({r["prompt_tokens"] for r in ok}) > 3
    assert all(r["prompt_tokens"] >= 4 for r in ok)
    log = fake_log(fake_vllm)[before:]
    assert log and all(e["ignore_eos"] is True for e in log if e["max_tokens"] != 1)
    p = stats["client"]["prompts"]
    assert p["output_tokens"] == {"dist": "lognormal", "mean": 6, "sd": 3, "max": 20}


def test_length_distribution_in_a_recipe_is_schema_checked():
    from aifb.errors import RecipeError
    from aifb.workflow.recipe import validate

    base = {"name": "x", "category": "inference",
            "service": {"kind": "llamacpp", "endpoint": "http://127.0.0.1:1"},
            "load": {"clients": 1, "concurrency": 1, "duration": "1s"}}
    validate(dict(base, workload={"prompts": {"input_tokens": {"dist": "lognormal", "mean": 100,
                                                               "sd": 50}}}))
    with pytest.raises(RecipeError, match="input_tokens.dist: 'zipf'"):
        validate(dict(base, workload={"prompts": {"input_tokens": {"dist": "zipf"}}}))


# ----------------------------------------------------------------------------- shared prefixes, cache

def systems(entries):
    return [e["messages"][0]["content"] for e in entries
            if e.get("messages") and e["messages"][0]["role"] == "system"]


def test_shared_prefix_groups_fraction_and_cold_salt(tmp_path):
    proc, url = start_openai("fake-model", "--ttft-ms", "40", "--itl-ms", "1",
                             "--cache-ttft-ms", "5")
    try:
        wl = {"prompts": {"input_tokens": 6, "output_tokens": 2},
              "shared_prefix": {"tokens": 30, "fraction": 0.5, "groups": 3}}
        stats, recs = run(tmp_path, "vllm", url, wl, concurrency=2, duration=1.0,
                          identity={"benchmark_id": "c1", "salt": "s4lt1"}, name="c1")
        log1 = fake_log(url)
        _, recs2 = run(tmp_path, "vllm", url, wl, concurrency=2, duration=0.5,
                       identity={"benchmark_id": "c2", "salt": "s4lt2"}, name="c2")
        log2 = fake_log(url)[len(log1):]
    finally:
        stop(proc)
    measured_ids = {r["request_id"] for r in recs}
    mine = [e for e in log1 if e["request_id"] in measured_ids]
    sys1 = systems(mine)
    assert 0.3 < len(sys1) / len(mine) < 0.7                    # fraction 0.5
    assert len(set(sys1)) == 3                                   # 3 groups
    assert all(s.startswith("s4lt1 ") and len(s.split()) == 31 for s in sys1)  # 30 words + salt
    # prompts without a prefix are salted too (their user message)
    users = [e["messages"][0]["content"] for e in mine if e["messages"][0]["role"] == "user"]
    assert users and all(u.startswith("s4lt1 ") for u in users)
    # within the run the groups share (hits after the first of each group) ...
    assert sum(e["cache_hit"] for e in mine) >= len(sys1) - 3 - 2
    # ... but the next run's salt is new: its first request of each group misses again
    sys2 = [e for e in log2 if systems([e])]
    assert all(systems([e])[0].startswith("s4lt2 ") for e in sys2)
    first = {}
    for e in sys2:
        first.setdefault(systems([e])[0], e)
    assert len(first) == 3 and not any(e["cache_hit"] for e in first.values())
    c = stats["client"]["cache"]
    assert c["state"] == "cold" and c["salt"] == "s4lt1"
    assert c["shared_prefix"] == {"tokens": 30, "fraction": 0.5, "groups": 3}


@pytest.mark.parametrize("kind", ["vllm", "ollama"])
def test_warm_cache_replays_the_prefixes_before_measuring(tmp_path, kind):
    if kind == "vllm":
        proc, url = start_openai("fake-model", "--ttft-ms", "60", "--itl-ms", "1",
                                 "--cache-ttft-ms", "5")
        wl = {}
    else:
        proc, url = start_ollama(ttft_ms=60, itl_ms=1, cache_ttft_ms=5, models="llama2",
                                 load_ms=1)
        wl = {"api": "ollama-chat"}
    try:
        wl.update({"prompts": {"input_tokens": 6, "output_tokens": 2}, "cache": "warm",
                   "shared_prefix": {"tokens": 20, "groups": 2}})
        stats, recs = run(tmp_path, kind, url, wl, concurrency=2, duration=0.6, warmup=0.0)
        log = fake_log(url)
        cold_wl = dict(wl, cache="cold")
        stats_c, recs_c = run(tmp_path, kind, url, cold_wl, duration=0.3, warmup=0.0, name="cold")
    finally:
        stop(proc)
    warmers = [e for e in log if e["request_id"] is None and systems([e])]
    assert len(warmers) == 2 and all(e["max_tokens"] == 1 for e in warmers)
    m = [r for r in recs if r["ok"]]
    ids = {r["request_id"] for r in m}
    assert m and all(e["cache_hit"] for e in log if e["request_id"] in ids)   # every one a hit
    ttft = sorted(r["t_first"] - r["t_start"] for r in m)
    assert ttft[len(ttft) // 2] < 0.03
    if kind == "vllm":   # usage.prompt_tokens_details.cached_tokens (Ollama has no such count)
        assert all(r["cached_tokens"] > 0 for r in m)
    assert stats["client"]["cache"]["state"] == "warm"
    assert stats["client"]["cache"]["warmed"]["prefixes_sent"] == 2
    assert all(not systems([e])[0][0].isdigit() for e in warmers)       # not salted
    # cold on the same server: the run's first request of each group pays the full TTFT
    first = min(recs_c, key=lambda r: r["t_start"])
    assert first["t_first"] - first["t_start"] > 0.05


def test_cache_state_in_run_json_summary_and_report(fake_vllm, tmp_path):
    from test_llm_fakes import run_recipe

    from aifb.reporting.report import build_report

    wl = {"prompts": {"input_tokens": 4, "output_tokens": 2},
          "shared_prefix": {"tokens": 8, "fraction": 0.25, "groups": 2}}
    bid, out = run_recipe(tmp_path, {"kind": "vllm", "endpoint": fake_vllm}, wl, duration="0.5s")
    run_dir = tmp_path / "results" / bid
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "completed" and len(run["salt"]) == 8
    assert run["clients"]["implementation"]["cache"]["salt"] == run["salt"]
    recs = [json.loads(x) for x in (run_dir / "requests.jsonl").read_text().splitlines()]
    assert all(r["request_id"].startswith(f"{bid}-0-") for r in recs)
    from aifb.analysis.summary import summarize

    build_report(run_dir, tmp_path / "report")
    summary = summarize(run_dir)
    assert summary["llm_workload"]["cache"]["state"] == "cold"
    md = (tmp_path / "report" / "report.md").read_text()
    assert "Prefix cache: **cold**" in md and run["salt"] in md
    assert "25% of the requests start with one of 2 system prompt(s) of 8 tokens" in md


# ----------------------------------------------------------------------------- multi-turn

def conversations(recs):
    convs: dict = {}
    for r in sorted(recs, key=lambda r: r["t_start"]):
        convs.setdefault(r["conversation"], []).append(r)
    return convs


@pytest.mark.parametrize("kind,api", [("vllm", "openai-chat"), ("ollama", "ollama-chat"),
                                      ("vllm", "openai-completions")])
def test_multi_turn_sends_the_history_with_the_actual_replies(fake_vllm, fake_ollama, tmp_path,
                                                              kind, api):
    endpoint = fake_vllm if kind == "vllm" else fake_ollama
    before = len(fake_log(endpoint))
    wl = {"api": api, "prompts": {"input_tokens": 5, "output_tokens": [2, 4]}, "turns": 3}
    if kind == "ollama":
        wl["model"] = "llama2"
    stats, recs = run(tmp_path, kind, endpoint, wl, concurrency=2, duration=1.0, warmup=0.0,
                      identity={"benchmark_id": "mt", "salt": "zz9"})
    log = {e["request_id"]: e for e in fake_log(endpoint)[before:]}
    convs = conversations(recs)
    full = [c for c in convs.values() if len(c) == 3]
    assert len(full) >= 2
    for c in full:
        assert [r["turn"] for r in c] == [1, 2, 3]
        assert len({(r["client"], r["worker"]) for r in c}) == 1      # one slot, in order
        for a, b in zip(c, c[1:]):
            assert b["t_start"] >= a["t_end"]                         # one turn at a time
        sent = [log[r["request_id"]] for r in c]
        reply = lambda r: "".join(f" tok{i}" for i in range(r["output_tokens"]))  # noqa: E731
        if api.endswith("chat"):
            m3 = sent[2]["messages"]
            assert [m["role"] for m in m3] == ["user", "assistant"] * 2 + ["user"]
            assert m3[:2] == sent[1]["messages"][:2] and m3[:3] == sent[1]["messages"]
            assert m3[1]["content"] == reply(c[0]) and m3[3]["content"] == reply(c[1])
            assert m3[0]["content"].startswith("zz9 ") and not m3[2]["content"].startswith("zz9")
        else:
            p3 = sent[2]["prompt"]
            assert p3.startswith(sent[1]["prompt"]) and reply(c[1]) in p3
            assert p3.startswith("zz9 ")
        # prompts grow with the history
        assert c[0]["prompt_tokens"] < c[1]["prompt_tokens"] < c[2]["prompt_tokens"]
    assert stats["client"]["conversations"]["turns"] == [3, 3]
    from aifb.schemas import validation_errors
    assert all(validation_errors(r, "request.schema.yaml") == [] for r in recs)


def test_think_time_separates_turns_but_not_latencies(fake_vllm, tmp_path):
    wl = {"prompts": {"input_tokens": 4, "output_tokens": 2}, "turns": [2, 3],
          "think_time": "150ms"}
    _, recs = run(tmp_path, "vllm", fake_vllm, wl, concurrency=2, duration=1.5, warmup=0.0)
    gaps, ttfts = [], []
    for c in conversations(recs).values():
        assert len(c) <= 3
        gaps += [b["t_start"] - a["t_end"] for a, b in zip(c, c[1:])]
        ttfts += [r["t_first"] - r["t_start"] for r in c]
    assert gaps and min(gaps) >= 0.15
    assert sorted(ttfts)[len(ttfts) // 2] < TTFT_MS / 1e3 + 0.02    # think time not in TTFT


def test_ttft_and_e2el_by_turn_in_summary_and_report(fake_vllm, tmp_path):
    from test_llm_fakes import run_recipe

    from aifb.reporting.report import build_report
    from aifb.analysis.summary import summarize

    wl = {"prompts": {"input_tokens": 4, "output_tokens": 3}, "turns": 2}
    bid, _ = run_recipe(tmp_path, {"kind": "vllm", "endpoint": fake_vllm}, wl, duration="1s")
    run_dir = tmp_path / "results" / bid
    s = summarize(run_dir)["llm_workload"]
    assert [row["turn"] for row in s["by_turn"]] == [1, 2]
    assert all(abs(row["ttft_s"]["p50"] - TTFT_MS / 1e3) < 0.01 for row in s["by_turn"])
    assert all(abs(row["e2el_s"]["p50"] - (TTFT_MS + 2 * ITL_MS) / 1e3) < 0.015
               for row in s["by_turn"])
    build_report(run_dir, tmp_path / "report")
    md = (tmp_path / "report" / "report.md").read_text()
    assert "| turn | n | TTFT p50 |" in md and "\n| 2 | " in md


def test_turns_and_think_time_errors_are_named():
    for wl, msg in (({"turns": 0}, "turns"), ({"turns": {"dist": "normal", "mean": 2, "sd": 1}},
                                              "turns"), ({"think_time": "soon"}, "think_time")):
        with pytest.raises(ServiceError, match=msg):
            VLLMClient("http://127.0.0.1:1", wl, 1)


# ----------------------------------------------------------------------------- trace replay

def write_trace(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_trace_replay_keeps_the_traces_times_and_lengths(fake_vllm, tmp_path):
    import random

    from aifb.workflow.recipe import load_settings, validate

    rng = random.Random(5)
    t, rows = 1000.0, []
    for i in range(40):
        t += rng.choice([5, 20, 60, 150])
        rows.append({"timestamp": t, "input_length": rng.randint(4, 30),
                     "output_length": rng.randint(1, 4), "hash_ids": [i % 2, 100 + i]})
    trace = write_trace(tmp_path / "t.jsonl", rows)
    recipe = validate({"name": "tr", "category": "inference",
                       "service": {"kind": "vllm", "endpoint": fake_vllm},
                       "workload": {"prompts": {"source": "trace", "path": str(trace)}},
                       "load": {"clients": 2, "concurrency": 4, "arrival": "trace",
                                "speedup": 2, "duration": "2.5s", "warmup": "0s"}})
    settings = load_settings(recipe)
    before = len(fake_log(fake_vllm))
    path = tmp_path / "r.jsonl"
    run_load_sync(kind="vllm", endpoint=fake_vllm, workload=recipe["workload"], load=settings,
                  seed=1, records_path=path, clock=RunClock(), log=lambda m: None)
    recs = [json.loads(x) for x in path.read_text().splitlines()]
    assert len(recs) == 40 and all(r["ok"] for r in recs)
    t_first_sched = min(r["t_sched"] for r in recs)
    for r in recs:
        row = rows[r["client"] + 2 * r["seq"]]               # client c: rows c, c + 2, ...
        planned = (row["timestamp"] - rows[0]["timestamp"]) / 1e3 / 2
        assert abs(r["t_sched"] - t_first_sched - planned) < 1e-3      # the trace's time / 2
        assert r["max_tokens"] == row["output_length"] == r["output_tokens"]
        assert r["prompt_tokens"] == row["input_length"]               # words, salt included
    # sent when planned: the median lag behind t_sched (under 1 ms on an idle machine; this
    # one is shared, 2.8 ms seen while a llama-server test ran beside it)
    lags = sorted(r["t_start"] - r["t_sched"] for r in recs)
    assert lags[len(lags) // 2] < 5e-3
    # hash id 0 or 1 first: requests with the same first block share their first words
    sent = {e["request_id"]: e["messages"][-1]["content"].split()[1:4]
            for e in fake_log(fake_vllm)[before:]}
    by_block: dict = {}
    for r in recs:
        by_block.setdefault(rows[r["client"] + 2 * r["seq"]]["hash_ids"][0], set()).add(
            tuple(sent[r["request_id"]]))
    assert all(len(v) == 1 for v in by_block.values()) and len(by_block) == 2


def test_the_shipped_trace_is_the_generators_and_valid():
    from pathlib import Path

    from aifb.clients.llm.trace import generate, read_trace

    path = Path(__file__).resolve().parents[2] / "data" / "traces" / "sample.jsonl"
    rows = read_trace(path)
    assert len(rows) == 200
    gen = generate(200, 16)
    assert [(r["timestamp"], r["input_length"], r["output_length"], r["hash_ids"]) for r in rows] == \
        [(g["timestamp"], g["input_length"], g["output_length"], g["hash_ids"]) for g in gen]


def test_trace_errors_are_named(tmp_path):
    from aifb.errors import ConfigError
    from aifb.workflow.recipe import load_settings, validate
    from aifb.clients.llm.trace import read_trace

    bad = write_trace(tmp_path / "b.jsonl", [{"timestamp": 5, "input_length": 3, "output_length": 1},
                                            {"timestamp": 1, "input_length": 3, "output_length": 1}])
    with pytest.raises(ConfigError, match="line 2: timestamps must not decrease"):
        read_trace(bad)
    (tmp_path / "c.jsonl").write_text('{"timestamp": 1, "input_length": 0, "output_length": 1}\n')
    with pytest.raises(ConfigError, match="line 1: input_length"):
        read_trace(tmp_path / "c.jsonl")
    recipe = validate({"name": "tr", "category": "inference",
                       "service": {"kind": "vllm", "endpoint": "http://127.0.0.1:1"},
                       "load": {"clients": 1, "arrival": "trace", "duration": "1s"}})
    with pytest.raises(ConfigError, match="workload.prompts.source: trace"):
        load_settings(recipe)


# ----------------------------------------------------------------------------- embeddings

@pytest.mark.parametrize("kind,api", [("vllm", "openai-embeddings"), ("ollama", "ollama-embed"),
                                      ("ollama", "openai-embeddings")])
def test_embeddings_batches_and_records(fake_vllm, fake_ollama, tmp_path, kind, api):
    endpoint = fake_vllm if kind == "vllm" else fake_ollama
    before = len(fake_log(endpoint))
    wl = {"api": api, "batch_size": 4, "prompts": {"input_tokens": [5, 9]}}
    if kind == "ollama":
        wl["model"] = "llama2"
    stats, recs = run(tmp_path, kind, endpoint, wl, concurrency=2, duration=0.6)
    ok = [r for r in recs if r["ok"]]
    assert ok and len(ok) == len(recs)
    for r in ok:
        assert r["op"] == "embed" and r["inputs"] == 4 and r["dimensions"] == 8
        assert 4 * 5 <= r["prompt_tokens"] <= 4 * 9 and r["t_first"] is None
        assert r["t_end"] - r["t_start"] >= TTFT_MS / 1e3 - 0.001   # the fake's latency
    lat = sorted(r["t_end"] - r["t_start"] for r in ok)
    assert lat[len(lat) // 2] - TTFT_MS / 1e3 < 0.015
    sent = {e["request_id"]: e["prompt"] for e in fake_log(endpoint)[before:]}
    assert all(len(sent[r["request_id"]]) == 4 for r in ok)
    from aifb.schemas import validation_errors
    assert all(validation_errors(r, "request.schema.yaml") == [] for r in recs)


def test_embeddings_summary_and_report(fake_vllm, tmp_path):
    from test_llm_fakes import run_recipe

    from aifb.reporting.report import build_report
    from aifb.analysis.summary import summarize

    wl = {"api": "openai-embeddings", "batch_size": 3, "prompts": {"input_tokens": 6}}
    bid, out = run_recipe(tmp_path, {"kind": "vllm", "endpoint": fake_vllm}, wl, duration="0.8s")
    assert out["status"] == "completed", out.get("reason")
    run_dir = tmp_path / "results" / bid
    e = summarize(run_dir)["llm_workload"]["embeddings"]
    window = json.loads((run_dir / "run.json").read_text())["load_stats"]["window_s"]
    assert e["inputs"] == 3 * e["requests"] and e["batch_size_mean"] == 3
    assert e["inputs_per_s"] == pytest.approx(e["inputs"] / window)
    assert e["prompt_tokens"] == 18 * e["requests"]          # 6 words each, salt included
    assert abs(e["latency_s"]["p50"] - TTFT_MS / 1e3) < 0.01
    build_report(run_dir, tmp_path / "report")
    assert "inputs/s" in (tmp_path / "report" / "report.md").read_text()


def test_the_llm_workload_recipes_are_valid():
    from pathlib import Path

    from aifb.workflow.recipe import load_recipe, load_settings

    paths = sorted((Path(__file__).resolve().parents[2] / "recipes" / "llm").glob("*.yaml"))
    assert len(paths) >= 5
    for p in paths:
        s = load_settings(load_recipe(p))           # a trace recipe reads its trace here
        if p.stem.startswith("trace"):
            assert s["arrival"] == "trace" and len(s["trace_ns"]) == 200


def test_a_comparison_across_cache_states_is_not_comparable():
    from aifb.analysis.compare import compare_runs

    def summ(bid, state):
        return {"benchmark_id": bid, "status": "completed",
                "throughput": {"rps": 10.0}, "latency_s": {"p50": 0.1, "p99": 0.2},
                "llm_workload": {"cache": {"state": state}}}

    c = compare_runs(summ("A", "warm"), summ("B", "cold"))
    assert c["verdict"] == "not comparable" and "warm prefix cache" in c["reason"]
    assert compare_runs(summ("A", "cold"), summ("B", "cold"))["verdict"] == "reproduced"


def test_a_timed_out_turn_ends_its_conversation(tmp_path):
    proc, url = start_openai("fake-model", "--ttft-ms", "5", "--itl-ms", "1")
    try:
        path = tmp_path / "t.jsonl"
        # every third request asks for 400 tokens (0.4 s): past the 0.2 s timeout
        wl = {"prompts": {"input_tokens": 4, "output_tokens": [1, 400]}, "turns": 3}
        run_load_sync(kind="vllm", endpoint=url, workload=wl,
                      load={"clients": 1, "concurrency": 1, "duration_s": 1.5, "warmup_s": 0,
                            "timeout_s": 0.2}, seed=7, records_path=path, clock=RunClock(),
                      log=lambda m: None)
        recs = [json.loads(x) for x in path.read_text().splitlines()]
        log = [e for e in fake_log(url) if e["request_id"]]
    finally:
        stop(proc)
    assert any(r["error"] and r["error"]["type"] == "Timeout" for r in recs)
    recorded = {r.get("request_id") for r in recs}
    after = [b for a, b in zip(log, log[1:]) if a["request_id"] not in recorded]
    assert after and all(len(b["messages"]) == 1 for b in after)   # a new conversation


@pytest.mark.parametrize("kind,api", [("vllm", "openai-chat"), ("ollama", "ollama-chat")])
def test_open_loop_conversations_arrive_at_the_rate_and_turns_follow_their_think_time(
        fake_vllm, fake_ollama, tmp_path, kind, api):
    """load.rate with turns: conversations start at the rate; turn k+1 is planned at turn k's
    t_end + think_time and recorded with that t_sched (its lateness counts in its latency)."""
    endpoint = fake_vllm if kind == "vllm" else fake_ollama
    before = len(fake_log(endpoint))
    path = tmp_path / "ol.jsonl"
    wl = {"api": api, "prompts": {"input_tokens": 4, "output_tokens": 2}, "turns": 3,
          "think_time": "100ms", **({"model": "llama2"} if kind == "ollama" else {})}
    stats = run_load_sync(kind=kind, endpoint=endpoint, workload=wl,
                          load={"clients": 2, "concurrency": 4, "rate": 10, "arrival": "constant",
                                "duration_s": 2.0, "warmup_s": 0.0, "timeout_s": 10.0},
                          seed=7, records_path=path, clock=RunClock(), log=lambda m: None)
    recs = [json.loads(line) for line in path.read_text().splitlines()]
    log = {e["request_id"]: e for e in fake_log(endpoint)[before:]}
    assert stats["mode"] == "open" and stats["offered_rate"] == 10
    assert all(r["ok"] for r in recs)
    convs = conversations(recs)
    full = [c for c in convs.values() if len(c) == 3]
    assert len(full) >= 10
    for c in convs.values():
        assert [r["turn"] for r in c] == list(range(1, len(c) + 1))
        for a, b in zip(c, c[1:]):
            assert abs(b["t_sched"] - (a["t_end"] + 0.1)) < 1e-3     # planned at t_end + think
            assert b["t_start"] >= b["t_sched"] - 1e-4
        sent = [log[r["request_id"]]["messages"] for r in c]
        assert [len(m) for m in sent] == [1, 3, 5][:len(c)]          # the history grows
        for a, b in zip(sent, sent[1:]):
            assert b[:len(a)] == a
    # conversation starts: the arrival process at 10/s over both clients (constant: 0.1 s apart)
    starts = sorted(r["t_sched"] for r in recs if r["turn"] == 1)
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert len(starts) in (20, 21) and all(abs(g - 0.1) < 1e-3 for g in gaps)
    # the later turns are extra requests, not conversation starts
    assert len(recs) > 2 * len(starts)
    assert stats["sched_lag_s"]["p99"] < 0.02


def test_an_open_loop_conversation_recipe_runs_to_its_report(fake_vllm, tmp_path):
    from test_llm_fakes import run_recipe

    from aifb.analysis.summary import summarize
    from aifb.reporting.report import build_report

    wl = {"prompts": {"input_tokens": 4, "output_tokens": 2}, "turns": 2, "think_time": "50ms"}
    bid, out = run_recipe(tmp_path, {"kind": "vllm", "endpoint": fake_vllm}, wl,
                          load={"rate": 8, "arrival": "constant"})
    assert out["status"] == "completed", out["reason"]
    run_dir = tmp_path / "results" / bid
    s = summarize(run_dir)
    assert s["load"]["loop"] == "open"
    assert [row["turn"] for row in s["llm_workload"]["by_turn"]] == [1, 2]
    build_report(run_dir, tmp_path / "report")
    md = (tmp_path / "report" / "report.md").read_text()
    assert "open loop, 8 conversations/s offered" in md


def test_open_loop_follow_ups_queue_behind_a_busy_client_with_their_planned_time(tmp_path):
    """One worker, think time 0: a follow-up due while the worker is busy waits in the queue;
    its t_sched stays its planned instant, so its lateness shows in t_start - t_sched."""
    proc, url = start_openai("fake-model", "--ttft-ms", "30", "--itl-ms", "1")
    try:
        path = tmp_path / "q.jsonl"
        wl = {"prompts": {"input_tokens": 4, "output_tokens": 1}, "turns": 2}
        run_load_sync(kind="vllm", endpoint=url, workload=wl,
                      load={"clients": 1, "concurrency": 1, "rate": 40, "arrival": "constant",
                            "duration_s": 1.0, "warmup_s": 0.0, "timeout_s": 10.0},
                      seed=7, records_path=path, clock=RunClock(), log=lambda m: None)
        recs = [json.loads(line) for line in path.read_text().splitlines()]
    finally:
        stop(proc)
    seconds = [r for r in recs if r.get("turn") == 2]
    assert seconds
    firsts = {r["conversation"]: r for r in recs if r.get("turn") == 1}
    for r in seconds:
        assert abs(r["t_sched"] - firsts[r["conversation"]]["t_end"]) < 1e-3
    # 40 arrivals/s plus their second turns on one 30 ms worker: the queue builds up
    assert max(r["t_start"] - r["t_sched"] for r in seconds) > 0.1


def test_multi_turn_with_a_trace_is_a_named_error():
    from aifb.errors import ConfigError
    from aifb.workflow.recipe import load_settings, validate

    recipe = validate({"name": "mt", "category": "inference",
                       "service": {"kind": "vllm", "endpoint": "http://127.0.0.1:1"},
                       "workload": {"turns": [2, 4], "prompts": {
                           "source": "trace", "path": "data/traces/sample.jsonl"}},
                       "load": {"clients": 1, "arrival": "trace", "duration": "1s"}})
    with pytest.raises(ConfigError, match="arrival: trace"):
        load_settings(recipe)
    recipe["load"] = {"clients": 1, "rate": 5, "duration": "1s"}
    assert load_settings(recipe)["rate"] == 5


def test_capacity_search_over_a_traces_speedup(tmp_path):
    """How much of this traffic can the server take: the shipped search (config/config.yaml
    trace_capacity) varies load.speedup of the trace recipe (steps judged from their
    summary.json, written here by a stand-in runner; tests/integration/test_llm_sweeps.py
    measures one against the fake server)."""
    import shutil
    from pathlib import Path

    import yaml

    from aifb.workflow import registry
    from aifb.workflow.capacity import run_capacity
    from support import make_workspace, write_step_result

    repo = Path(__file__).resolve().parents[2]
    ws = make_workspace(tmp_path)
    shutil.copytree(repo / "data", ws / "data")
    shipped = yaml.safe_load((repo / "config" / "config.yaml").read_text())["sweeps"]["trace_capacity"]
    assert shipped["recipe"] == "recipes/llm/trace_llamacpp.yaml"
    assert shipped["param"] == "load.speedup" and shipped["mode"] == "capacity"
    spec = {**shipped, "start": 0.5, "max": 64, "resolution": "10%", "slo": ["p99 < 1s"]}

    def fake_step(bid):
        level = registry.get(bid, ws)["recipe"]["load"]["speedup"]
        return write_step_result(ws, bid, 10.0 * level, 0.1 * level)   # passes below 10

    res = run_capacity("trace_cap", spec, root=ws, log=lambda m: None, run_step=fake_step)
    assert 9.0 <= res["capacity"] < 10.0 <= res["first_fail"] <= 11.0
