"""LLM metrics on hand-made chunk timelines: what the client records from a stream (one token,
empty chunks, usage missing, an error mid-stream, non-streamed), and the TTFT/TPOT/ITL/E2EL,
throughput and goodput built from those records, by the definitions in DESIGN.md."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import polars as pl
import pytest

from aifb.clients.llm.openai import LlamaCppClient, VLLMClient
from aifb.clients.llm.prompts import Prompt
from aifb.clients.llm.stream import ChunkAccumulator, LineSplitter
from aifb.clock import ns_to_s_text
from aifb.analysis.metrics import llm
from aifb.reporting.family_plots import llm as llm_plots
from aifb.analysis.summary import stats_sorted
from aifb.jsonio import write_json

MS = 1_000_000  # ns


def sse(obj) -> str:
    return "data: " + json.dumps(obj)


def chat_chunk(content=None, role=None, finish=None, usage=None, choices=True):
    delta = {}
    if role:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    obj = {"id": "x", "object": "chat.completion.chunk",
           "choices": [{"index": 0, "delta": delta, "finish_reason": finish}] if choices else []}
    if usage:
        obj["usage"] = usage
    return sse(obj)


def usage(prompt, completion, cached=None):
    u = {"prompt_tokens": prompt, "completion_tokens": completion,
         "total_tokens": prompt + completion}
    if cached is not None:
        u["prompt_tokens_details"] = {"cached_tokens": cached}
    return u


def finish(events, client=None, max_tokens=8, t_end_ms=None, stream=True, chat=True):
    """Feed (t_ms, line) events to the client's parser and finish the request as the client
    does; returns (result tuple, record dict in seconds relative to t_start = 0)."""
    client = client or VLLMClient("http://127.0.0.1:9", {}, 1)
    acc = ChunkAccumulator(chat=chat)
    for t, line in events:
        acc.feed_sse_line(line.encode(), int(t * MS))
    t_end = int((t_end_ms if t_end_ms is not None else events[-1][0]) * MS)
    res = asyncio.run(client.finish(acc, Prompt("p", max_tokens), "chat", stream, 10, 100, t_end))
    return res, record(res)


def record(res, t_start_ns=0):
    rec = {"t_start": t_start_ns / 1e9, "t_first": None if res[6] is None else res[6] / 1e9,
           "t_end": res[7] / 1e9, "ok": res[1], "phase": "measure", "op": res[0]}
    extra = dict(res[8]) if len(res) > 8 else {}
    if "chunk_times" in extra:
        extra["chunk_times"] = [t / 1e9 for t in extra["chunk_times"]]
    rec.update(extra)
    return rec


def frame(records):
    rows = [{k: r.get(k) for k in llm.LLM_SCHEMA} for r in records]
    return pl.DataFrame(rows, schema=llm.LLM_SCHEMA)


# ----------------------------------------------------------------------------- timelines

def test_one_token():
    events = [(50.0, chat_chunk(role="assistant", content="")), (50.0, chat_chunk("Hi")),
              (50.2, chat_chunk(finish="length")), (50.3, chat_chunk(choices=False, usage=usage(5, 1))),
              (50.3, "data: [DONE]")]
    res, rec = finish(events, max_tokens=1)
    assert res[1] and res[2] is None
    assert rec["output_tokens"] == 1 and rec["token_source"] == "server"
    assert rec["prompt_tokens"] == 5 and rec["content_chunks"] == 1 and not rec["tokens_mismatch"]
    m = llm.request_metrics(rec)
    assert m["ttft"] == pytest.approx(0.050)
    assert m["tpot"] is None                     # output_tokens = 1: no TPOT
    assert m["e2el"] == pytest.approx(0.0502)    # the last chunk with choices, not the usage chunk
    assert m["itl"] == pytest.approx([0.0, 0.0002])


def test_empty_chunks_no_choices_and_empty_delta():
    """A chunk without choices (or `choices: []`) is not the first token; a chunk with choices
    but an empty delta is (non-empty choices), but carries no text."""
    events = [(5.0, ": keep-alive comment"), (6.0, sse({"id": "x", "choices": []})),
              (7.0, ""), (8.0, "event: ping"),
              (40.0, chat_chunk(role="assistant")),               # empty delta: first chunk
              (60.0, chat_chunk("a")), (80.0, chat_chunk("b")), (100.0, chat_chunk("c")),
              (100.0, chat_chunk(finish="stop")),
              (101.0, chat_chunk(choices=False, usage=usage(3, 3))), (101.0, "data: [DONE]")]
    res, rec = finish(events)
    assert res[1]
    m = llm.request_metrics(rec)
    assert m["ttft"] == pytest.approx(0.040)
    assert rec["content_chunks"] == 3 and rec["output_tokens"] == 3
    assert m["e2el"] == pytest.approx(0.100)
    assert m["tpot"] == pytest.approx((0.100 - 0.040) / 2)
    assert m["itl"] == pytest.approx([0.020, 0.020, 0.020, 0.0])
    assert rec["finish_reason"] == "stop"


def test_usage_missing_falls_back_to_chunks_and_says_so():
    events = [(30.0, chat_chunk("a")), (40.0, chat_chunk("b")), (50.0, chat_chunk("c", finish="length")),
              (50.0, "data: [DONE]")]
    res, rec = finish(events)
    assert res[1]
    assert rec["output_tokens"] == 3 and rec["token_source"] == "chunks"
    assert rec["prompt_tokens"] is None
    assert llm.request_metrics(rec)["tpot"] == pytest.approx(0.010)


def test_usage_missing_uses_the_servers_tokenizer_where_there_is_one():
    client = LlamaCppClient("http://127.0.0.1:9", {}, 1)
    client._tokenize_ok = True
    seen = []

    async def tokenize(text):
        seen.append(text)
        return 5
    client.tokenize = tokenize
    events = [(30.0, chat_chunk("Hello")), (40.0, chat_chunk(" wor")), (50.0, chat_chunk("ld!", finish="stop")),
              (50.0, "data: [DONE]")]
    res, rec = finish(events, client=client)
    assert seen == ["Hello world!"]
    assert rec["output_tokens"] == 5 and rec["token_source"] == "tokenizer"
    assert rec["content_chunks"] == 3 and rec["tokens_mismatch"] is True


def test_several_tokens_per_chunk_is_flagged():
    events = [(30.0, chat_chunk("ab")), (50.0, chat_chunk("cd", finish="length")),
              (50.0, chat_chunk(choices=False, usage=usage(2, 4))), (50.0, "data: [DONE]")]
    _, rec = finish(events)
    assert rec["output_tokens"] == 4 and rec["content_chunks"] == 2 and rec["tokens_mismatch"]
    block = llm.compute(frame([rec]), 1.0, {}, "none")
    assert block["mismatches"]["requests"] == 1 and block["mismatches"]["max_abs_diff"] == 2
    # TPOT uses the server's token count: (50 - 30) ms / 3
    assert block["tpot_s"]["p50"] == pytest.approx(0.020 / 3)


def test_error_mid_stream_is_an_error_with_the_partial_timeline():
    events = [(30.0, chat_chunk("a")), (40.0, chat_chunk("b")),
              (45.0, sse({"error": {"object": "error", "message": "engine dead", "code": 500}})),
              (45.0, "data: [DONE]")]
    res, rec = finish(events)
    assert res[1] is False and res[2] == "ServerError" and "engine dead" in res[3]
    assert res[6] == 30 * MS                     # t_first kept
    assert rec["chunk_times"] == pytest.approx([0.030, 0.040])
    # errors never enter the LLM statistics (only ok requests of the window)
    assert llm.compute(frame([]), 1.0, {}, "none")["ttft_s"]["n"] == 0


def test_stream_without_done_or_finish_reason_is_incomplete():
    res, _ = finish([(30.0, chat_chunk("a")), (40.0, chat_chunk("b"))])
    assert res[1] is False and res[2] == "IncompleteStream"


def test_stream_without_any_choices_is_empty():
    res, _ = finish([(30.0, chat_chunk(choices=False, usage=usage(2, 0))), (30.0, "data: [DONE]")])
    assert res[1] is False and res[2] == "EmptyResponse"


def test_non_streamed():
    client = VLLMClient("http://127.0.0.1:9", {"stream": False}, 1)
    acc = ChunkAccumulator(chat=True)
    acc.feed_openai_obj({"choices": [{"index": 0, "message": {"role": "assistant", "content": "a b c"},
                                      "finish_reason": "length"}],
                         "usage": usage(7, 3, cached=4)}, 200 * MS, streamed=False)
    res = asyncio.run(client.finish(acc, Prompt("p", 3), "chat", False, 10, 100, 200 * MS))
    rec = record(res)
    assert res[1] and res[6] is None
    assert rec["output_tokens"] == 3 and rec["token_source"] == "server" and rec["cached_tokens"] == 4
    assert "chunk_times" not in rec and "content_chunks" not in rec
    m = llm.request_metrics(rec)
    assert m["ttft"] is None and m["tpot"] is None and m["itl"] == []
    assert m["e2el"] == pytest.approx(0.200)
    # without usage and without a tokenizer a non-streamed response has no token count
    acc = ChunkAccumulator(chat=True)
    acc.feed_openai_obj({"choices": [{"index": 0, "message": {"content": "x"}, "finish_reason": "stop"}]},
                        1, streamed=False)
    res = asyncio.run(client.finish(acc, Prompt("p", 3), "chat", False, 10, 100, 1))
    assert res[1] is False and res[2] == "NoUsage"


def test_completions_stream_text_field():
    events = [(20.0, sse({"choices": [{"index": 0, "text": " a", "finish_reason": None}]})),
              (25.0, sse({"choices": [{"index": 0, "text": " b", "finish_reason": "length"}]})),
              (25.0, sse({"choices": [], "usage": usage(1, 2)})), (25.0, "data: [DONE]")]
    client = VLLMClient("http://127.0.0.1:9", {"api": "openai-completions"}, 1)
    res, rec = finish(events, client=client, chat=False)
    assert res[1] and rec["content_chunks"] == 2 and rec["output_tokens"] == 2
    assert llm.request_metrics(rec)["tpot"] == pytest.approx(0.005)


def test_ollama_ndjson_timeline_records_the_servers_counters():
    acc = ChunkAccumulator(chat=False)
    lines = [(70.0, {"model": "m", "response": "a", "done": False}),
             (80.0, {"model": "m", "response": "b", "done": False}),
             (90.0, {"model": "m", "response": "c", "done": False}),
             (90.5, {"model": "m", "response": "", "done": True, "done_reason": "length",
                     "eval_count": 3, "eval_duration": 30 * MS, "prompt_eval_count": 12,
                     "prompt_eval_duration": 65 * MS, "load_duration": 1000,
                     "total_duration": 91 * MS})]
    for t, obj in lines:
        acc.feed_ollama_line(json.dumps(obj).encode(), int(t * MS))
    assert acc.done
    extra = acc.extra(3, True, *acc.output_tokens())
    assert extra["output_tokens"] == 3 and extra["token_source"] == "server"
    assert extra["prompt_tokens"] == 12
    for k in ("eval_count", "eval_duration", "prompt_eval_count", "prompt_eval_duration"):
        assert k in extra
    rec = record(("generate", True, None, None, 1, 1, acc.t_first, int(90.5 * MS), extra))
    m = llm.request_metrics(rec)
    assert m["ttft"] == pytest.approx(0.070) and m["tpot"] == pytest.approx(0.010)
    block = llm.compute(frame([rec]), 1.0, {}, "none")
    assert block["server"]["tpot_s"]["p50"] == pytest.approx(0.010)
    assert block["server"]["prompt_s"]["p50"] == pytest.approx(0.065)


def test_sse_parsing_does_not_depend_on_how_the_bytes_are_split():
    body = "".join(f"{chat_chunk(str(i))}\r\n\r\n" for i in range(5)) + \
        f"{chat_chunk(choices=False, usage=usage(1, 5))}\n\ndata: [DONE]\n\n"
    raw = body.encode()
    for step in (1, 2, 3, 7, 64, len(raw)):
        split, acc = LineSplitter(), ChunkAccumulator()
        for i in range(0, len(raw), step):
            for line in split.feed(raw[i:i + step]):
                acc.feed_sse_line(line, i)
        acc.feed_sse_line(split.rest(), len(raw))
        assert acc.content_chunks == 5 and acc.done and acc.usage["completion_tokens"] == 5
        assert acc.text == "01234"


def test_a_very_long_line_is_read_whole():
    text = "x" * 3_000_000
    raw = (chat_chunk(text, finish="stop") + "\n\ndata: [DONE]\n\n").encode()
    split, acc = LineSplitter(), ChunkAccumulator()
    for i in range(0, len(raw), 65536):
        for line in split.feed(raw[i:i + 65536]):
            acc.feed_sse_line(line, i)
    assert acc.text == text and acc.done


# ----------------------------------------------------------------------------- aggregation

def _rec(t_start, ttft, gaps, tokens=None, prompt=10, **kw):
    """A record with chunk arrivals at t_start + ttft + cumulative gaps."""
    times = [t_start + ttft]
    for g in gaps:
        times.append(times[-1] + g)
    n = tokens if tokens is not None else len(times)
    r = {"t_start": t_start, "t_first": times[0], "t_end": times[-1] + 0.0001, "ok": True,
         "phase": "measure", "op": "chat", "output_tokens": n, "prompt_tokens": prompt,
         "token_source": "server", "max_tokens": n, "content_chunks": len(times),
         "tokens_mismatch": n != len(times), "chunk_times": times}
    r.update(kw)
    return r


def test_aggregates_follow_the_definitions():
    recs = [_rec(0.0, 0.100, [0.010] * 9), _rec(0.5, 0.300, [0.020] * 4),
            _rec(1.0, 0.050, [])]                                   # one token
    block = llm.compute(frame(recs), 2.0, {}, "none")
    assert block["ttft_s"]["n"] == 3
    assert block["ttft_s"]["p50"] == pytest.approx(0.100)
    assert block["tpot_s"]["n"] == 2                                 # the one-token request has none
    assert sorted([block["tpot_s"]["min"], block["tpot_s"]["max"]]) == pytest.approx([0.010, 0.020])
    itl = sorted([0.010] * 9 + [0.020] * 4)
    assert block["itl_s"] == pytest.approx(stats_sorted(itl), nan_ok=True)
    assert block["e2el_s"]["max"] == pytest.approx(0.300 + 0.080)
    assert block["request_throughput"] == pytest.approx(3 / 2.0)
    assert block["output_token_throughput"] == pytest.approx((10 + 5 + 1) / 2.0)
    assert block["total_token_throughput"] == pytest.approx((16 + 30) / 2.0)
    assert block["output_tokens"] == {"total": 16, "mean": pytest.approx(16 / 3), "n": 3}
    assert block["token_source"] == {"server": 3}
    assert block["goodput"]["rps"] is None


def test_goodput_counts_requests_meeting_every_slo():
    recs = [_rec(0.0, 0.100, [0.010] * 9),     # ttft 100 ms, tpot 10 ms: good
            _rec(0.5, 0.600, [0.010] * 9),     # ttft too slow
            _rec(1.0, 0.100, [0.060] * 9),     # tpot too slow
            _rec(1.5, 0.100, [])]              # one token: no TPOT, meets it
    block = llm.compute(frame(recs), 4.0, {"ttft": 0.5, "tpot": 0.05}, "test")
    g = block["goodput"]
    assert g["good_requests"] == 2 and g["rps"] == pytest.approx(0.5)
    assert g["fraction"] == pytest.approx(0.5) and g["slos_s"] == {"ttft": 0.5, "tpot": 0.05}
    assert g["vllm_goodput_arg"] == "ttft:500 tpot:50"


def test_goodput_slos_from_workload_or_rules():
    run = {"recipe": {"workload": {"goodput": {"ttft": "500ms", "tpot": 50, "e2el": "2s"}},
                      "slo": ["ttft_p99 < 1s"]}}
    slos, source = llm.goodput_slos(run)
    assert source == "workload.goodput"
    assert {k: v[:2] for k, v in slos.items()} == {
        "ttft": (0.5, "<="), "tpot": (0.05, "<="), "e2el": (2.0, "<=")}
    assert "a bare number: ms" in slos["tpot"][2]
    run = {"recipe": {"slo": ["ttft_p50 < 200ms", "ttft_p99 < 800ms", "tpot_mean <= 40ms",
                              "p99 < 1s", "e2el_p99 > 1s"]}}
    slos, source = llm.goodput_slos(run)
    # the p99 rule wins for TTFT and keeps its strict <; a mean rule bounds no single request
    assert list(slos) == ["ttft"] and slos["ttft"][:2] == (pytest.approx(0.8), "<")
    assert "`ttft_p99 < 800ms` as each request's limit" in slos["ttft"][2]
    assert "99% of the requests" in slos["ttft"][2]
    assert "ttft_p99 < 800ms" in source
    assert llm.goodput_slos({"recipe": {"slo": ["p99 < 1s"]}}) == ({}, "none")


def test_goodput_bare_numbers_are_milliseconds_as_in_vllm():
    """vLLM's --goodput ttft:500 means 500 ms; so does workload.goodput {ttft: 500}."""
    assert llm.goodput_limit(500) == pytest.approx(0.5)
    assert llm.goodput_limit(0.05) == pytest.approx(0.00005)
    assert llm.goodput_limit("500") == pytest.approx(0.5)
    assert llm.goodput_limit("0.5s") == pytest.approx(0.5)
    assert llm.goodput_limit("50ms") == pytest.approx(0.05)
    with pytest.raises(ValueError):
        llm.goodput_limit(True)


