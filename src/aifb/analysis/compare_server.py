"""A rerun's server block against its original's: the key figures of summary.json `server`
(aifb.telemetry.server) side by side, with their deltas and a tolerance each.

Compared (when both runs have the figure):

    requests_ratio          server.requests_ratio.value: the server's count / the client's.
                            Absolute delta; tolerance = the two runs' own ratio tolerances
                            added: each valid run lies within 1 +/- its own tolerance, so two
                            valid runs can differ by up to their sum; more means one of them
                            counted something else (another client, a miscount), which that
                            run's validity warnings already say.
    cpu_s_per_1k_requests   server.efficiency: service CPU-seconds per 1,000 requests. Relative
                            delta; tolerance SERVER_TOLERANCE (see its comment).
    gpu_j_per_request,      server.efficiency.gpu: GPU energy (NVML) per ok request and per
    gpu_j_per_output_token  output token. Relative; SERVER_TOLERANCE.
    cpu_energy_j_per_1k_requests
                            server.efficiency.cpu_energy_j (RAPL) x 1000 / the run's requests
                            (summary.json requests.total). Relative; SERVER_TOLERANCE.

A server figure never decides the verdict (the client's throughput and latency do: they are
what the benchmark reports); one outside its tolerance is a warning in comparison.json/.md,
because a changed server-side cost with the same client figures is worth a look (a changed
server build or configuration, another tenant on the node), not a failed reproduction.
"""

from __future__ import annotations

# Relative tolerances of the server's efficiency figures between a run and its rerun. Not
# measured from repeats (sweeps measure the client figures' spread only): chosen as twice the
# throughput default (aifb.analysis.compare.DEFAULT_TOLERANCE rps 10 %) because each of these
# figures is a counter's increase over the window divided by the request count, so it carries
# throughput's noise plus its own: the counters are interpolated at the window's edges from
# samples one interval apart, and part of what they count does not scale with the requests
# (the server's background work, e.g. Redis' serverCron, PostgreSQL's background writer; a
# GPU's idle power). Warnings only, so a generous bound costs nothing; adjust it here by name.
SERVER_TOLERANCE = 0.20
SERVER_TOLERANCE_SOURCE = (
    "server figures (never part of the verdict; outside the tolerance is a warning): "
    "requests_ratio within the two runs' own ratio tolerances added (absolute); CPU-s per 1k "
    "requests and energy per request or token within ±20 % (twice the throughput default: "
    "window-edge interpolation and work that does not scale with requests; "
    "aifb.analysis.compare_server.SERVER_TOLERANCE)")
FIGURES = (
    # key, label, unit
    ("requests_ratio", "server/client requests", ""),
    ("cpu_s_per_1k_requests", "service CPU-s per 1k requests", "s"),
    ("gpu_j_per_request", "GPU energy per request", "J"),
    ("gpu_j_per_output_token", "GPU energy per output token", "J"),
    ("cpu_energy_j_per_1k_requests", "CPU package energy per 1k requests", "J"),
)


def key_figures(summary: dict) -> dict:
    """The compared figures of one summary (None where it has none)."""
    srv = summary.get("server") or {}
    eff = srv.get("efficiency") or {}
    gpu = eff.get("gpu") or {}
    ratio = srv.get("requests_ratio") or {}
    n = (summary.get("requests") or {}).get("total")
    rapl = eff.get("cpu_energy_j")
    return {"requests_ratio": ratio.get("value"), "ratio_tolerance": ratio.get("tolerance"),
            "cpu_s_per_1k_requests": eff.get("cpu_s_per_1k_requests"),
            "gpu_j_per_request": gpu.get("j_per_request"),
            "gpu_j_per_output_token": gpu.get("j_per_output_token"),
            "cpu_energy_j_per_1k_requests": rapl * 1000 / n if rapl is not None and n else None}


def compare_server(original: dict, rerun: dict, oid: str, rid: str) -> dict:
    """{"compared": [{figure, label, original, rerun, delta, rel_delta, tolerance, absolute,
    within}], "warnings": [...], "tolerance_source", "note"}; `compared` is empty, and `note`
    says why, when a run has no server block."""
    missing = [label for label, s in ((oid, original), (rid, rerun)) if not s.get("server")]
    out = {"compared": [], "warnings": [], "tolerance_source": SERVER_TOLERANCE_SOURCE,
           "note": None}
    if missing:
        out["note"] = (f"{' and '.join(missing)} recorded no server telemetry: the server side "
                       "is not compared")
        return out
    a, b = key_figures(original), key_figures(rerun)
    for key, label, unit in FIGURES:
        if a[key] is None or b[key] is None:
            continue
        x, y = float(a[key]), float(b[key])
        absolute = key == "requests_ratio"
        if absolute:
            if a["ratio_tolerance"] is None or b["ratio_tolerance"] is None:
                continue
            tol = float(a["ratio_tolerance"]) + float(b["ratio_tolerance"])
        else:
            tol = SERVER_TOLERANCE
        rel = (y - x) / abs(x) if x else None
        change = abs(y - x) if absolute else (abs(rel) if rel is not None else None)
        within = None if change is None else change <= tol + 1e-12
        out["compared"].append({"figure": key, "label": label, "unit": unit, "original": x,
                                "rerun": y, "delta": y - x, "rel_delta": rel, "tolerance": tol,
                                "absolute": absolute, "within": within})
        if within is False:
            how = (f"{y - x:+.4f} (tolerance ±{tol:.3f})" if absolute
                   else f"{rel * 100:+.1f}% (tolerance ±{tol * 100:.0f}%)")
            out["warnings"].append(f"{label}: {x:.4g} -> {y:.4g}{unit and ' ' + unit}, "
                                   f"{how}: the service's side changed between {oid} and {rid}")
    if not out["compared"]:
        out["note"] = "neither run has a server figure that the other has too"
    return out


def markdown(server: dict | None) -> list[str]:
    """The comparison's '### Server side' lines (none without a server comparison)."""
    if not server:
        return []
    lines = ["### Server side", ""]
    if server.get("note") and not server.get("compared"):
        return lines + [f"Not compared: {server['note']}.", ""]
    lines += ["| Figure | original | rerun | Δ | Δ % | Tolerance | Within |",
              "|---|---|---|---|---|---|---|"]
    for m in server["compared"]:
        pct = "n/a" if m["rel_delta"] is None else f"{m['rel_delta'] * 100:+.1f}%"
        tol = f"±{m['tolerance']:.3f}" if m["absolute"] else f"±{m['tolerance'] * 100:.0f}%"
        mark = {True: "✅", False: "⚠️", None: "—"}[m["within"]]
        lines.append(f"| {m['label']} | {m['original']:.4g} | {m['rerun']:.4g} | "
                     f"{m['delta']:+.4g} | {pct} | {tol} | {mark} |")
    lines += ["", f"Tolerance: {server['tolerance_source']}."]
    for w in server["warnings"]:
        lines.append(f"- **Warning:** {w}.")
    lines.append("")
    return lines
