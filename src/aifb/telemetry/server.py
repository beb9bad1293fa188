"""summary.json's `server` block: the service seen from inside over the measurement window.

    metrics          every series: counters as delta and rate, gauges as n/mean/p95/max
    sources          per source: samples, gaps (failed scrapes) and their errors, coverage
    requests_ratio   what the server counted / what the client recorded, in the window
    efficiency       service CPU-seconds per 1,000 requests; GPU utilisation, energy, J/request,
                     J/output token, output tokens/s per GPU; CPU package energy (RAPL)
    llm              KV-cache usage, queue (waiting), prefix-cache hit rate, preemptions,
                     server-side TTFT against the client's
    sampler          the sampler's own CPU time in the window
    warnings         a ratio outside its tolerance, a source with gaps

`client` (from the records, computed by aifb.analysis.metrics.server) holds: requests (completed in the
window, ok or not), ok, output_tokens (sum over ok requests with a count), ttft_mean_s.
Pure Python, like aifb.telemetry.window.

Nothing here names a service kind. What is counted comes from the sources themselves, as each
kind declares them (aifb.services.<kind> `telemetry_sources`) and run.json `telemetry.sources`
records them, under a source's `figures`:

    "requests": {"metrics": [counter names, summed], "client": "requests" | "ok" |
                 "output_tokens" (the client count it is compared with), "basis": "in words",
                 "exclude": {label: [values]} (series left out, e.g. the sampler's own calls),
                 "less_own_samples": n (the sampler's own requests per successful sample),
                 "lag_s": s (the server's statistics lag, added to the tolerance)}
    "llm":      {"kv_cache_usage": [gauges, first found], "waiting": [...], "running": [...],
                 "prefix_cache": {"sum": hits counter, "count": queries counter},
                 "preemptions": counter, "ttft": {"sum": ..._sum, "count": ..._count}}
    "queue":    [gauges drawn in the panel's "server queue / in flight"]
"""

from __future__ import annotations

from aifb.telemetry.window import COVERAGE_MIN, Telemetry

BASE_TOLERANCE = 0.05
PROCESS_CPU = ("process", "cpu_seconds_total")
SERVER_DEFINITIONS = {
    "server.metrics": ("Every series the sampler recorded, over the measurement window: counters "
                       "as `delta` (increase, interpolated linearly at the window's edges, resets "
                       "folded in) and `rate` (delta / covered seconds); gauges as n/mean/p95/max "
                       "of the samples inside the window."),
    "server.sources": ("Per telemetry source: successful samples in the window, gaps (failed "
                       "scrapes: endpoint down, slow or garbage), coverage = samples / "
                       "(window / interval)."),
    "server.requests_ratio": ("Requests (or tokens) the server counted in the window / those the "
                              "client recorded (completed in the window). Outside 1 +/- tolerance "
                              "(5 % + one sampling interval's share of the window, plus the "
                              "server's own statistics lag where its kind declares one: "
                              "PostgreSQL 1 s) is a validity warning: "
                              "another client used the service, or the client miscounts."),
    "server.efficiency.cpu_s_per_1k_requests": ("CPU seconds (user + system) of the service's "
                                                "process tree in the window x 1000 / requests "
                                                "completed in the window."),
    "server.efficiency.gpu": ("NVML per GPU: mean utilisation, mean power; energy = increase of "
                              "the driver's energy counter in the window (else the integral of "
                              "power); J/request and J/output token divide the energy of all "
                              "GPUs by the client's counts."),
    "server.llm.server_ttft_mean_s": ("The server's own mean TTFT in the window (its histogram's "
                                      "_sum / _count increase); client minus server = the "
                                      "network's and the client's share."),
}


def _ratio(server: float | None, client: float | None, basis: str, tolerance: float) -> dict | None:
    if server is None or not client:
        return None
    value = server / client
    return {"value": value, "server": server, "client": client, "basis": basis,
            "tolerance": tolerance, "within_tolerance": abs(value - 1.0) <= tolerance}


def declared(sources: list[dict], what: str) -> list[tuple[str, dict]]:
    """(source name, declaration) for every source whose `figures` declare `what`."""
    return [(s.get("name") or s.get("type"), s["figures"][what]) for s in sources
            if isinstance(s.get("figures"), dict) and s["figures"].get(what)]


