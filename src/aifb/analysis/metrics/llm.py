"""LLM serving metrics (the llm family of kinds), compatible with vLLM's serving benchmark.

Per successful request of the measurement window (the record fields come from
aifb.clients.llm.openai / aifb.clients.llm.ollama):

    TTFT  = t_first - t_start              t_first: first streamed chunk with non-empty choices
    E2EL  = last chunk - t_start           last entry of chunk_times (t_end when not streamed)
    TPOT  = (E2EL - TTFT) / (output_tokens - 1)       only for output_tokens > 1
    ITL   = gaps between consecutive chunk_times, pooled over all requests

    request_throughput      = ok requests / window_s
    output_token_throughput = sum(output_tokens) / window_s
    total_token_throughput  = sum(prompt_tokens + output_tokens) / window_s
    goodput                 = ok requests meeting every per-request limit / window_s

TTFT and E2EL are measured from t_start, the actual send, as vLLM's benchmark_serving does. In
open loop (load.rate) a request may wait in the client past its scheduled time t_sched when the
server falls behind, so the block also has ttft_sched_s and e2el_sched_s, measured from t_sched;
in open loop those are what goodput and the SLO verdicts (aifb.analysis.slo) use, so an overloaded server
cannot look healthy. TPOT and ITL are differences of chunk times: the same from either start.

Goodput, as vLLM's `--goodput ttft:500 tpot:50` (benchmark_serving.py: values in milliseconds,
a request is good when every one of its values is <= its limit; ok requests only):
- `workload.goodput: {ttft: 500, tpot: 50}` takes per-request limits in vLLM's terms: a bare
  number is milliseconds, a string may name its unit ("0.5s"); compared with <=.
- Otherwise the limits come from the recipe's SLO rules on ttft_/tpot_/e2el_ percentiles or max
  with `<` or `<=`, the rule on the highest percentile per metric, keeping its comparison:
  `ttft_p99 < 500ms` -> good when TTFT < 500 ms. A percentile rule bounds a share of the
  requests, so using its threshold for each request is a choice the goodput block states
  (`limits[...].from`); mean and min rules bound no single request and are not used.
A request with one output token has no TPOT and meets a TPOT limit (vLLM counts its TPOT as
0); a request without TTFT (not streamed) does not meet a TTFT limit. No limits -> goodput null.

Statistics use aifb.analysis.summary's helpers (pooled samples, Hyndman-Fan 7 percentiles, p99.9 only
for n >= 10,000). Like summary and report, this module reads files only.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from aifb.analysis.metrics import run_family
from aifb.analysis.slo import parse_rules
from aifb.analysis.summary import (PERCENTILE_METHOD, SCAN_SCHEMA, is_open_loop, latency_sample,
                                   scan_records, sorted_values, stats_sorted)
from aifb.units import format_number, format_seconds, parse_duration

GOODPUT_METRICS = ("ttft", "tpot", "e2el")
# Rules whose threshold may serve as a per-request goodput limit, highest first; mean and min
# rules bound no single request, so they never do.
_STAT_RANK = {"max": 9, "p999": 8, "p99": 7, "p95": 6, "p90": 5, "p50": 4}
MAX_PLOT_SAMPLES = 200_000
PLOT_FILES = ("llm_ttft.png", "llm_tpot.png", "llm_itl.png", "llm_tokens_over_time.png")

LLM_SCHEMA = {
    **{k: SCAN_SCHEMA[k] for k in ("op", "t_sched", "t_start", "t_first", "t_end", "ok", "phase")},
    "prompt_tokens": pl.Int64,
    "output_tokens": pl.Int64,
    "token_source": pl.String,
    "max_tokens": pl.Int64,
    "finish_reason": pl.String,
    "cached_tokens": pl.Int64,
    "content_chunks": pl.Int64,
    "tokens_mismatch": pl.Boolean,
    "chunk_times": pl.List(pl.Float64),
    "eval_count": pl.Int64,
    "eval_duration": pl.Int64,
    "prompt_eval_count": pl.Int64,
    "prompt_eval_duration": pl.Int64,
    "load_duration": pl.Int64,
    "server_timings": pl.Struct({"prompt_n": pl.Int64, "prompt_ms": pl.Float64,
                                 "predicted_n": pl.Int64, "predicted_ms": pl.Float64,
                                 "cache_n": pl.Int64}),
}


def applies(run: dict) -> bool:
    return run_family(run) == "llm"


# ----------------------------------------------------------------------------- per request

def request_metrics(rec: dict) -> dict:
    """TTFT, E2EL, TPOT and the ITL gaps of one record (plain Python; the reference for the
    polars expressions below, and what the unit tests check against hand-made timelines)."""
    t0 = rec["t_start"]
    tf = rec.get("t_first")
    chunks = rec.get("chunk_times") or []
    ttft = None if tf is None else tf - t0
    last = chunks[-1] if chunks else rec["t_end"]
    e2el = last - t0
    n = rec.get("output_tokens")
    tpot = (e2el - ttft) / (n - 1) if (ttft is not None and n is not None and n > 1) else None
    itl = [b - a for a, b in zip(chunks, chunks[1:])]
    return {"ttft": ttft, "e2el": e2el, "tpot": tpot, "itl": itl}


def per_request_frame(ok: pl.DataFrame) -> pl.DataFrame:
    """ttft, e2el, tpot per ok request (polars; the same definitions as request_metrics), and
    ttft_sched, e2el_sched: the same from t_sched (null without one)."""
    end = pl.coalesce(pl.col("chunk_times").list.last(), pl.col("t_end"))
    n = pl.col("output_tokens")
    if "t_sched" not in ok.columns:
        ok = ok.with_columns(pl.lit(None, dtype=pl.Float64).alias("t_sched"))
    return ok.with_columns(
        (pl.col("t_first") - pl.col("t_start")).alias("ttft"),
        (end - pl.col("t_start")).alias("e2el"),
        (pl.col("t_first") - pl.col("t_sched")).alias("ttft_sched"),
        (end - pl.col("t_sched")).alias("e2el_sched"),
    ).with_columns(
        pl.when(pl.col("ttft").is_not_null() & (n > 1))
        .then((pl.col("e2el") - pl.col("ttft")) / (n - 1)).otherwise(None).alias("tpot"))


def itl_values(ok: pl.DataFrame) -> pl.Series:
    if ok.height == 0:
        return pl.Series("itl", [], dtype=pl.Float64)
    return (ok.select(pl.col("chunk_times").list.diff(null_behavior="drop").alias("itl"))
            .explode("itl")["itl"].drop_nulls())


# ----------------------------------------------------------------------------- goodput SLOs

def goodput_limit(value) -> float:
    """Seconds from a workload.goodput value: a bare number is milliseconds (vLLM's
    `--goodput ttft:500`), a string may carry its unit ("0.5s", "500ms")."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a goodput limit")
    if isinstance(value, (int, float)):
        return float(value) / 1e3
    text = str(value).strip()
    try:
        return float(text) / 1e3
    except ValueError:
        return parse_duration(text)


