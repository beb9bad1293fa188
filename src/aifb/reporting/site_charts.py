"""The offline site's interactive sweep charts: throughput and latency percentiles against the
swept level, as Vega-Lite specs built with Altair from a sweep's report.json levels.

Unlike the PNGs of aifb.reporting.sweep_plots, these are drawn in the browser: hovering a
point shows its numbers, clicking it opens the level's run page (Vega's `href` channel), and the
latency SLO thresholds are drawn as dashed lines.
"""

from __future__ import annotations

import altair as alt

from aifb.analysis.slo import LATENCY_STATS, parse_rules
from aifb.analysis.sweep_verdict import LATENCY_KEYS, level_str
from aifb.units import format_metric, format_rate, format_seconds

WIDTH, HEIGHT = 560, 300
SLO_COLOR = "#c62828"
VERDICT_COLORS = {"pass": "#2e7d32", "fail": "#ef6c00", "failed run": "#c62828"}


def run_page_href(bid: str | None) -> str | None:
    """A run page's address relative to a sweep page (sweeps/<name>.html -> runs/<id>.html)."""
    return f"../runs/{bid}.html" if bid else None


def _level_value(level):
    return level if isinstance(level, (int, float)) and not isinstance(level, bool) else str(level)


def _x(param: str, levels: list):
    values = [_level_value(v) for v in levels]
    if values and all(isinstance(v, (int, float)) for v in values):
        log = all(v > 0 for v in values) and max(values) / min(values) >= 4
        scale = (alt.Scale(type="log", base=2, nice=False, padding=20) if log
                 else alt.Scale(nice=False, padding=20, zero=False))
        return alt.X("level:Q", title=param, scale=scale,
                     axis=alt.Axis(values=values, format="~g", grid=False))
    return alt.X("level:O", title=param, sort=[str(v) for v in values],
                 axis=alt.Axis(labelAngle=0))


def _slo_layers(y, rows: list[dict]) -> list:
    """Dashed threshold lines with their rule written beside them."""
    if not rows:
        return []
    data = alt.Data(values=rows)
    return [alt.Chart(data).mark_rule(color=SLO_COLOR, strokeDash=[6, 4], strokeWidth=1.5)
            .encode(y=y, tooltip=[alt.Tooltip("label:N", title="SLO")]),
            alt.Chart(data).mark_text(align="left", dx=4, dy=-7, color=SLO_COLOR, fontSize=11)
            .encode(y=y, x=alt.value(4), text="label:N")]


def _spec(layers: list, title: str) -> dict:
    chart = alt.layer(*layers).properties(title=title, width=WIDTH, height=HEIGHT)
    return chart.configure_view(stroke="#ddd").to_dict()


def _no_data(title: str) -> dict:
    text = alt.Chart(alt.Data(values=[{"t": "no level has numbers yet"}])).mark_text(
        fontSize=14, color=SLO_COLOR).encode(text="t:N")
    return _spec([text], title)


def throughput_spec(report: dict) -> dict:
    """Throughput (ok requests/s) per level, coloured by verdict; rps SLO rules as lines."""
    param, name = report.get("param") or "level", report.get("sweep") or "sweep"
    levels = report.get("levels") or []
    title = f"{name}: throughput vs {param}"
    rows = [{"level": _level_value(l["level"]), "y": l["throughput"],
             "throughput": format_rate(l["throughput"]), "verdict": l.get("verdict"),
             "verdict_text": l.get("verdict_text") or "", "run": ", ".join(l.get("ids") or []),
             "href": run_page_href((l.get("ids") or [None])[0])}
            for l in levels if l.get("throughput") is not None]
    if not rows:
        return _no_data(title)
    x = _x(param, [l["level"] for l in levels])
    y = alt.Y("y:Q", title="throughput (requests/s, ok only)", scale=alt.Scale(zero=True))
    base = alt.Chart(alt.Data(values=rows))
    layers = [base.mark_line(color="#1f77b4").encode(x=x, y=y),
              base.mark_point(filled=True, size=110, cursor="pointer").encode(
                  x=x, y=y, href="href:N",
                  color=alt.Color("verdict:N", title="verdict",
                                  scale=alt.Scale(domain=list(VERDICT_COLORS),
                                                  range=list(VERDICT_COLORS.values()))),
                  tooltip=[alt.Tooltip("level:N", title=param),
                           alt.Tooltip("throughput:N", title="throughput"),
                           alt.Tooltip("verdict_text:N", title="verdict"),
                           alt.Tooltip("run:N", title="run (click to open)")])]
    slo = [{"y": r.threshold, "label": f"SLO {r.text}"}
           for r in parse_rules(report.get("slo")) if r.metric == "rps"]
    return _spec(layers + _slo_layers(y, slo), title)