def _excluding(exclude: dict):
    if not exclude:
        return None
    return lambda labels: all(labels.get(k) not in values for k, values in exclude.items())


def requests_ratio(tel: Telemetry, sources: list[dict], lo: float, hi: float, interval_s: float,
                   client: dict) -> dict | None:
    """The first source that declares `requests` (one per kind) against the client's count."""
    found = declared(sources, "requests")
    if not found:
        return None
    src, spec = found[0]
    span = hi - lo
    deltas = [tel.sum_delta(src, name, lo, hi, where=_excluding(spec.get("exclude") or {}))
              for name in spec["metrics"]]
    if None in deltas:
        return None
    server = sum(deltas)
    if spec.get("less_own_samples"):
        own = sum(1 for t, ok, _ in tel.up.get(src, []) if ok and lo <= t <= hi)
        server -= spec["less_own_samples"] * own
    # each edge's value is interpolated between samples one interval apart: half an interval's
    # share of the window per edge bounds that error (measured: 0.3-1.1 % at 250 ms-1 s); a
    # server whose statistics lag (PostgreSQL) declares that lag
    tol = BASE_TOLERANCE + interval_s / span + float(spec.get("lag_s") or 0.0) / span
    return _ratio(server, client.get(spec.get("client", "requests")), spec["basis"], tol)


def _first_gauge(tel: Telemetry, source: str, names: list, lo: float, hi: float) -> dict | None:
    for name in names:
        for s in tel.find(source, name):
            st = tel.gauge_stats(s, lo, hi)
            if st:
                return st
    return None


def _mean_of(tel: Telemetry, src: str, pair: dict, lo: float, hi: float) -> float | None:
    """_sum / _count increase of a histogram (or hits / queries): the window's mean (ratio)."""
    num = tel.sum_delta(src, pair["sum"], lo, hi)
    den = tel.sum_delta(src, pair["count"], lo, hi)
    return num / den if num is not None and den else None


def llm_block(tel: Telemetry, sources: list[dict], lo: float, hi: float, client: dict) -> dict | None:
    """The LLM figures of the first source that declares `llm` and was sampled."""
    for src, spec in declared(sources, "llm"):
        if any(k[0] == src for k in tel.series):
            break
    else:
        return None
    kv = _first_gauge(tel, src, spec.get("kv_cache_usage", []), lo, hi)
    waiting = _first_gauge(tel, src, spec.get("waiting", []), lo, hi)
    running = _first_gauge(tel, src, spec.get("running", []), lo, hi)
    out = {"kv_cache_usage_p95": kv and kv["p95"], "kv_cache_usage_max": kv and kv["max"],
           "waiting_max": waiting and waiting["max"], "running_mean": running and running["mean"]}
    if spec.get("prefix_cache"):
        out["prefix_cache_hit_rate"] = _mean_of(tel, src, spec["prefix_cache"], lo, hi)
    if spec.get("preemptions"):
        out["preemptions"] = tel.sum_delta(src, spec["preemptions"], lo, hi)
    if spec.get("ttft"):
        server = out["server_ttft_mean_s"] = _mean_of(tel, src, spec["ttft"], lo, hi)
        c = out["client_ttft_mean_s"] = client.get("ttft_mean_s")
        out["network_client_share_s"] = c - server if c is not None and server is not None else None
    return out