def goodput_slos(run: dict) -> tuple[dict, str]:
    """({metric: (limit in seconds, "<" | "<=", where it came from)}, source) of the
    per-request limits goodput counts against (see the module docstring)."""
    recipe = run.get("recipe") or {}
    wl = recipe.get("workload") or {}
    given = wl.get("goodput") if isinstance(wl, dict) else None
    if isinstance(given, dict) and given:
        out = {}
        for k, v in given.items():
            key = k.removesuffix("_s")
            if key in GOODPUT_METRICS:
                unit = "" if isinstance(v, str) and not _bare(v) else " (a bare number: ms)"
                out[key] = (goodput_limit(v), "<=", f"workload.goodput.{k} = {v}{unit}")
        return out, "workload.goodput"
    try:
        rules = parse_rules(recipe.get("slo"))
    except ValueError:
        rules = []
    best: dict[str, tuple[int, object]] = {}
    for r in rules:
        family, _, stat = r.metric.rpartition("_")
        if family in GOODPUT_METRICS and r.op in ("<", "<=") and stat in _STAT_RANK:
            rank = _STAT_RANK[stat]
            if family not in best or rank > best[family][0]:
                best[family] = (rank, r)
    if not best:
        return {}, "none"
    out = {}
    for family, (_, r) in best.items():
        stat = r.metric.rpartition("_")[2]
        share = "every request" if stat == "max" else (
            "half of the requests" if stat == "p50" else
            f"{float(stat[1:].replace('999', '99.9')):g}% of the requests")
        out[family] = (r.threshold, r.op,
                       f"the threshold of `{r.text}` as each request's limit (the rule asks "
                       f"it of {share})")
    return out, "recipe slo rules: " + ", ".join(r.text for _, r in best.values())


