"""Production-like LLM workloads (issue 16) against the FAKE servers of tests/fakes/ (their
timings and request log are exactly known): request ids, length distributions, shared
prefixes with the cache state, multi-turn conversations. The real llama-server checks are in
tests/test_llm_llamacpp.py."""

from __future__ import annotations

import json
import urllib.request

import pytest

from aifb.clock import RunClock
from aifb.engine import run_load_sync
from aifb.errors import ServiceError
from aifb.clients.openai import VLLMClient
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