def test_goodput_keeps_the_comparison_of_its_rule():
    """vLLM counts a request whose value equals its limit as good (<=); a limit taken from a
    `<` rule stays strict. TTFTs of 0.25 s and 0.5 s (exact in binary) against 0.5 s."""
    recs = [_rec(0.0, 0.25, [0.010] * 4), _rec(1.0, 0.5, [0.010] * 4)]
    inclusive = llm.compute(frame(recs), 2.0, {"ttft": (0.5, "<=", "given")}, "test")["goodput"]
    strict = llm.compute(frame(recs), 2.0, {"ttft": (0.5, "<", "rule")}, "test")["goodput"]
    assert inclusive["good_requests"] == 2 and strict["good_requests"] == 1
    assert inclusive["vllm_goodput_arg"] == "ttft:500" and strict["vllm_goodput_arg"] is None
    assert strict["limits"]["ttft"] == {"op": "<", "limit_s": 0.5, "from": "rule",
                                        "measured_from": "t_start"}
    md = "\n".join(llm.markdown({"llm": llm.compute(frame(recs), 2.0, {"ttft": (0.5, "<", "r")},
                                                      "test")}))
    assert "goodput (TTFT < 500 ms)" in md and "No exact vLLM equivalent" in md


def test_open_loop_ttft_and_e2el_from_the_scheduled_time(tmp_path):
    """Open loop: each request waited `lag` s in the client after its t_sched (0, 0.25, 0.5,
    0.75 s). vLLM's TTFT (from t_start) is 0.25 s for all four; from t_sched it is 0.25 + lag.
    Goodput (TTFT <= 400 ms) and the `ttft_p99 < 500ms` verdict use the t_sched figures."""
    from aifb.analysis.summary import summarize

    run_dir = tmp_path / "BM-20260109-003"
    run_dir.mkdir()
    lags = [0.0, 0.25, 0.5, 0.75]
    with open(run_dir / "requests.jsonl", "w") as fh:
        for i, lag in enumerate(lags):
            t_sched = 1.0 + i
            r = _rec(t_sched + lag, 0.25, [0.0625] * 4, t_sched=t_sched)
            fh.write(json.dumps({"client": 0, "worker": 0, "seq": i, "error": None,
                                 "bytes_out": 1, "bytes_in": 1, **r}) + "\n")
    write_json(run_dir / "run.json", {
        "benchmark_id": run_dir.name, "status": "completed", "service": {"kind": "vllm"},
        "recipe": {"name": "t", "service": {"kind": "vllm"}, "load": {"clients": 1, "rate": 1},
                   "workload": {"goodput": {"ttft": 400}}, "slo": ["ttft_p99 < 500ms"]},
        "load_stats": {"window_s": 4.0}})
    s = summarize(run_dir)
    b = s["llm"]
    assert b["ttft_s"]["min"] == b["ttft_s"]["max"] == pytest.approx(0.25)
    assert sorted([b["ttft_sched_s"]["min"], b["ttft_sched_s"]["max"]]) == pytest.approx([0.25, 1.0])
    assert b["ttft_sched_s"]["p50"] == pytest.approx(0.25 + 0.375)
    assert b["e2el_s"]["max"] == pytest.approx(0.5)
    assert b["e2el_sched_s"]["max"] == pytest.approx(0.5 + 0.75)
    assert b["tpot_s"]["p50"] == pytest.approx(0.0625)     # the same from either start
    g = b["goodput"]
    assert g["good_requests"] == 1 and g["limits"]["ttft"]["measured_from"] == "t_sched"
    rule = s["slo"]["rules"][0]
    assert rule["source"] == "llm.ttft_sched_s" and rule["passed"] is False
    assert rule["value"] == pytest.approx(b["ttft_sched_s"]["p99"])
    assert "llm.ttft_sched_s" in s["metric_definitions"]
    # closed loop: no t_sched figures, vLLM's TTFT for the verdict
    closed = llm.compute(frame([_rec(0.0, 0.25, [0.0625] * 4)]), 1.0, {}, "none")
    assert "ttft_sched_s" not in closed


