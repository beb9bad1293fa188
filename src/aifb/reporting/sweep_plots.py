"""The sweep report's three plots against the swept level (throughput, latency percentiles,
error rate), drawn from the levels aifb.analysis.sweep_verdict judged."""

from __future__ import annotations

from pathlib import Path

from aifb.analysis.slo import SloRule
from aifb.analysis.sweep_verdict import LATENCY_KEYS, STATUS_LABEL, level_str

PLOT_FILES = {
    "throughput": "plots/throughput_vs_level.png",
    "latency": "plots/latency_vs_level.png",
    "error_rate": "plots/error_rate_vs_level.png",
}
PLAIN_LATENCY = ("mean", "min", "max", "p50", "p90", "p95", "p99", "p999")
VERDICT_COLORS = {"pass": "#2e7d32", "fail": "#ef6c00", "failed run": "#c62828"}


def _x_encoding(alt, param: str, levels: list):
    numeric = levels and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in levels)
    if numeric:
        positive = all(v > 0 for v in levels)
        log = positive and max(levels) / min(levels) >= 4
        scale = alt.Scale(type="log", base=2, nice=False, padding=20) if log else \
            alt.Scale(nice=False, padding=20, zero=False)
        return alt.X("level:Q", title=param, scale=scale,
                     axis=alt.Axis(values=list(levels), format="~g", grid=False))
    return alt.X("level:O", title=param, sort=[str(v) for v in levels],
                 axis=alt.Axis(labelAngle=0))


def _lvl_value(level):
    return level if isinstance(level, (int, float)) and not isinstance(level, bool) else str(level)


def _note_layer(alt, x, y, rows: list[dict]):
    """Red 'failed' / grey 'not run' labels at the bottom of levels without numbers."""
    if not rows:
        return None
    return alt.Chart(alt.Data(values=rows)).mark_text(
        dy=-8, fontSize=11, fontWeight="bold").encode(
        x=x, y=y, text="label:N", color=alt.Color("color:N", scale=None))


def _no_data_rows(levels: list[dict], y_value: float = 0.0) -> list[dict]:
    rows = []
    for l in levels:
        if l["throughput"] is None:
            label = "failed" if l["verdict"] == "failed run" else STATUS_LABEL.get(
                l["status"], l["status"]).split(" ", 1)[-1]
            rows.append({"level": _lvl_value(l["level"]), "y": y_value, "label": label,
                         "color": "#c62828" if l["verdict"] == "failed run" else "#757575"})
    return rows


def _clip0(v: float | None) -> float | None:
    return None if v is None else max(v, 0.0)


def _threshold_layers(alt, y, value: float, label: str) -> list:
    d = alt.Data(values=[{"y": value, "label": label}])
    return [alt.Chart(d).mark_rule(color="#c62828", strokeDash=[6, 4], strokeWidth=1.5)
            .encode(y=y),
            alt.Chart(d).mark_text(align="left", dx=4, dy=-7, color="#c62828", fontSize=11)
            .encode(y=y, x=alt.value(4), text="label:N")]


def _save(chart, path: Path) -> None:
    # Here, not at the top: aifb.reporting.plots loads altair and vl-convert (about two seconds),
    # and this module is imported with the sweep report by the capacity search and the CLI,
    # which draw only when they build a report.
    from aifb.reporting.plots import save_png

    save_png(chart, path)


