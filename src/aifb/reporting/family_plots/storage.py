"""The storage family's plots: payload MiB/s against object size, and the GET time-to-first-byte
CDF per object size (figures from aifb.analysis.metrics.storage)."""

from __future__ import annotations

from pathlib import Path

import altair as alt
import polars as pl

from aifb.analysis.metrics import storage
from aifb.reporting.plots import HEIGHT, WIDTH, configure, no_data_chart, save_png, time_unit


def plots(records_path: Path, run: dict, summary: dict, plots_dir: Path) -> list[dict]:
    st = summary.get("storage") or {}
    bid = summary.get("benchmark_id") or ""
    out = []

    rows = [r for r in st.get("by_size") or []
            if r.get("mib_s") is not None and r["op"] in ("get", "put")]
    name = "storage_mib_s_vs_size.png"
    if rows:
        order = [storage.size_text(s) for s in sorted({r["size"] for r in rows})]
        df = pl.DataFrame({"op": [r["op"] for r in rows],
                           "size_label": [storage.size_text(r["size"]) for r in rows],
                           "mib_s": [r["mib_s"] for r in rows]})
        base = alt.Chart(df).encode(
            x=alt.X("size_label:O", sort=order, title="object size",
                    axis=alt.Axis(labelAngle=0)),
            y=alt.Y("mib_s:Q", title="payload MiB/s (measurement window)"),
            color=alt.Color("op:N", title="operation"))
        chart = alt.layer(base.mark_line(strokeWidth=2),
                          base.mark_point(size=90, filled=True)).properties(
            title=alt.Title("Data rate vs object size", subtitle=f"{bid}: GET and PUT payload; "
                            "ok operations of the measurement window"), width=WIDTH, height=HEIGHT)
        chart = configure(chart)
        caption = ("Payload MiB/s of GET (bodies in) and PUT (bodies out) per object size over "
                   "the measurement window; HEAD and LIST move no payload and are not drawn.")
    else:
        chart = no_data_chart("Data rate vs object size", "no GET or PUT in the measurement window")
        caption = "No GET or PUT in the measurement window: nothing to plot."
    save_png(chart, plots_dir / name)
    out.append({"path": f"plots/{name}", "title": "Data rate vs object size", "caption": caption})

    gets = [r for r in st.get("by_size") or [] if r["op"] == "get" and r.get("ttfb_p50_s") is not None]
    if gets:
        df = storage.measured_ok(run, records_path).filter(
            (pl.col("op") == "get") & pl.col("ttfb").is_not_null() & pl.col("size").is_not_null())
        parts = []
        order = []
        for (size,), part in sorted(df.group_by("size"), key=lambda kv: kv[0]):
            order.append(storage.size_text(int(size)))
            vals = part["ttfb"].sort().to_numpy()
            n = len(vals)
            idx = sorted({min(n - 1, int(k * n / storage.CDF_POINTS)) for k in range(storage.CDF_POINTS)} | {n - 1})
            parts.append(pl.DataFrame({"size": [storage.size_text(int(size))] * len(idx),
                                       "ttfb": [float(vals[i]) for i in idx],
                                       "fraction": [(i + 1) / n for i in idx]}))
        cdf = pl.concat(parts)
        label, factor = time_unit(float(cdf["ttfb"].median()))
        cdf = cdf.with_columns((pl.col("ttfb") * factor).alias("t")).filter(pl.col("t") > 0)
        chart = configure(alt.Chart(cdf).mark_line(interpolate="step-after", strokeWidth=2).encode(
            x=alt.X("t:Q", scale=alt.Scale(type="log"), title=f"time to first byte ({label}, log scale)"),
            y=alt.Y("fraction:Q", scale=alt.Scale(domain=[0, 1]), title="fraction of GETs ≤ TTFB"),
            color=alt.Color("size:N", title="object size", sort=order)).properties(
            title=alt.Title("GET time to first byte", subtitle=f"{bid}: t_first - t_start, ok GETs "
                            "of the measurement window, one curve per object size"),
            width=WIDTH, height=HEIGHT))
        name = "storage_get_ttfb_cdf.png"
        save_png(chart, plots_dir / name)
        out.append({"path": f"plots/{name}", "title": "GET time to first byte",
                    "caption": ("Cumulative distribution of GET time to first byte (response "
                                "headers received) per object size, ok GETs of the measurement "
                                "window, on a log time axis.")})
    return out