def test_summary_and_report_from_files(tmp_path):
    """requests.jsonl as the engine writes it -> summary.json's llm block, an LLM SLO rule
    checked against it, and the report section."""
    from aifb.analysis.summary import summarize

    run_dir = tmp_path / "BM-20260101-001"
    run_dir.mkdir()
    recs = [_rec(0.5 + i * 0.4, 0.100 + 0.01 * (i % 3), [0.010] * 15) for i in range(20)]
    recs.append({"t_start": 0.1, "t_end": 0.2, "ok": True, "phase": "warmup", "op": "chat",
                 "t_first": 0.15, "output_tokens": 1, "chunk_times": [0.15]})
    recs.append({"t_start": 3.0, "t_end": 3.2, "ok": False, "phase": "measure", "op": "chat",
                 "t_first": None, "error": {"type": "ServerError", "message": "x"}})
    with open(run_dir / "requests.jsonl", "w") as fh:
        for i, r in enumerate(recs):
            base = {"client": 0, "worker": 0, "seq": i, "t_sched": None, "error": None,
                    "bytes_out": 1, "bytes_in": 1}
            base.update(r)
            fh.write(json.dumps(base) + "\n")
    write_json(run_dir / "run.json", {
        "benchmark_id": run_dir.name, "status": "completed",
        "service": {"kind": "llamacpp"},
        "recipe": {"name": "t", "service": {"kind": "llamacpp"}, "load": {"clients": 1},
                   "workload": {"goodput": {"ttft": 105}},   # ms, as vLLM's --goodput
                   "slo": ["ttft_p99 < 500ms", "tpot_p50 < 5ms"]},
        "load_stats": {"window_s": 8.0, "warmup_end": 0.4, "measure_end": 8.4}})
    summary = summarize(run_dir)
    b = summary["llm"]
    assert b["ttft_s"]["n"] == 20 and b["tpot_s"]["p50"] == pytest.approx(0.010)
    assert b["request_throughput"] == pytest.approx(20 / 8.0)
    assert b["goodput"]["good_requests"] == 7 and b["goodput"]["source"] == "workload.goodput"
    verdicts = {r["rule"]: r["passed"] for r in summary["slo"]["rules"]}
    assert verdicts == {"ttft_p99 < 500ms": True, "tpot_p50 < 5ms": False}
    assert "llm.tpot_s" in summary["metric_definitions"]
    md = "\n".join(llm.markdown(summary))
    assert "## LLM serving metrics" in md and "| TPOT | 20 |" in md and "goodput" in md

    items = llm_plots.plots(run_dir / "requests.jsonl", json.loads((run_dir / "run.json").read_text()),
                      summary, tmp_path / "plots")
    assert [i["path"] for i in items] == [f"plots/{f}" for f in llm.PLOT_FILES]
    for f in llm.PLOT_FILES:
        assert (tmp_path / "plots" / f).read_bytes()[:4] == b"\x89PNG"

    out = llm_plots.sweep_section([{"level": 1, "benchmark_id": "BM-1", "summary": summary},
                             {"level": 2, "benchmark_id": "BM-2", "summary": summary},
                             {"level": 4, "benchmark_id": "BM-3", "summary": None}],
                            "load.clients", tmp_path / "sweep")
    assert [r["level"] for r in out["rows"]] == [1, 2]
    assert any("TTFT p99" in line for line in out["lines"])
    for p in out["plots"]:
        assert (tmp_path / "sweep" / p).read_bytes()[:4] == b"\x89PNG"