def efficiency(tel: Telemetry, lo: float, hi: float, client: dict) -> dict:
    span = hi - lo
    out: dict = {}
    cpu = tel.sum_delta(*PROCESS_CPU, lo, hi)
    n = client.get("requests")
    if cpu is not None:
        out["service_cpu_s"] = cpu
        out["service_cpu_cores"] = cpu / span
        out["cpu_s_per_1k_requests"] = cpu * 1000 / n if n else None
    node_cpu = [s for s in tel.find("node", "cpu_seconds_total")]
    if node_cpu:
        deltas = {s.labels.get("mode"): tel.counter_delta(s, lo, hi)[0] for s in node_cpu}
        total = sum(d for d in deltas.values() if d is not None)
        idle = sum(deltas.get(m) or 0.0 for m in ("idle", "iowait"))
        out["node_cpu_busy_ratio"] = (total - idle) / total if total > 0 else None
    rapl = tel.sum_delta("rapl", "energy_joules_total", lo, hi)
    if rapl is not None:
        out["cpu_energy_j"] = rapl
    gpus = {}
    for s in tel.find("gpu", "power_watts"):
        g = s.labels.get("gpu")
        gpus.setdefault(g, {})["power_w_mean"] = (tel.gauge_stats(s, lo, hi) or {}).get("mean")
        gpus[g]["energy_j_from_power"] = tel.integral(s, lo, hi)
    for s in tel.find("gpu", "utilization_ratio"):
        gpus.setdefault(s.labels.get("gpu"), {})["util_mean"] = (tel.gauge_stats(s, lo, hi) or {}).get("mean")
    for s in tel.find("gpu", "energy_joules_total"):
        gpus.setdefault(s.labels.get("gpu"), {})["energy_j"] = tel.counter_delta(s, lo, hi)[0]
    if gpus:
        energy = 0.0
        for g in gpus.values():
            e = g.get("energy_j")
            if e is None:   # no energy counter on this GPU (pre-Volta): integrate its power
                e = g["energy_j"] = g.get("energy_j_from_power")
                g["energy_source"] = "integral of power_watts" if e is not None else None
            else:
                g["energy_source"] = "NVML total energy counter"
            energy += e or 0.0
        utils = [g["util_mean"] for g in gpus.values() if g.get("util_mean") is not None]
        tokens, ok = client.get("output_tokens"), client.get("ok")
        out["gpu"] = {"count": len(gpus), "per_gpu": gpus,
                      "util_mean": sum(utils) / len(utils) if utils else None,
                      "energy_j": energy,
                      "j_per_request": energy / ok if ok else None,
                      "j_per_output_token": energy / tokens if tokens else None,
                      "output_tokens_per_s_per_gpu": tokens / span / len(gpus) if tokens else None}
    return out


def server_block(tel: Telemetry, lo: float, hi: float, interval_s: float,
                 client: dict, run_telemetry: dict | None = None) -> dict:
    """The block; `run_telemetry` is run.json's `telemetry` (its sources and what they declare)."""
    win = tel.window(lo, hi, interval_s)
    sources = (run_telemetry or {}).get("sources") or []
    optional = {s.get("name") for s in sources if s.get("optional")}
    warnings, unavailable = [], {}
    for src, cov in win["sources"].items():
        if src in optional and not cov["ever_up"]:
            unavailable[src] = cov["first_error"]   # e.g. no GPU here: not a problem
            continue
        if cov["coverage"] is not None and cov["coverage"] < COVERAGE_MIN:
            why = f" ({'; '.join(cov['errors'])})" if cov["errors"] else ""
            warnings.append(f"Telemetry source {src} has {cov['gaps']} gap(s): "
                            f"{cov['samples']} of ~{cov['expected']} samples in the window{why}; "
                            "its server figures cover part of the window only.")
    for src in unavailable:
        win["sources"].pop(src, None)
        win["metrics"].pop(src, None)
    ratio = requests_ratio(tel, sources, lo, hi, interval_s, client)
    if ratio and not ratio["within_tolerance"]:
        warnings.append(f"server.requests_ratio = {ratio['value']:.4f} is outside 1 +/- "
                        f"{ratio['tolerance']:.3f} ({ratio['basis']}: server {ratio['server']:.0f}, "
                        f"client {ratio['client']:.0f}): another client may have used the "
                        "service during the run, or the client miscounts.")
    sampler = tel.sum_delta("sampler", "cpu_seconds_total", lo, hi)
    block = {"window": [lo, hi], "interval_s": interval_s, "sources": win["sources"],
             "unavailable": unavailable, "requests_ratio": ratio,
             "efficiency": efficiency(tel, lo, hi, client),
             "sampler": {"cpu_s": sampler, "cpu_util": sampler / (hi - lo) if sampler is not None else None,
                         **{k: (run_telemetry or {}).get(k) for k in
                            ("sampler_cpu_s", "sampler_wall_s", "sampler_cpu_util")}},
             "dropped_lines": tel.dropped_lines,
             "warnings": warnings, "metrics": win["metrics"]}
    llm = llm_block(tel, sources, lo, hi, client)
    if llm:
        block["llm"] = llm
    return block