def write_sweep_plots(out_dir: Path, param: str, name: str, levels: list[dict], rules: list[SloRule],
           optimal: dict | None) -> dict:
    """Throughput, latency percentiles and error rate against the level. Every layer plots its
    numbers in a field named `y` so the layers share one y axis with one title."""
    import altair as alt

    level_values = [_lvl_value(l["level"]) for l in levels]
    x = _x_encoding(alt, param, level_values)
    size = (520, 320)
    opt_level = _lvl_value(optimal["level"]) if optimal else None
    opt_text = f"optimal: {level_str(optimal['level'])}" if optimal else None
    color = alt.Color("verdict:N", title="verdict",
                      scale=alt.Scale(domain=list(VERDICT_COLORS), range=list(VERDICT_COLORS.values())))
    empty = not any(l["throughput"] is not None for l in levels)

    # --- throughput (with 95 % CI error bars and the individual repeats when there are repeats)
    ytitle, yscale = "throughput (requests/s, ok only)", alt.Scale(zero=True)
    y = alt.Y("y:Q", title=ytitle, scale=yscale)
    rows = [{"level": _lvl_value(l["level"]), "y": l["throughput"], "verdict": l["verdict"],
             "low": _clip0((l["ci"] or {}).get("rps", {}).get("low")),
             "high": (l["ci"] or {}).get("rps", {}).get("high")}
            for l in levels if l["throughput"] is not None]
    runs = [{"level": _lvl_value(l["level"]), "y": r["rps"]} for l in levels if l["ci"]
            for r in l["runs"] if r["rps"] is not None]
    layers = []
    if rows:
        base = alt.Chart(alt.Data(values=rows))
        layers.append(base.mark_line(color="#1f77b4").encode(x=x, y=y))
        if any(r["low"] is not None for r in rows):
            layers.append(base.transform_filter("datum.low != null").mark_errorbar(
                ticks=True, color="#1f77b4").encode(x=x, y=alt.Y("low:Q", title=ytitle, scale=yscale),
                                                    y2="high:Q"))
        if runs:
            layers.append(alt.Chart(alt.Data(values=runs)).mark_point(
                color="#555", opacity=0.5, size=25).encode(x=x, y=y))
        layers.append(base.mark_point(filled=True, size=90).encode(
            x=x, y=y, color=color, tooltip=["level:N", "y:Q", "verdict:N"]))
        best = [r for r in rows if r["level"] == opt_level]
        if best:
            layers.append(alt.Chart(alt.Data(values=best)).mark_point(
                shape="circle", size=420, strokeWidth=2, color="#2e7d32").encode(x=x, y=y))
            layers.append(alt.Chart(alt.Data(values=best)).mark_text(
                dy=-20, fontWeight="bold", color="#2e7d32").encode(x=x, y=y, text=alt.value("optimal")))
    for r in rules:
        if r.metric == "rps":
            layers += _threshold_layers(alt, y, r.threshold, f"SLO {r.text}")
    note = _note_layer(alt, x, y, _no_data_rows(levels))
    if note is not None:
        layers.append(note)
    _save(_finish(alt, layers, f"{name}: throughput vs {param}", size, empty),
          out_dir / PLOT_FILES["throughput"])

    # --- latency percentiles, SLO threshold(s) and the optimum
    lat_rules = [r for r in rules if r.metric in PLAIN_LATENCY]
    vals = [l["latency"][k] for l in levels for k in LATENCY_KEYS if l["latency"][k] is not None]
    vals += [r.threshold for r in lat_rules]
    ms = bool(vals) and max(vals) < 1.0
    f = 1e3 if ms else 1.0
    rows = []
    for l in levels:
        for k in LATENCY_KEYS:
            v = l["latency"][k]
            if v is None:
                continue
            ci = (l["ci"] or {}).get(k) or {}
            rows.append({"level": _lvl_value(l["level"]), "percentile": k, "y": v * f,
                         "low": ci["low"] * f if ci.get("low") is not None else None,
                         "high": ci["high"] * f if ci.get("high") is not None else None})
    positive = [r["y"] for r in rows] + [r.threshold * f for r in lat_rules]
    log = bool(rows) and min(positive) > 0 and max(positive) / min(positive) > 50
    if log:  # a log axis cannot show a CI reaching zero or below: clip it at the axis floor
        floor = min(positive) / 2
        for r in rows:
            if r["low"] is not None:
                r["low"] = max(r["low"], floor)
    ytitle = f"latency ({'ms' if ms else 's'}), pooled over clients"
    yscale = alt.Scale(type="log") if log else alt.Scale(zero=True)
    y = alt.Y("y:Q", title=ytitle, scale=yscale)
    pcolor = alt.Color("percentile:N", title="percentile", sort=list(LATENCY_KEYS),
                       scale=alt.Scale(domain=list(LATENCY_KEYS),
                                       range=["#90caf9", "#1e88e5", "#0d47a1"]))
    layers = []
    if rows:
        base = alt.Chart(alt.Data(values=rows))
        layers.append(base.mark_line(point=True).encode(
            x=x, y=y, color=pcolor, tooltip=["level:N", "percentile:N", "y:Q"]))
        if any(r["low"] is not None for r in rows):
            layers.append(base.transform_filter("datum.low != null").mark_errorbar(ticks=True)
                          .encode(x=x, y=alt.Y("low:Q", title=ytitle, scale=yscale),
                                  y2="high:Q", color=pcolor))
    for r in lat_rules:
        layers += _threshold_layers(alt, y, r.threshold * f, f"SLO {r.text}")
    if opt_level is not None:
        d = alt.Data(values=[{"level": opt_level, "label": opt_text}])
        layers.append(alt.Chart(d).mark_rule(color="#2e7d32", strokeDash=[2, 3], strokeWidth=2)
                      .encode(x=x))
        last = opt_level == level_values[-1] and len(level_values) > 1
        layers.append(alt.Chart(d).mark_text(align="right" if last else "left",
                                             dx=-5 if last else 5, color="#2e7d32",
                                             fontWeight="bold")
                      .encode(x=x, y=alt.value(12), text="label:N"))
    note = _note_layer(alt, x, y, _no_data_rows(levels, min(positive) if log else 0.0))
    if note is not None:
        layers.append(note)
    _save(_finish(alt, layers, f"{name}: latency percentiles vs {param}", size, empty),
          out_dir / PLOT_FILES["latency"])

    # --- error rate
    y = alt.Y("y:Q", title="error rate (% of requests)", scale=alt.Scale(zero=True))
    rows = [{"level": _lvl_value(l["level"]), "y": l["error_rate"] * 100, "verdict": l["verdict"]}
            for l in levels if l["error_rate"] is not None]
    layers = []
    if rows:
        base = alt.Chart(alt.Data(values=rows))
        layers.append(base.mark_line(color="#999").encode(x=x, y=y))
        layers.append(base.mark_point(filled=True, size=90).encode(
            x=x, y=y, color=color, tooltip=["level:N", "y:Q", "verdict:N"]))
    for r in rules:
        if r.metric == "error_rate":
            layers += _threshold_layers(alt, y, r.threshold * 100, f"SLO {r.text}")
    note = _note_layer(alt, x, y, _no_data_rows(levels))
    if note is not None:
        layers.append(note)
    _save(_finish(alt, layers, f"{name}: error rate vs {param}", size, empty),
          out_dir / PLOT_FILES["error_rate"])
    return dict(PLOT_FILES)


def _finish(alt, layers: list, title: str, size: tuple[int, int], empty: bool):
    if not layers:  # nothing at all to draw: still a valid, labelled image
        layers = [alt.Chart(alt.Data(values=[{"t": "no data"}])).mark_text(
            fontSize=14, color="#c62828").encode(text="t:N")]
    head = alt.TitleParams(title, subtitle="no level produced a summary: every run failed or "
                           "has not run", subtitleColor="#c62828") if empty else title
    chart = alt.layer(*layers).properties(title=head, width=size[0], height=size[1])
    return chart.configure_view(stroke="#ddd").configure_axis(labelFontSize=11, titleFontSize=12)