def test_record_times_are_written_as_seconds_since_t0():
    """chunk_times go through the record writer like every other time (ns -> s, 9 decimals)."""
    from aifb.records import encode_row
    res = ("chat", True, None, None, 1, 2, 1_500_000_000, 1_700_000_000,
           {"output_tokens": 2, "chunk_times": [1_500_000_000, 1_600_000_123]})
    line = json.loads(encode_row((0, 0, 0, None, 1_000_000_000, res), "measure", 1_000_000_000))
    assert line["chunk_times"] == [0.5, float(ns_to_s_text(600_000_123))]


def test_ttft_slo_does_not_pass_while_requests_time_out(tmp_path):
    """5 of 100 requests time out after 30 s without a first token. The ok requests' TTFT is
    0.2 s, so `ttft_p99 < 2s` passed on them alone; over every request (a failed one at its
    elapsed time) TTFT p99 = 30 s (numpy 'linear': rank 98.01 of 0..99 lies among the 30 s
    values) and the rule fails, read from llm.ttft_all_s. Same for E2EL."""
    from aifb.analysis.summary import summarize

    run_dir = tmp_path / "BM-20260109-004"
    run_dir.mkdir()
    with open(run_dir / "requests.jsonl", "w") as fh:
        for i in range(100):
            t0 = 1.0 + 0.5 * i
            if i % 20 == 0:
                r = {"t_start": t0, "t_first": None, "t_end": t0 + 30.0, "ok": False,
                     "phase": "measure", "op": "chat",
                     "error": {"type": "TimeoutError", "message": "30 s"}}
            else:
                r = _rec(t0, 0.2, [0.05] * 4)
            fh.write(json.dumps({"client": 0, "worker": 0, "seq": i, "t_sched": None,
                                 "error": None, "bytes_out": 1, "bytes_in": 1, **r}) + "\n")
    write_json(run_dir / "run.json", {
        "benchmark_id": run_dir.name, "status": "completed", "service": {"kind": "vllm"},
        "recipe": {"name": "t", "service": {"kind": "vllm"}, "load": {"clients": 1},
                   "slo": ["ttft_p99 < 2s", "e2el_p99 < 2s", "tpot_p99 < 100ms"]},
        "load_stats": {"window_s": 50.0}})
    s = summarize(run_dir)
    b = s["llm"]
    assert b["ttft_s"]["n"] == 95 and b["ttft_s"]["max"] == pytest.approx(0.2)
    assert b["ttft_all_s"]["n"] == 100
    all_ttft = np.array([30.0] * 5 + [0.2] * 95)
    assert b["ttft_all_s"]["p99"] == pytest.approx(np.percentile(all_ttft, 99))
    assert b["e2el_all_s"]["p99"] == pytest.approx(30.0)
    by = {r["metric"]: r for r in s["slo"]["rules"]}
    assert by["ttft_p99"]["passed"] is False and by["ttft_p99"]["source"] == "llm.ttft_all_s"
    assert by["e2el_p99"]["passed"] is False and by["e2el_p99"]["source"] == "llm.e2el_all_s"
    assert by["tpot_p99"]["passed"] is True and by["tpot_p99"]["source"] == "llm.tpot_s"
    assert "llm.ttft_all_s" in s["metric_definitions"]