def latency_spec(report: dict) -> dict:
    """p50/p95/p99 per level (ms below a second), latency SLO thresholds as dashed lines."""
    param, name = report.get("param") or "level", report.get("sweep") or "sweep"
    levels = report.get("levels") or []
    title = f"{name}: latency percentiles vs {param}"
    rules = [r for r in parse_rules(report.get("slo")) if r.metric in LATENCY_STATS]
    values = [(l.get("latency") or {}).get(k) for l in levels for k in LATENCY_KEYS]
    values = [v for v in values if v is not None] + [r.threshold for r in rules]
    if not any((l.get("latency") or {}).get(k) is not None for l in levels for k in LATENCY_KEYS):
        return _no_data(title)
    factor, unit = (1e3, "ms") if max(values) < 1.0 else (1.0, "s")
    rows = [{"level": _level_value(l["level"]), "percentile": k, "y": v * factor,
             "latency": format_seconds(v), "verdict_text": l.get("verdict_text") or "",
             "run": ", ".join(l.get("ids") or []),
             "href": run_page_href((l.get("ids") or [None])[0])}
            for l in levels for k in LATENCY_KEYS
            if (v := (l.get("latency") or {}).get(k)) is not None]
    positive = [r["y"] for r in rows] + [r.threshold * factor for r in rules]
    log = min(positive) > 0 and max(positive) / min(positive) > 50
    x = _x(param, [l["level"] for l in levels])
    y = alt.Y("y:Q", title=f"latency ({unit}), pooled over clients",
              scale=alt.Scale(type="log") if log else alt.Scale(zero=True))
    color = alt.Color("percentile:N", title="percentile", sort=list(LATENCY_KEYS),
                      scale=alt.Scale(domain=list(LATENCY_KEYS),
                                      range=["#90caf9", "#1e88e5", "#0d47a1"]))
    base = alt.Chart(alt.Data(values=rows))
    layers = [base.mark_line().encode(x=x, y=y, color=color),
              base.mark_point(filled=True, size=90, cursor="pointer").encode(
                  x=x, y=y, color=color, href="href:N",
                  tooltip=[alt.Tooltip("level:N", title=param),
                           alt.Tooltip("percentile:N", title="percentile"),
                           alt.Tooltip("latency:N", title="latency"),
                           alt.Tooltip("verdict_text:N", title="verdict"),
                           alt.Tooltip("run:N", title="run (click to open)")])]
    slo = [{"y": r.threshold * factor, "label": f"SLO {r.text}"} for r in rules]
    return _spec(layers + _slo_layers(y, slo), title)


def level_rows(report: dict) -> list[dict]:
    """The sweep page's table: one row per level with its verdict and its runs."""
    out = []
    for l in report.get("levels") or []:
        lat = l.get("latency") or {}
        out.append({"level": level_str(l["level"]), "status": l.get("status"),
                    "throughput": format_rate(l.get("throughput")),
                    **{k: format_seconds(lat.get(k)) for k in LATENCY_KEYS},
                    "error_rate": format_metric("error_rate", l.get("error_rate")),
                    "verdict": l.get("verdict_text") or l.get("verdict") or "",
                    "ids": list(l.get("ids") or [])})
    return out