def _bare(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _limit(v) -> tuple[float, str]:
    """(seconds, op) of a limit given as a goodput_slos triple or a plain number (<=)."""
    return (float(v[0]), v[1]) if isinstance(v, (tuple, list)) else (float(v), "<=")


def good_mask(per_req: pl.DataFrame, slos: dict, *, from_sched: bool = False) -> pl.Series:
    """Per ok request: does it meet every limit? `from_sched`: TTFT and E2EL from t_sched."""
    cond = pl.lit(True)
    for metric, spec in slos.items():
        limit, op = _limit(spec)
        col = pl.col(f"{metric}_sched" if from_sched and metric in ("ttft", "e2el") else metric)
        meets = col <= limit if op == "<=" else col < limit
        if metric == "tpot":   # one output token: no TPOT, meets the SLO (vLLM)
            cond = cond & (col.is_null() | meets)
        else:
            cond = cond & col.is_not_null() & meets
    return per_req.select(cond.alias("good"))["good"]


def vllm_goodput_arg(slos: dict) -> str | None:
    """The `--goodput` argument vLLM's benchmark_serving would need for the same count, or None
    when a limit is strict (`<`: vLLM compares with <=)."""
    parts = []
    for metric, spec in slos.items():
        limit, op = _limit(spec)
        if op != "<=":
            return None
        parts.append(f"{metric}:{limit * 1e3:g}")
    return " ".join(parts)


# ----------------------------------------------------------------------------- summary

def _queries(sample: pl.Expr):
    """The ok requests of the latency sample (aifb.analysis.summary.latency_sample: started in the
    window), those that completed in the window (phase measure: the throughputs and goodput),
    and every request of the sample, failed ones included (every_request)."""
    def queries(lf: pl.LazyFrame) -> list[pl.LazyFrame]:
        lf = lf.with_columns(pl.col("ok").fill_null(False))
        sampled = lf.filter(sample)
        return [sampled.filter(pl.col("ok")).drop("ok", "phase"),
                lf.filter((pl.col("phase") == "measure") & pl.col("ok")).drop("ok", "phase"),
                every_request(sampled)]
    return queries


# The per-request distributions come from the latency sample; everything else (throughputs,
# goodput, token counts) from the requests that completed in the window, as for every kind.
DISTRIBUTIONS = ("ttft_s", "tpot_s", "itl_s", "e2el_s", "ttft_sched_s", "e2el_sched_s",
                 "ttft_all_s", "e2el_all_s")


def every_request(measured: pl.LazyFrame) -> pl.LazyFrame:
    """TTFT and E2EL of every measured request, from t_sched in open loop (t_start without
    one): an ok request by the usual definitions, a failed one at its elapsed time (its TTFT
    when it got a first token). What latency verdicts read beside the ok requests' figures."""
    start = pl.coalesce("t_sched", "t_start")
    end = pl.coalesce(pl.col("chunk_times").list.last(), pl.col("t_end"))
    return measured.select(
        pl.when(pl.col("ok")).then(pl.col("t_first") - start)
        .otherwise(pl.coalesce("t_first", "t_end") - start).alias("ttft"),
        pl.when(pl.col("ok")).then(end - start).otherwise(pl.col("t_end") - start).alias("e2el"))


def compute(ok: pl.DataFrame, window_s: float | None, slos: dict, slo_source: str,
            open_loop: bool = False, every: pl.DataFrame | None = None) -> dict:
    """The `llm` block from the ok requests of the measurement window (LLM_SCHEMA columns).
    `slos`: {metric: seconds (<=, vLLM) or (seconds, op, from)}. `open_loop`: also TTFT and
    E2EL from t_sched, which goodput then uses. `every` (every_request's frame): TTFT and E2EL
    over every request, failed ones included."""
    per = per_request_frame(ok)
    itl = itl_values(ok)

    def rate(x):
        if x is None:
            return None
        return x / window_s if window_s else None

    n_ok = ok.height
    out_tok = ok["output_tokens"].drop_nulls()
    prm_tok = ok["prompt_tokens"].drop_nulls()
    out_total = int(out_tok.sum()) if out_tok.len() else 0
    prm_total = int(prm_tok.sum()) if prm_tok.len() else 0
    sources = {}
    if n_ok:
        for src, cnt in ok.group_by(pl.col("token_source").fill_null("unknown")).len().iter_rows():
            sources[src] = int(cnt)
    streamed = ok.filter(pl.col("content_chunks").is_not_null())
    mism = streamed.filter(pl.col("tokens_mismatch").fill_null(False))
    diff = (mism["output_tokens"] - mism["content_chunks"]).abs() if mism.height else None
    short = ok.filter(pl.col("max_tokens").is_not_null() & pl.col("output_tokens").is_not_null()
                      & (pl.col("output_tokens") < pl.col("max_tokens")))
    cached = ok["cached_tokens"].drop_nulls()

    block: dict = {
        "n_requests": n_ok,
        "ttft_s": stats_sorted(sorted_values(per["ttft"])),
        "tpot_s": stats_sorted(sorted_values(per["tpot"])),
        "itl_s": stats_sorted(sorted_values(itl)),
        "e2el_s": stats_sorted(sorted_values(per["e2el"])),
        "request_throughput": rate(float(n_ok)),
        "output_token_throughput": rate(float(out_total)),
        "total_token_throughput": rate(float(out_total + prm_total)),
        "output_tokens": {"total": out_total, "mean": (out_total / out_tok.len()) if out_tok.len() else None,
                          "n": int(out_tok.len())},
        "prompt_tokens": {"total": prm_total, "mean": (prm_total / prm_tok.len()) if prm_tok.len() else None,
                          "n": int(prm_tok.len())},
        "token_source": sources,
        "mismatches": {
            "requests": int(mism.height),
            "of_streamed": int(streamed.height),
            "max_abs_diff": int(diff.max()) if diff is not None and diff.len() else 0,
            "definition": "streamed ok requests whose output_tokens differs from the number of "
                          "chunks that carried text",
        },
        "ended_before_max_tokens": int(short.height),
        "cached_tokens": {"requests_with_hits": int((cached > 0).sum()) if cached.len() else 0,
                          "total": int(cached.sum()) if cached.len() else 0,
                          "reported_by": int(cached.len())},
        "method": PERCENTILE_METHOD,
    }
    if open_loop:
        block["ttft_sched_s"] = stats_sorted(sorted_values(per["ttft_sched"]))
        block["e2el_sched_s"] = stats_sorted(sorted_values(per["e2el_sched"]))
    if every is not None:
        block["ttft_all_s"] = stats_sorted(sorted_values(every["ttft"]))
        block["e2el_all_s"] = stats_sorted(sorted_values(every["e2el"]))
    if slos:
        good = int(good_mask(per, slos, from_sched=open_loop).sum()) if n_ok else 0
        limits = {}
        for metric, spec in slos.items():
            limit, op = _limit(spec)
            limits[metric] = {"op": op, "limit_s": limit,
                              "from": spec[2] if isinstance(spec, (tuple, list)) else "given",
                              "measured_from": ("t_sched" if open_loop and metric != "tpot"
                                                else "t_start")}
        block["goodput"] = {"rps": rate(float(good)), "good_requests": good,
                            "fraction": good / n_ok if n_ok else None,
                            "slos_s": {m: v["limit_s"] for m, v in limits.items()},
                            "limits": limits, "vllm_goodput_arg": vllm_goodput_arg(slos),
                            "source": slo_source}
    else:
        block["goodput"] = {"rps": None, "good_requests": None, "fraction": None, "slos_s": {},
                            "source": "none: give workload.goodput or ttft_/tpot_/e2el_ SLO rules"}
    server = _server_block(ok)
    if server:
        block["server"] = server
    return block


def _server_block(ok: pl.DataFrame) -> dict:
    """The server's own timing (Ollama eval_* counters, llama.cpp timings), for comparison."""
    out = {}
    oll = ok.filter(pl.col("eval_count").is_not_null() & (pl.col("eval_count") > 0)
                    & pl.col("eval_duration").is_not_null())
    if oll.height:
        out["source"] = "ollama eval_count/eval_duration, prompt_eval_duration, load_duration"
        out["tpot_s"] = stats_sorted(sorted_values(
            oll.select(pl.col("eval_duration") / pl.col("eval_count") / 1e9)["eval_duration"]))
        out["prompt_s"] = stats_sorted(sorted_values(
            oll.select(pl.col("prompt_eval_duration") / 1e9)["prompt_eval_duration"].cast(pl.Float64)))
        out["load_s"] = stats_sorted(sorted_values(
            oll.select(pl.col("load_duration") / 1e9)["load_duration"].cast(pl.Float64)))
    st = ok.filter(pl.col("server_timings").is_not_null()).select(
        pl.col("server_timings").struct.unnest())
    if st.height:
        st = st.filter(pl.col("predicted_n").fill_null(0) > 0)
        if st.height:
            out["source"] = "llama.cpp timings (prompt_ms, predicted_ms / predicted_n)"
            out["tpot_s"] = stats_sorted(sorted_values(
                (st["predicted_ms"] / st["predicted_n"] / 1e3).alias("x")))
            out["prompt_s"] = stats_sorted(sorted_values((st["prompt_ms"] / 1e3).alias("x")))
    return out


def summarize(run: dict, records_path: Path, window_s: float | None) -> dict:
    (ok, done, every), _dropped, _note = scan_records(records_path, _queries(request_sample(run)),
                                                      schema=LLM_SCHEMA)
    slos, source = goodput_slos(run)
    open_loop = is_open_loop(run)
    if open_loop is None:  # no recipe: tell from the records
        open_loop = bool(ok.height) and ok["t_sched"].null_count() < ok.height
    block = compute(done, window_s, slos, source, open_loop=open_loop)
    dist = compute(ok, window_s, {}, source, open_loop=open_loop, every=every)
    for key in DISTRIBUTIONS:
        if key in dist:
            block[key] = dist[key]
    block["n_latency_sample"] = dist["n_requests"]
    wl = (run.get("recipe") or {}).get("workload") or {}
    block["api"] = wl.get("api", "openai-chat") if isinstance(wl, dict) else None
    return {"llm": block}


def definitions() -> dict:
    return {
        "llm.ttft_s": ("Time to first token = arrival of the first streamed chunk with non-empty "
                       "`choices` (Ollama: the first line with done = false) - t_start, per ok "
                       "request that started in the measurement window (TTFT, TPOT, ITL and E2EL "
                       "all use that sample, n_latency_sample; throughputs, goodput and token "
                       "counts use the requests that completed in it, n_requests). Not defined "
                       "for non-streamed requests."),
        "llm.tpot_s": ("Time per output token = (E2EL - TTFT) / (output_tokens - 1), per ok "
                       "request with more than one output token (vLLM's definition: the first "
                       "token is excluded)."),
        "llm.itl_s": ("Inter-token latency = the gaps between consecutive chunk arrivals "
                      "(chunks with non-empty choices) within each ok request, pooled over all "
                      "requests; chunks read in the same network read share a time (gap 0)."),
        "llm.e2el_s": ("End-to-end latency = arrival of the last chunk with non-empty choices - "
                       "t_start (t_end - t_start when not streamed); the usage chunk and [DONE] "
                       "that follow are not included (they are in latency_s)."),
        "llm.ttft_sched_s": ("Open loop only: TTFT measured from the scheduled send time "
                             "t_sched instead of t_start, so time a request waited in the "
                             "client because the server fell behind counts. In open loop the "
                             "ttft_ SLO rules and goodput use this, not llm.ttft_s (which is "
                             "vLLM's figure, from the actual send)."),
        "llm.e2el_sched_s": ("Open loop only: E2EL measured from t_sched (see llm.ttft_sched_s); "
                             "used by e2el_ SLO rules and goodput in open loop."),
        "llm.ttft_all_s": ("TTFT over every request of the measurement window, ok or failed, "
                           "from t_sched in open loop (t_start in closed loop): a failed request "
                           "counts at its TTFT when it got a first token, else at its elapsed "
                           "time. ttft_ SLO rules read the worse of this and the ok requests' "
                           "TTFT, so requests that time out cannot make a TTFT SLO pass."),
        "llm.e2el_all_s": ("E2EL over every request (see llm.ttft_all_s): a failed request at "
                           "its elapsed time t_end - start; e2el_ SLO rules read the worse of "
                           "this and the ok requests' E2EL."),
        "llm.request_throughput": "Ok requests / window_s (req/s).",
        "llm.output_token_throughput": "Sum of output_tokens over the ok requests / window_s (tokens/s).",
        "llm.total_token_throughput": ("Sum of prompt_tokens + output_tokens over the ok requests "
                                       "/ window_s (tokens/s); prompt tokens as the server reports them."),
        "llm.goodput": ("Ok requests meeting every per-request limit / window_s, as vLLM's "
                        "--goodput: workload.goodput limits (a bare number is milliseconds, "
                        "as in vLLM; value <= limit) or, without it, the threshold of the "
                        "recipe's ttft_/tpot_/e2el_ percentile or max rule with < or <= (the "
                        "highest percentile per metric) used as each request's limit with the "
                        "rule's own comparison (< stays strict); mean and min rules are not "
                        "used. goodput.limits says, per metric, the comparison, the limit, where "
                        "it came from and whether it is measured from t_start or (open loop) "
                        "t_sched; goodput.vllm_goodput_arg is the equivalent vLLM argument "
                        "(null when a limit is strict). A one-token request meets a TPOT limit, "
                        "a request without TTFT does not meet a TTFT limit."),
        "llm.output_tokens": ("Output tokens per request from the server's usage "
                              "(completion_tokens; Ollama eval_count): token_source 'server'. "
                              "Without usage: the server's /tokenize on the output text "
                              "('tokenizer'), else the number of chunks that carried text ('chunks')."),
        "llm.token_source": "How many ok requests got their output token count from each source.",
        "llm.mismatches": ("Streamed ok requests whose output token count differs from the "
                           "number of chunks that carried text (several tokens per chunk, or a "
                           "miscount); ITL then spans more than one token per gap."),
        "llm.ended_before_max_tokens": ("Ok requests with fewer output tokens than the max_tokens "
                                        "they asked for (end of sequence; ignore_eos not set or "
                                        "not supported)."),
        "llm.cached_tokens": ("Prompt tokens the server served from its prefix cache, where it "
                              "reports them (usage.prompt_tokens_details.cached_tokens; llama.cpp "
                              "timings.cache_n): cached prompts make TTFT shorter."),
        "llm.server": ("The server's own timing where it reports one (Ollama eval_duration / "
                       "eval_count, prompt_eval_duration; llama.cpp predicted_ms / predicted_n, "
                       "prompt_ms), beside the client-side TPOT and TTFT."),
    }


# ----------------------------------------------------------------------------- report

def _f(v, unit="") -> str:
    return "n/a" if v is None else format_number(v) + unit


def markdown(summary: dict) -> list[str]:
    llm = summary.get("llm")
    if not llm:
        return []
    lines = ["## LLM serving metrics", "",
             f"{llm.get('n_requests', 0):,} ok requests in the measurement window; "
             "definitions (vLLM-compatible) under Metric definitions.", "",
             "| metric | n | mean | p50 | p90 | p99 | max |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    rows = [("ttft_s", "TTFT"), ("tpot_s", "TPOT"), ("itl_s", "ITL"), ("e2el_s", "E2EL")]
    if "ttft_sched_s" in llm:
        rows += [("ttft_sched_s", "TTFT from t_sched (open loop: SLO and goodput)"),
                 ("e2el_sched_s", "E2EL from t_sched (open loop: SLO and goodput)")]
    for key, name in rows:
        s = llm.get(key) or {}
        lines.append(f"| {name} | {s.get('n', 0):,} | " + " | ".join(
            format_seconds(s.get(k)) for k in ("mean", "p50", "p90", "p99", "max")) + " |")
    g = llm.get("goodput") or {}
    out_t = llm.get("output_tokens") or {}
    lines += ["", "| throughput | value |", "|---|---:|",
              f"| requests | {_f(llm.get('request_throughput'), ' req/s')} |",
              f"| output tokens | {_f(llm.get('output_token_throughput'), ' tok/s')} |",
              f"| total tokens (prompt + output) | {_f(llm.get('total_token_throughput'), ' tok/s')} |"]
    if g.get("slos_s"):
        limits = g.get("limits") or {k: {"op": "<=", "limit_s": v} for k, v in g["slos_s"].items()}
        slo_txt = ", ".join(f"{k.upper()} {'≤' if v['op'] == '<=' else '<'} "
                            f"{format_seconds(v['limit_s'])}" for k, v in limits.items())
        frac = g.get("fraction")
        lines.append(f"| goodput ({slo_txt}) | {_f(g.get('rps'), ' req/s')}"
                     + (f" ({frac:.0%} of requests)" if frac is not None else "") + " |")
    else:
        lines.append("| goodput | n/a (no per-request SLO given) |")
    if g.get("limits"):
        lines += ["", "Goodput limits, per request: " + "; ".join(
            f"{k.upper()} {v['op']} {format_seconds(v['limit_s'])} from {v['measured_from']} "
            f"({v['from']})" for k, v in g["limits"].items()) + ". "
            + (f"vLLM equivalent: `--goodput {g['vllm_goodput_arg']}`."
               if g.get("vllm_goodput_arg") else
               "No exact vLLM equivalent: vLLM's --goodput compares with <=, a limit here is "
               "strict (<).")]
    lines += ["",
              f"Output tokens: {out_t.get('total', 0):,} in total, "
              f"{_f(out_t.get('mean'))} per request. Token counts by source: "
              + (", ".join(f"{k} {v:,}" for k, v in (llm.get("token_source") or {}).items()) or "none")
              + "."]
    mm = llm.get("mismatches") or {}
    if mm.get("requests"):
        lines.append(f"⚠️ {mm['requests']:,} of {mm.get('of_streamed', 0):,} streamed requests had "
                     f"a token count different from their text chunks (max difference "
                     f"{mm.get('max_abs_diff')}): ITL gaps then cover several tokens.")
    if llm.get("ended_before_max_tokens"):
        lines.append(f"{llm['ended_before_max_tokens']:,} requests ended before their max_tokens "
                     "(end of sequence).")
    ct = llm.get("cached_tokens") or {}
    if ct.get("requests_with_hits"):
        lines.append(f"{ct['requests_with_hits']:,} requests had prompt-cache hits "
                     f"({ct['total']:,} cached prompt tokens): their TTFT is shorter.")
    srv = llm.get("server")
    if srv:
        tp, pr = srv.get("tpot_s") or {}, srv.get("prompt_s") or {}
        lines.append(f"Server-side timing ({srv.get('source')}): per-token p50 "
                     f"{format_seconds(tp.get('p50'))} (client TPOT p50 "
                     f"{format_seconds((llm.get('tpot_s') or {}).get('p50'))}), prompt p50 "
                     f"{format_seconds(pr.get('p50'))}.")
    lines.append("")
    return lines


# ----------------------------------------------------------------------------- plots

def request_sample(run: dict) -> pl.Expr:
    """Which records' TTFT, TPOT, ITL and E2EL count (aifb.analysis.summary.latency_sample)."""
    return latency_sample(run, is_open_loop(run))


def plot_queries(sample: pl.Expr):
    return lambda lf: _plot_frames(lf, sample)


def _plot_frames(lf: pl.LazyFrame, sample: pl.Expr) -> list[pl.LazyFrame]:
    lf = lf.with_columns(pl.col("ok").fill_null(False))
    ok_m = lf.filter(sample & pl.col("ok")).select(
        "t_start", "t_first", "t_end", "output_tokens", "chunk_times")
    # tokens over time: every ok request, its tokens spread over its chunk arrivals
    tok = (lf.filter(pl.col("ok") & pl.col("output_tokens").is_not_null())
           .select(pl.coalesce(pl.col("chunk_times"), pl.concat_list(pl.col("t_end"))).alias("ts"),
                   pl.col("output_tokens").cast(pl.Float64).alias("n"))
           .with_columns((pl.col("n") / pl.col("ts").list.len()).alias("w"))
           .explode("ts")
           .group_by(pl.col("ts").floor().alias("t")).agg(pl.col("w").sum().alias("tokens")))
    return [ok_m, tok]


# ----------------------------------------------------------------------------- sweeps

def sweep_rows(points: list[dict]) -> list[dict]:
    """One row per sweep point that has an llm block and generates text: points are {"level",
    "benchmark_id", "summary"} (summary.json as a dict, or None)."""
    rows = []
    for p in points:
        summary = p.get("summary") or {}
        llm = summary.get("llm")
        if not llm or (summary.get("llm_workload") or {}).get("embeddings"):
            continue   # embeddings have no tokens out nor a TTFT: llm_workload.embedding_rows
        g = llm.get("goodput") or {}
        rows.append({
            "level": p.get("level"), "benchmark_id": p.get("benchmark_id"),
            "output_token_throughput": llm.get("output_token_throughput"),
            "request_throughput": llm.get("request_throughput"),
            "goodput": g.get("rps"),
            **{f"{m}_{k}": (llm.get(f"{m}_s") or {}).get(k)
               for m in ("ttft", "tpot", "itl", "e2el") for k in ("p50", "p90", "p99")},
        })
    return rows