def test_client_cpu_per_streamed_token(tmp_path):
    """20 streamed replies of 16 tokens completed in the window, 32 ms of client CPU over it:
    100 µs per token, 1,600 µs per request, and both in the report's Client CPU row; a failed
    request (its partial stream's tokens unknown) leaves the per-token figure null."""
    from aifb.analysis.summary import summarize
    from aifb.reporting.report import build_report

    def run(name, failed):
        run_dir = tmp_path / name
        run_dir.mkdir()
        recs = [_rec(0.5 + i * 0.4, 0.1, [0.010] * 15) for i in range(20)]
        recs += [{"t_start": 3.0, "t_end": 3.2, "ok": False, "phase": "measure", "op": "chat",
                  "t_first": None, "error": {"type": "ServerError", "message": "x"}}] * failed
        with open(run_dir / "requests.jsonl", "w") as fh:
            for i, r in enumerate(recs):
                fh.write(json.dumps({"client": 0, "worker": 0, "seq": i, "t_sched": None,
                                     "error": None, "bytes_out": 1, "bytes_in": 1} | r) + "\n")
        write_json(run_dir / "run.json", {
            "benchmark_id": "BM-20260101-001", "status": "completed",
            "service": {"kind": "llamacpp"},
            "recipe": {"name": "t", "service": {"kind": "llamacpp"}, "load": {"clients": 1}},
            "load_stats": {"window_s": 8.0, "warmup_end": 0.4, "measure_end": 8.4,
                           "measured": {"ok": 20, "errors": failed},
                           "client_cpu": {"cpu_s": 0.032, "util_of_one_core": 0.004}}})
        return run_dir

    run_dir = run("ok", 0)
    v = summarize(run_dir)["validity"]
    assert v["client_cpu_us_per_token"] == pytest.approx(100.0)
    assert v["client_cpu_us_per_request"] == pytest.approx(1600.0)
    build_report(run_dir, tmp_path / "report")
    md = (tmp_path / "report" / "report.md").read_text()
    assert "| Client CPU | 0% of one core; 1,600 µs per request; 100 µs per streamed token |" in md
    v = summarize(run("failed", 1))["validity"]
    assert v["client_cpu_us_per_token"] is None
    assert v["client_cpu_us_per_request"] == pytest.approx(0.032 / 21 * 1e6)
