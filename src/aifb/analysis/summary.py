"""summary.json from a run's files: results/<id>/requests.jsonl + run.json (never the engine).

Only `phase == "measure"` records count. Latency statistics are over the successful requests of
the measurement window, pooled over all clients (never averaged per client), with percentiles by
linear interpolation between order statistics (numpy's 'linear', Hyndman & Fan type 7).

The records are parsed by polars (NDJSON with an explicit schema naming only the fields used)
in chunks of whole lines, and each chunk is reduced by lazy queries to the columns kept, so
memory stays near one chunk plus the ok latencies (10 million records: about 1 GiB; polars'
own file scan would memory-map the whole file). No Python loop runs over records. A truncated
last line (a crash while appending) is dropped and counted.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import polars as pl

from aifb.errors import AifbError
from aifb.analysis.metrics import extensions
from aifb.jsonio import read_json, write_json
from aifb.records import PHASES
from aifb.analysis.slo import P999_MIN_N, evaluate, parse_rules
from aifb.stats import quantiles_sorted  # noqa: F401 - the one percentile method, re-exported

SUMMARY_VERSION = 1
RECORDS = "requests.jsonl"

# The request fields summaries and reports read (see workflow/schemas/request.schema.yaml).
# Fields not named here (service-specific ones) are ignored by the scan.
SCAN_SCHEMA = {
    "client": pl.Int64,
    "seq": pl.Int64,
    "op": pl.String,
    "t_sched": pl.Float64,
    "t_start": pl.Float64,
    "t_first": pl.Float64,
    "t_end": pl.Float64,
    "ok": pl.Boolean,
    "error": pl.Struct({"type": pl.String, "message": pl.String}),
    "bytes_out": pl.Int64,
    "bytes_in": pl.Int64,
    "phase": pl.String,
}

# What summarize() reads (parsing fewer fields is faster).
SUMMARY_SCHEMA = {k: v for k, v in SCAN_SCHEMA.items() if k not in ("client", "seq")}

PERCENTILES = (("p50", 0.50), ("p90", 0.90), ("p95", 0.95), ("p99", 0.99), ("p999", 0.999))
STAT_KEYS = ("n", "mean", "std", "min", "p50", "p90", "p95", "p99", "p999", "max")
PERCENTILE_METHOD = ("linear interpolation between order statistics (numpy 'linear', "
                     "Hyndman-Fan 7), pooled over all clients")
CLOSED_LOOP_DEFINITION = "t_end - t_start"
OPEN_LOOP_DEFINITION = "t_end - t_sched (includes queueing)"
CONNECT_OP = "connect"  # a failed reconnect attempt's record (see aifb.load.engine): not a request
ALL_REQUESTS_NOTE = ", every request (a failed one at its elapsed time)"

CPU_SATURATION = 0.9        # fraction of one core
LOOP_LAG_LIMIT_S = 0.005    # event-loop lag p99
RATE_SHORTFALL = 0.95       # achieved / offered, open loop
FEW_SAMPLES = 100           # below this, p99 rests on the single largest sample or so

MIB = 2 ** 20


def _warn(message: str) -> None:
    print(f"aifb summary: warning: {message}", file=sys.stderr)


# ----------------------------------------------------------------------------- records

def _last_line_span(path: Path, size: int) -> tuple[int, bytes]:
    """(offset, bytes) of the last non-blank line of the file, reading backwards in blocks."""
    block = 1 << 16
    buf = b""
    pos = size
    with open(path, "rb") as fh:
        while pos > 0:
            step = min(block, pos)
            pos -= step
            fh.seek(pos)
            buf = fh.read(step) + buf
            stripped = buf.rstrip()
            if stripped and b"\n" in stripped:
                break
        stripped = buf.rstrip()
        cut = stripped.rfind(b"\n")
        return pos + cut + 1, stripped[cut + 1:]


def records_extent(path: Path) -> tuple[int, int]:
    """(bytes of complete records, number of dropped lines). A last line that is not a complete
    JSON object (the writer crashed mid-line) is dropped; the rest is a valid prefix."""
    size = path.stat().st_size
    if size == 0:
        return 0, 0
    offset, last = _last_line_span(path, size)
    if not last.strip():
        return size, 0
    try:
        ok = isinstance(json.loads(last), dict)
    except ValueError:
        ok = False
    return (size, 0) if ok else (offset, 1)


CHUNK_BYTES = 128 << 20


def _chunks(path: Path, limit: int, chunk_bytes: int = CHUNK_BYTES):
    """Byte strings of whole lines covering the first `limit` bytes of the file, each about
    chunk_bytes long (a chunk ends at a line end, found by reading the rest of the line at the
    boundary, so no chunk is copied or spliced)."""
    with open(path, "rb") as fh:
        start = 0
        while start < limit:
            length = min(chunk_bytes, limit - start)
            if start + length < limit:
                fh.seek(start + length)
                length += len(fh.readline())
                length = min(length, limit - start)
            fh.seek(start)
            buf = fh.read(length)
            if not buf:
                break
            yield buf
            start += len(buf)


def scan_records(path: Path, queries, *, chunk_bytes: int = CHUNK_BYTES,
                 schema: dict | None = None):
    """Run `queries(lazy_frame) -> [LazyFrame, ...]` over the records of requests.jsonl, chunk by
    chunk, and return (list of DataFrames, each the concatenation of one query's results over
    the chunks, dropped_lines, note).

    The records are parsed by polars with `schema` (default SCAN_SCHEMA; fields not named in
    it, such as service-specific ones, are skipped; fewer fields parse faster).
    Reading in chunks keeps memory to one chunk plus what the queries keep (polars' own file
    scan memory-maps the whole file). A missing or empty file gives empty frames; a truncated
    last line is left out and counted; the input is never modified.
    """
    path = Path(path)
    schema = schema or SCAN_SCHEMA
    note = None
    if not path.is_file():
        valid, dropped, note = 0, 0, f"{path.name} is missing"
    else:
        valid, dropped = records_extent(path)
    if dropped:
        _warn(f"{path}: the last line is truncated (the run was interrupted while writing it); "
              "dropped it")
    parts: list[list[pl.DataFrame]] | None = None
    try:
        for buf in _chunks(path, valid, chunk_bytes) if valid else ():
            frame = pl.read_ndjson(buf, schema=schema)  # parsed once, shared by the queries
            del buf
            out = pl.collect_all(queries(frame.lazy()))
            del frame
            if parts is None:
                parts = [[] for _ in out]
            for acc, df in zip(parts, out):
                acc.append(df)
        if parts is None:
            parts = [[df] for df in pl.collect_all(queries(pl.LazyFrame(schema=schema)))]
    except pl.exceptions.PolarsError as exc:
        raise AifbError(f"{path}: cannot read the request records (a line is not a valid "
                        f"request record): {exc}") from exc
    frames = [pl.concat(acc, how="vertical") if len(acc) > 1 else acc[0] for acc in parts]
    return frames, dropped, note


def is_open_loop(run: dict) -> bool | None:
    """True for a recipe with `load.rate` or `load.arrival: trace`, False for a closed-loop
    recipe, None when unknown."""
    load = (run.get("recipe") or {}).get("load")
    if not isinstance(load, dict):
        return None
    return load.get("rate") is not None or load.get("arrival") == "trace"


def latency_expr(open_loop: bool | None) -> pl.Expr:
    """Per-request latency: open loop from the planned send time (no coordinated omission).
    When the loop is unknown, t_sched is used where a record has one."""
    if open_loop is False:
        return pl.col("t_end") - pl.col("t_start")
    return pl.col("t_end") - pl.coalesce("t_sched", "t_start")


def latency_window(run: dict) -> tuple[float, float] | None:
    """(warmup_end, measure_end) in seconds on the run clock, from run.json's load_stats, or None
    when the run did not record them (then the phase labels decide, see latency_sample)."""
    ls = run.get("load_stats") or {}
    lo, hi = ls.get("warmup_end"), ls.get("measure_end")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (lo, hi)):
        return None
    return (float(lo), float(hi)) if hi > lo else None


def latency_sample(run: dict, open_loop: bool | None) -> pl.Expr:
    """Which records' latencies count: the requests that *started* in the measurement window
    (closed loop: t_start; open loop: the planned start t_sched), whatever phase they completed
    in. The load drains (bounded by the timeout) so that the requests in flight at the window's
    end complete and are recorded; a request that started during the warmup does not count,
    however late it completes. Counting by completion instead would keep the long requests
    that started in the warmup and lose those in flight at the end, over-weighting long
    requests. Throughput stays completions per window (phase == "measure").
    Failed reconnect attempts (op "connect") are never requests."""
    not_connect = pl.col("op").fill_null("") != CONNECT_OP
    win = latency_window(run)
    if win is None:
        return (pl.col("phase") == "measure") & not_connect
    start = (pl.col("t_start") if open_loop is False else pl.coalesce("t_sched", "t_start"))
    return (start >= win[0]) & (start < win[1]) & not_connect


# ----------------------------------------------------------------------------- statistics

def sorted_values(series: pl.Series):
    """Non-null values of a float series as a sorted numpy array (polars' parallel sort)."""
    return series.drop_nulls().drop_nans().sort().to_numpy()


def stats_sorted(x) -> dict:
    """n, mean, std (n-1), min, p50, p90, p95, p99, p999 (n >= 10,000 only), max of a sorted
    array; everything null when n = 0."""
    n = int(len(x))
    out: dict = {"n": n}
    if n == 0:
        out.update({k: None for k in STAT_KEYS[1:]})
        return out
    out["mean"] = float(np.mean(x))
    out["std"] = float(np.std(x, ddof=1)) if n > 1 else None
    out["min"] = float(x[0])
    for (name, _), v in zip(PERCENTILES, quantiles_sorted(x, [q for _, q in PERCENTILES])):
        out[name] = v
    if n < P999_MIN_N:
        out["p999"] = None
    out["max"] = float(x[-1])
    return out


def stats_of(series: pl.Series) -> dict:
    return stats_sorted(sorted_values(series))


def stats_by_op(frame: pl.DataFrame, col: str) -> dict:
    """Stats of `col` per op: each op's values sorted on their own (sorting (op, value) rows
    together and gathering the op strings took ~3x longer at 10 M rows)."""
    if frame.height == 0:
        return {}
    parts = frame.select("op", col).drop_nulls(col).partition_by("op", as_dict=True)
    return {op: stats_sorted(parts[(op,)][col].sort().to_numpy())
            for op in sorted(k[0] for k in parts)}


def _num(d: dict | None, *keys):
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return float(d) if isinstance(d, (int, float)) and not isinstance(d, bool) else None


# ----------------------------------------------------------------------------- summary

def metric_definitions(open_loop: bool) -> dict:
    lat = OPEN_LOOP_DEFINITION if open_loop else CLOSED_LOOP_DEFINITION
    defs = {
        "measurement_window": (
            "Only requests recorded with phase 'measure' count; warmup and cooldown requests are "
            "excluded from every number below."),
        "window_s": (
            "Duration of the measurement window in seconds: load_stats.window_s from run.json "
            "(end minus start of the measure phase on the run clock), or, when absent, the last "
            "t_end minus the first t_start of the measure-phase records."),
        "requests": (
            "total = measure-phase requests recorded (a request counts when it completes); ok = "
            "those with ok = true; errors = the others, grouped by error.type ('unknown' when "
            "missing); dropped_lines = truncated lines left out of requests.jsonl. Failed "
            "reconnect attempts (records with op 'connect') are not requests: they are counted "
            "apart in connect_attempts and left out of total, errors, error_rate, "
            "throughput and the achieved open-loop rate."),
        "error_rate": "errors / total over the measurement window.",
        "throughput.rps": "Successful (ok) requests in the measurement window divided by window_s.",
        "throughput.per_op": (
            "Per operation: ok and error counts, and rps = ok requests of that operation / window_s."),
        "throughput.mib_s": (
            "Payload bytes (bytes_in + bytes_out) of the ok requests / 2^20 / window_s, in MiB/s."),
        "latency_s": (
            f"Latency = {lat}, in seconds, over the ok requests that started in the "
            "measurement window (open loop: were scheduled in it; t_start / t_sched between "
            "load_stats.warmup_end and measure_end), whatever phase they completed in: the load "
            "drains at the end (bounded by the timeout) so the requests in flight at the "
            "window's end are recorded, and those that started in the warmup never count. "
            "Counting by completion would over-weight long requests. From one monotonic clock "
            "with ns resolution; n is the number of samples."),
        "latency_all_s": (
            f"The same latency ({lat}) over every request of the latency sample (started in "
            "the measurement window), ok or failed: a failed or timed-out request counts at its elapsed time (it took at least "
            "that long and gave no answer). SLO rules on latency (p50 ... p99.9, mean, min, max) "
            "are checked against the worse of these and latency_s: requests that time out "
            "cannot make a latency SLO pass, and requests that fail fast (which would lower "
            "these figures) cannot flatter one; with no ok request a latency rule fails."),
        "percentiles": (
            "p50/p90/p95/p99/p99.9 by linear interpolation between order statistics (numpy "
            "'linear', Hyndman-Fan 7: h = (n-1)q, x[floor h] + (h - floor h)(x[floor h+1] - "
            "x[floor h])) over the pooled per-request samples of all clients; per-client "
            "percentiles are never averaged."),
        "p999": f"p99.9 is reported only when n >= {P999_MIN_N}; otherwise null.",
        "mean_std": "mean = arithmetic mean; std = sample standard deviation (n - 1); null when n < 2.",
        "latency_by_op": "The latency statistics above, per operation type.",
        "slo": ("Each recipe SLO rule is checked against this summary; an SLO passes only when "
                "every rule passes, and a rule whose value is unavailable fails. Latency rules "
                "read the worse of latency_all_s (every request) and latency_s (ok requests); "
                "each verdict names its `source`."),
        "validity.client_saturated": (
            f"True when the load generator used more than {CPU_SATURATION:.0%} of one CPU core "
            f"(load_stats.client_cpu.util_of_one_core; with load.processes > 1 that of the "
            f"busiest worker process, all listed in load_stats.process_stats) or its event loop "
            f"lagged more than {LOOP_LAG_LIMIT_S * 1e3:g} ms at p99 (load_stats.loop_lag_s.p99, "
            f"the worst process's): the client may "
            "then be the bottleneck and latencies include client-side delay."),
        "validity.client_cpu_us_per_request": (
            "CPU time of the client processes (user + system, every thread; getrusage) from "
            "the start of the measurement window to its end, summed over the load's worker "
            "processes and Slurm client jobs (validity.client_cpu_s_all), in microseconds, "
            "divided by the requests that completed in that same window "
            "(load_stats.measured: ok and failed; failed reconnect attempts are not requests "
            "but their CPU is in the time). Null when a process's CPU is unknown (a lost process "
            "or client job) or no request completed. validity.client_cpu_s is the busiest "
            "process's alone."),
        "validity.client_cpu_us_per_token": (
            "LLM runs whose ok requests all streamed: the same client CPU time divided by the "
            "output tokens of the requests that completed in the window (llm.output_tokens."
            "total); null when a request failed (the tokens of a broken stream are not known, "
            "the CPU it cost is) or nothing streamed."),
    }
    if open_loop:
        defs.update({
            "service_time_s": ("Service time = t_end - t_start (from the actual send), over the "
                               "ok requests of the measurement window; same statistics as latency."),
            "sched_lag_s": ("Scheduling lag = t_start - t_sched: how late each request was sent "
                            "relative to its open-loop schedule, over all measure-phase requests."),
            "validity.rate_shortfall": (
                f"True when the achieved request rate (requests completed in the window per "
                f"second) is below {RATE_SHORTFALL:.0%} of the scheduled rate (requests whose "
                "planned send time t_sched falls in the window, per second: arrivals and "
                "follow-up turns; a trace plans none after its end): the schedule fell behind. "
                "offered_rate is the arrival rate asked for (a trace's over its span; with "
                "conversations, their starts)."),
        })
    return defs


def client_cpu_total_s(ls: dict) -> float | None:
    """CPU seconds of every client process over the measurement window: the sum over Slurm
    client jobs, else over the worker processes (aifb.load.merge: None when a member's is
    unknown), else the one engine's own."""
    cpu = ls.get("client_cpu")
    if not isinstance(cpu, dict):
        return None
    for key in ("cpu_s_all_client_jobs", "cpu_s_all_processes", "cpu_s"):
        if key in cpu:
            return _num(cpu, key)
    return None


def client_cpu_costs(ls: dict, summary: dict) -> dict:
    """The client's CPU per request and per streamed output token, in µs (see the
    validity.client_cpu_us_per_* definitions)."""
    total = client_cpu_total_s(ls)
    ok, errors = _num(ls, "measured", "ok"), _num(ls, "measured", "errors")
    n = None if ok is None or errors is None else ok + errors
    llm = summary.get("llm") or {}
    tokens = (llm.get("output_tokens") or {}).get("total")
    n_llm = llm.get("n_requests")
    streamed = bool(n_llm) and (llm.get("mismatches") or {}).get("of_streamed") == n_llm
    per_token = None
    if total is not None and streamed and errors == 0 and tokens:
        per_token = total / tokens * 1e6
    return {"client_cpu_s_all": total,
            "client_cpu_us_per_request": total / n * 1e6 if total is not None and n else None,
            "client_cpu_us_per_token": per_token}


def _validity(run: dict, summary: dict, open_loop: bool, note: str | None) -> dict:
    ls = run.get("load_stats") or {}
    util = _num(ls, "client_cpu", "util_of_one_core")
    lag_p99 = _num(ls, "loop_lag_s", "p99")
    offered, achieved = _num(ls, "offered_rate"), _num(ls, "achieved_rate")
    warnings: list[str] = []

    status = summary.get("status")
    if status in ("failed", "partial"):
        reason = summary.get("reason") or "no reason recorded"
        warnings.append(f"The run is {status} ({reason}): the numbers cover only what was "
                        "recorded before it stopped.")
    elif status == "running":
        warnings.append("run.json still says the run is running: this summary may be incomplete.")
    if note:
        warnings.append(f"{note}: there are no request records.")
    dropped = summary["requests"]["dropped_lines"]
    if dropped:
        warnings.append(f"{dropped} truncated line(s) at the end of requests.jsonl (the writer "
                        "stopped mid-line) were dropped.")
    if not ls:
        warnings.append("run.json has no load_stats: client saturation and the achieved rate "
                        "could not be checked.")

    saturated = None
    if util is not None or lag_p99 is not None:
        saturated = bool((util is not None and util > CPU_SATURATION)
                         or (lag_p99 is not None and lag_p99 > LOOP_LAG_LIMIT_S))
    if util is not None and util > CPU_SATURATION:
        warnings.append(f"The load generator used {util:.0%} of a CPU core: the client, not the "
                        "service, may be the bottleneck; add client processes.")
    if lag_p99 is not None and lag_p99 > LOOP_LAG_LIMIT_S:
        warnings.append(f"The load generator's event loop lagged {lag_p99 * 1e3:.3g} ms at p99 "
                        f"(limit {LOOP_LAG_LIMIT_S * 1e3:g} ms): measured latencies include "
                        "client-side delay; add client processes or lower the concurrency.")

    # The achieved rate is held against the requests planned inside the window (arrivals and
    # follow-up turns; a trace that ends before the window does plans none after its end),
    # or, in run.json files written before that count existed, against the offered rate.
    scheduled = _num(ls, "scheduled_rate")
    planned = scheduled if scheduled is not None else offered
    shortfall = None
    if open_loop and planned and achieved is not None:
        shortfall = achieved < RATE_SHORTFALL * planned
        if shortfall:
            what = "scheduled in the window" if scheduled is not None else "offered"
            warnings.append(f"Only {achieved:.4g} of the {planned:.4g} req/s {what} were "
                            f"achieved ({achieved / planned:.0%}): the open-loop schedule fell "
                            "behind, so latencies include a growing backlog.")

    n = summary["latency_s"]["n"]
    if n == 0:
        warnings.append("No successful requests in the measurement window: latency statistics "
                        "are empty.")
    elif n < FEW_SAMPLES:
        warnings.append(f"Only {n} successful requests were measured: p99 rests on the one or "
                        "two slowest samples; run longer for stable tail percentiles.")

    out = {
        "client_cpu_util": util,
        "client_cpu_s": _num(ls, "client_cpu", "cpu_s"),
        **client_cpu_costs(ls, summary),
        "client_saturated": saturated,
        "loop_lag_p99_s": lag_p99,
        "loop_lag_max_s": _num(ls, "loop_lag_s", "max"),
        "offered_rate": offered,
        "scheduled_rate": scheduled,
        "achieved_rate": achieved,
        "rate_shortfall": shortfall,
        "stopped_by": ls.get("stopped_by"),
        "warnings": warnings,
    }
    if open_loop:
        out["sched_lag_p99_s"] = (summary.get("sched_lag_s") or {}).get("p99")
    return out


def measure_queries(open_loop: bool | None, sample: pl.Expr | None = None):
    """Per-chunk queries over the records: ok requests of the latency sample (op, latency, ...),
    error counts by op and type and open-loop scheduling lag of the measure-phase requests,
    per-phase counts and extents, and the failed reconnect attempts (kept apart: not requests).
    `sample`: which records' latencies count (latency_sample); default the measure phase."""
    if sample is None:
        sample = pl.col("phase") == "measure"

    def queries(lf: pl.LazyFrame) -> list[pl.LazyFrame]:
        lf = lf.with_columns(pl.col("ok").fill_null(False), pl.col("op").fill_null("unknown"))
        meta = lf.group_by("phase").agg(pl.len().alias("count"),
                                        pl.col("t_start").min().alias("t_min"),
                                        pl.col("t_end").max().alias("t_max"),
                                        pl.col("t_sched").is_not_null().any().alias("has_sched"))
        connects = (lf.filter((pl.col("op") == CONNECT_OP) & (pl.col("phase") == "measure"))
                    .group_by(pl.col("error").struct.field("type").fill_null("unknown")
                              .alias("error_type")).len())
        lf = lf.filter(pl.col("op") != CONNECT_OP)
        m = lf.filter(pl.col("phase") == "measure")
        ok = lf.filter(sample & pl.col("ok")).select(
            "op",
            latency_expr(open_loop).alias("latency"),
            (pl.col("t_end") - pl.col("t_start")).alias("service_time"),
            (pl.col("t_first") - pl.col("t_start")).alias("ttfb"))
        if open_loop is False:
            ok = ok.drop("service_time")
        # every request, failed ones at their elapsed time: what latency SLO verdicts use
        every = lf.filter(sample).select(latency_expr(open_loop).alias("latency"),
                                         (pl.col("t_end") - pl.col("t_start")).alias("service_time"))
        if open_loop is not None:  # service_time is needed only to tell the loop afterwards
            every = every.drop("service_time")
        errors = (m.filter(~pl.col("ok"))
                  .group_by("op", pl.col("error").struct.field("type").fill_null("unknown")
                            .alias("error_type")).len())
        lag = m.select((pl.col("t_start") - pl.col("t_sched")).alias("sched_lag")).drop_nulls()
        if open_loop is False:
            lag = lag.clear()
        ok_counts = (m.filter(pl.col("ok"))
                     .group_by("op").agg(pl.len().alias("n"), (pl.col("bytes_in").fill_null(0)
                                         + pl.col("bytes_out").fill_null(0)).sum().alias("bytes")))
        return [ok, errors, lag, meta, connects, ok_counts, every]

    return queries


def summarize(run_dir: Path) -> dict:
    """The summary of one run directory (run.json + requests.jsonl); see summary.schema.yaml."""
    run_dir = Path(run_dir)
    run_path = run_dir / "run.json"
    if not run_path.is_file():
        raise AifbError(f"{run_path} not found: cannot summarise a run without its run.json")
    run = read_json(run_path)
    recipe = run.get("recipe") or {}
    load = recipe.get("load") or {}
    ls = run.get("load_stats") or {}
    records = run_dir / RECORDS

    open_loop = is_open_loop(run)
    sample = latency_sample(run, open_loop)
    (ok, errs, lag, meta, conns, okc, every), dropped, note = scan_records(
        records, measure_queries(open_loop, sample), schema=SUMMARY_SCHEMA)
    meta = (meta.group_by("phase")
            .agg(pl.col("count").sum(), pl.col("t_min").min(), pl.col("t_max").max(),
                 pl.col("has_sched").any()))
    mrow = meta.filter(pl.col("phase") == "measure")
    if open_loop is None:  # no recipe: tell from the records
        open_loop = bool(mrow.height and mrow["has_sched"][0])
        if not open_loop:
            ok = ok.with_columns(latency=pl.col("service_time"))
            every = every.with_columns(latency=pl.col("service_time"))

    okc = okc.group_by("op").agg(pl.col("n").sum(), pl.col("bytes").sum())
    n_ok = int(okc["n"].sum()) if okc.height else 0  # completions in the window (throughput)
    n_err = int(errs["len"].sum()) if errs.height else 0
    total = n_ok + n_err
    connect_errors = {}
    if conns.height:
        cb = conns.group_by("error_type").agg(pl.col("len").sum()).sort("error_type")
        connect_errors = {t: int(c) for t, c in cb.iter_rows()}
    errors_by_type = {}
    if errs.height:
        eb = errs.group_by("error_type").agg(pl.col("len").sum()).sort("error_type")
        errors_by_type = {t: int(c) for t, c in eb.iter_rows()}

    window = _num(ls, "window_s")
    window_source = "load_stats"
    if window is None:
        window_source = "records"
        if total:
            window = float(mrow["t_max"][0] - mrow["t_min"][0])
    if window is not None and window <= 0:
        window = None

    def rate(count: float) -> float | None:
        if count == 0:
            return 0.0
        return count / window if window else None

    op_ok = {r[0]: (int(r[1]), int(r[2])) for r in okc.iter_rows()}
    op_err = {r[0]: int(r[1]) for r in
              errs.group_by("op").agg(pl.col("len").sum()).iter_rows()} if errs.height else {}
    per_op = {}
    for op in sorted(set(op_ok) | set(op_err)):
        n, nbytes = op_ok.get(op, (0, 0))
        per_op[op] = {"rps": rate(n), "ok": n, "errors": op_err.get(op, 0),
                      "mib_s": rate(nbytes / MIB)}
    ok_bytes = int(okc["bytes"].sum()) if okc.height else 0

    phase_counts = {p: 0 for p in PHASES}
    phase_counts.update({str(p): int(c) for p, c in meta.select("phase", "count").iter_rows()})

    summary: dict = {
        "summary_version": SUMMARY_VERSION,
        "benchmark_id": run.get("benchmark_id"),
        "status": run.get("status"),
        "reason": run.get("reason"),
        "recipe_name": recipe.get("name"),
        "recipe_hash": run.get("recipe_hash"),
        "service_kind": ((run.get("service") or {}).get("kind")
                         or (recipe.get("service") or {}).get("kind")),
        "load": {"loop": "open" if open_loop else "closed", "clients": load.get("clients"),
                 "concurrency": load.get("concurrency"), "rate": load.get("rate")},
        "window_s": window,
        "window_source": window_source,
        "phases": phase_counts,
        "requests": {"total": total, "ok": n_ok, "errors": n_err,
                     "errors_by_type": errors_by_type, "dropped_lines": dropped,
                     "error_rate": n_err / total if total else None},
        "connect_attempts": {"failed": sum(connect_errors.values()),
                             "errors_by_type": connect_errors},
        "throughput": {"rps": rate(n_ok), "per_op": per_op, "mib_s": rate(ok_bytes / MIB),
                       "bytes": ok_bytes},
        "latency_s": {**stats_of(ok["latency"]), "method": PERCENTILE_METHOD,
                      "definition": OPEN_LOOP_DEFINITION if open_loop else CLOSED_LOOP_DEFINITION,
                      "sample": ("requests that started in the measurement window"
                                 if latency_window(run) else
                                 "requests that completed in the measurement window (run.json "
                                 "has no window bounds)")},
        "latency_all_s": {**stats_of(every["latency"]), "method": PERCENTILE_METHOD,
                          "definition": (OPEN_LOOP_DEFINITION if open_loop
                                         else CLOSED_LOOP_DEFINITION) + ALL_REQUESTS_NOTE},
        "latency_by_op": stats_by_op(ok, "latency"),
    }
    if open_loop:
        summary["service_time_s"] = {**stats_of(ok["service_time"]),
                                     "definition": CLOSED_LOOP_DEFINITION}
        summary["sched_lag_s"] = {**stats_of(lag["sched_lag"]), "definition": "t_start - t_sched"}
    if ok.height and ok["ttfb"].null_count() < ok.height:
        summary["ttfb_s"] = {**stats_of(ok["ttfb"]), "definition": "t_first - t_start"}
    del ok, lag, every
    ext_defs = {}
    for ext in extensions(run):  # service-specific blocks (llm, recall, ...) before the SLO check
        if hasattr(ext, "summarize"):
            summary.update(ext.summarize(run, records, window) or {})
        if hasattr(ext, "definitions"):
            ext_defs.update(ext.definitions())
    try:
        rules = parse_rules(recipe.get("slo"))
    except ValueError as exc:
        raise AifbError(f"{run_path}: recipe.slo: {exc}") from exc
    summary["slo"] = evaluate(rules, summary)
    summary["validity"] = _validity(run, summary, open_loop, note)
    # server telemetry (aifb.analysis.metrics.server): its cross-checks are validity warnings too
    summary["validity"]["warnings"] += (summary.get("server") or {}).get("warnings") or []
    defs = metric_definitions(open_loop)
    if "ttfb_s" in summary:
        defs["ttfb_s"] = ("Time to first byte = t_first - t_start, over the ok requests of the "
                          "measurement window that recorded t_first.")
    defs.update(ext_defs)
    summary["metric_definitions"] = defs
    return summary


def write_summary(run_dir: Path, out_path: Path) -> dict:
    summary = summarize(Path(run_dir))
    write_json(out_path, summary)
    return summary
