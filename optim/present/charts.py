"""Plotly figures shared by the dashboard pages and the HTML report (no streamlit here).

One visual language everywhere: colour = bit-width, symbol = pruning kind, open marker = simulated,
black ring + dashed line = Pareto front, every axis titled with its unit.
"""

from __future__ import annotations

import textwrap
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from optim.analysis import select
from optim.analysis.labels import bits_label, metric_axis
from optim.present.views import fmt_ms

BIT_COLORS = {32: "#1f77b4", 16: "#2ca02c", 8: "#ff7f0e", 6: "#8c564b", 4: "#d62728", 2: "#9467bd", 0: "#e377c2"}
KIND_SYMBOLS = {"none": "circle", "structured": "square", "unstructured": "diamond", "auto": "triangle-up"}
AXES = {"metric": "Accuracy (top-1, %)", "target_ms": "Latency (ms)", "size_mb": "Size (MB)",
        "latency_ms": "Latency on this CPU (ms, measured)"}
FRONT = "Pareto front"
MARGIN = dict(l=10, r=10, t=50, b=10, pad=2)  # the minimum: automargin grows it to fit labels and titles


def fit(fig: go.Figure) -> go.Figure:
    """Margins that fit the labels: every 2-D axis grows the margin for its tick labels and title (long layer
    names, the x title below its ticks), so nothing is clipped in the page or the offline report."""
    fig.update_xaxes(automargin=True, title_standoff=8)
    fig.update_yaxes(automargin=True, title_standoff=8)
    return fig


def _axis_title(col: str, df: pd.DataFrame, latency_note: str) -> str:
    if col == "metric" and "metric_name" in df and len(df) and df["metric_name"].iloc[0] != "top-1 accuracy":
        return metric_axis(str(df["metric_name"].iloc[0]))
    if col == "target_ms":
        return f"Latency (ms, {latency_note})"
    return AXES.get(col, col)


_PLOT_COLS = ["variant_id", "label", "status", "prune_kind", "prune_ratio", "bits", "opt_level", "metric",
              "metric_lo", "metric_hi", "target_ms", "size_mb", "simulated", "flags", "pareto", "distilled",
              "metric_name"]
Row = dict[str, Any]


def _num(v: Any) -> float | None:
    return None if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA else float(v)


def _records(df: pd.DataFrame, *required: str) -> list[Row]:
    """Plotted columns of the ok rows as plain dicts (pandas per-cell access is slow on wide frames)."""
    recs = df[[c for c in _PLOT_COLS if c in df]].to_dict("records")
    out = []
    for r in recs:
        for c in ("metric", "metric_lo", "metric_hi", "target_ms", "size_mb", "prune_ratio"):
            r[c] = _num(r.get(c))
        if r.get("status") == "ok" and all(r.get(c) is not None for c in required):
            out.append(r)
    return out


def _word(r: Row) -> str:
    name = r.get("metric_name")
    if not isinstance(name, str) or "accuracy" in name:
        return "accuracy"
    return "output cosine" if "cosine" in name else "agreement"


def _opt(r: Row) -> str:
    return f" · ORT graph opt {r['opt_level']}" if isinstance(r.get("opt_level"), str) else ""


def _hover(rows: list[Row]) -> list[str]:
    out = []
    for r in rows:
        ci = f" [{r['metric_lo']:.1f}–{r['metric_hi']:.1f}]" if r.get("metric_lo") is not None else ""
        out.append(
            f"<b>{r.get('label') or r['variant_id']}</b><br>prune {r['prune_kind']} {r['prune_ratio'] or 0:.0%}"
            f" · {bits_label(int(r['bits']))}{_opt(r)}<br>{_word(r)} {r['metric']:.2f} %{ci}"
            f"<br>latency {fmt_ms(r['target_ms'])} · size {r['size_mb']:.3g} MB"
            + ("<br><i>simulated precision</i>" if r.get("simulated") else "")
            + (f"<br>⚑ {_short(str(r['flags']))}" if r.get("flags") else ""))
    return out


HOVER_WIDTH, HOVER_LINES = 70, 3


def _short(text: str) -> str:
    """A variant's flags for its hover box: wrapped, at most a few lines (a long INT8 search note would cover
    the chart); the table below the chart shows them whole."""
    lines = textwrap.wrap(text, HOVER_WIDTH, max_lines=HOVER_LINES, placeholder=" … (whole note in the table)")
    return "<br>".join(lines)


def _distilled(r: Row) -> bool:
    v = r.get("distilled")
    return bool(v) and not (isinstance(v, float) and np.isnan(v))


def _groups(rows: list[Row]) -> list[tuple[str, int, str, list[Row]]]:
    """One legend entry per (bits, pruning kind, distilled): (name, bits, marker symbol, rows)."""
    groups: dict[tuple[int, str, bool], list[Row]] = {}
    for r in rows:
        groups.setdefault((int(r["bits"]), str(r["prune_kind"]), _distilled(r)), []).append(r)
    out = []
    for b, k, d in sorted(groups):
        sym = KIND_SYMBOLS.get(k, "circle")
        out.append((f"{bits_label(b)} · {k}" + (" · distilled" if d else ""), b, sym + ("-dot" if d else ""),
                    groups[(b, k, d)]))
    return out


def _symbols(sym: str, g: list[Row]) -> list[str]:
    """Open markers for simulated precision ('square-dot' → 'square-open-dot')."""
    base, dot = (sym[:-4], "-dot") if sym.endswith("-dot") else (sym, "")
    return [f"{base}-open{dot}" if r["simulated"] else sym for r in g]


def _col(rows: list[Row], c: str) -> list[Any]:
    return [r[c] for r in rows]


def front_2d(rows: list[Row], x: str, y: str) -> list[Row]:
    """The rows on the 2-D front of the two plotted axes (:func:`optim.analysis.select.front_2d`), sorted by x."""
    if not rows:
        return []
    front = select.front_2d(pd.DataFrame(rows), x, y)
    return [rows[i] for i in front.index]


def _fig(data: list[dict[str, Any]], layout: dict[str, Any]) -> go.Figure:
    """A Figure from plain dicts without plotly's per-property validation (~10× faster: keeps re-plots
    after a slider move well under 300 ms). The dicts below use only documented plotly attributes."""
    return go.Figure({"data": data, "layout": layout}, _validate=False)


def pareto_2d(df: pd.DataFrame, x: str = "target_ms", y: str = "metric", *, latency_note: str = "measured",
              max_ms: float | None = None, max_mb: float | None = None, min_metric: float | None = None,
              best_id: str | None = None, selected_id: str | None = None, recommended_id: str | None = None,
              title: str = "") -> go.Figure:
    """2-D projection: one trace per (bits, kind); customdata = variant_id; front joined by a line."""
    rows = _records(df, x, y)
    data: list[dict[str, Any]] = []
    for name, bits, sym, g in _groups(rows):
        trace: dict[str, Any] = dict(
            type="scatter", x=_col(g, x), y=_col(g, y), mode="markers", name=name,
            customdata=_col(g, "variant_id"), hovertext=_hover(g), hoverinfo="text",
            marker=dict(color=BIT_COLORS.get(bits, "#7f7f7f"), size=12, symbol=_symbols(sym, g),
                        line=dict(width=[3 if r["pareto"] else 1 for r in g], color="black")))
        if y == "metric" and any(r["metric_lo"] is not None for r in g):
            trace["error_y"] = dict(type="data", symmetric=False, thickness=1, width=3,
                                    array=[(r["metric_hi"] or r["metric"]) - r["metric"] for r in g],
                                    arrayminus=[r["metric"] - (r["metric_lo"] or r["metric"]) for r in g])
        data.append(trace)
    front = front_2d(rows, x, y)
    if front:
        data.append(dict(type="scatter", x=_col(front, x), y=_col(front, y), mode="lines", name=FRONT,
                         hoverinfo="skip", line=dict(color="black", dash="dash", width=1.5, shape="hv")))
    marks = ((recommended_id, "star-diamond", "recommended"), (best_id, "star", "best under constraints"),
             (selected_id, "x-thin-open", "selected"))
    for vid, style, name in marks:
        hit = [r for r in rows if r["variant_id"] == vid]
        if vid and hit:
            data.append(dict(type="scatter", x=_col(hit, x), y=_col(hit, y), mode="markers", name=name,
                             hoverinfo="skip", marker=dict(symbol=style, size=22, line=dict(width=2, color="black"),
                                                           color="gold" if style.startswith("star") else "black")))
    xt, yt = _axis_title(x, df, latency_note), _axis_title(y, df, latency_note)
    layout = dict(title=dict(text=title or f"{yt} vs {xt}"),
                  xaxis=dict(title=dict(text=xt, standoff=8), automargin=True),
                  yaxis=dict(title=dict(text=yt, standoff=8), automargin=True),
                  legend=dict(title=dict(text="bit-width · pruning")), height=430, margin=MARGIN)
    _shade_feasible(layout, rows, x, y, max_ms=max_ms, max_mb=max_mb, min_metric=min_metric)
    return _fig(data, layout)


def _span(values: list[float | None], limit: float | None) -> list[float]:
    vals = [float(v) for v in values if v is not None] + ([float(limit)] if limit is not None else [])
    if not vals:
        return [0.0, 1.0]
    lo, hi = min(vals), max(vals)
    pad = (hi - lo) * 0.08 or abs(hi) * 0.1 or 1.0
    return [lo - pad, hi + pad]


def _shade_feasible(layout: dict[str, Any], rows: list[Row], x: str, y: str, **lim: float | None) -> None:
    """Fix both axis ranges to the data (and limits) and shade the feasible rectangle inside them."""
    bound = {"target_ms": lim.get("max_ms"), "size_mb": lim.get("max_mb"), "metric": lim.get("min_metric")}
    yvals = _col(rows, y) + (_col(rows, "metric_lo") + _col(rows, "metric_hi") if y == "metric" else [])
    xr, yr = _span(_col(rows, x), bound.get(x)), _span(yvals, bound.get(y))
    layout["xaxis"]["range"], layout["yaxis"]["range"] = xr, yr
    if bound.get(x) is None and bound.get(y) is None:
        return
    rx = xr if bound.get(x) is None else ([bound[x], xr[1]] if x == "metric" else [xr[0], bound[x]])
    ry = yr if bound.get(y) is None else ([bound[y], yr[1]] if y == "metric" else [yr[0], bound[y]])
    layout["shapes"] = [dict(type="rect", x0=rx[0], x1=rx[1], y0=ry[0], y1=ry[1], fillcolor="rgba(44,160,44,0.10)",
                             line=dict(width=1, color="rgba(44,160,44,0.5)", dash="dot"), layer="below")]


def pareto_3d(df: pd.DataFrame, latency_note: str = "measured", title: str = "") -> go.Figure:
    """3-D scatter (latency, size, accuracy); Pareto points joined by a line."""
    rows = _records(df, "metric", "target_ms")
    data: list[dict[str, Any]] = []
    for name, bits, sym, g in _groups(rows):
        sym = sym.removesuffix("-dot")  # scatter3d has no '-dot' markers: distilled shows in the name/hover
        data.append(dict(
            type="scatter3d", x=_col(g, "target_ms"), y=_col(g, "size_mb"), z=_col(g, "metric"), mode="markers",
            name=name, customdata=_col(g, "variant_id"), hovertext=_hover(g), hoverinfo="text",
            marker=dict(color=BIT_COLORS.get(bits, "#7f7f7f"), size=[11 if r["pareto"] else 7 for r in g],
                        symbol=[sym + "-open" if r["simulated"] else sym for r in g],
                        line=dict(color="black", width=1))))
    front = sorted((r for r in rows if r["pareto"]), key=lambda r: r["target_ms"])
    if len(front) > 1:
        data.append(dict(type="scatter3d", x=_col(front, "target_ms"), y=_col(front, "size_mb"),
                         z=_col(front, "metric"), mode="lines", name=FRONT, hoverinfo="skip",
                         line=dict(color="black", dash="dash", width=3)))
    title_of = {c: dict(text=_axis_title(c, df, latency_note)) for c in ("size_mb", "metric")}
    short = "estimated" if "estimated" in latency_note else "measured"
    title_of["target_ms"] = dict(text=f"Latency (ms, {short})")  # long device names get clipped in 3-D
    layout = dict(title=dict(text=title or f"Accuracy × latency × size (latency {latency_note})"), height=600,
                  margin=dict(l=10, r=10, t=50, b=10), legend=dict(title=dict(text="bit-width · pruning")),
                  # a camera further out than plotly's default keeps the axis titles inside the scene
                  scene=dict(xaxis=dict(title=title_of["target_ms"]), yaxis=dict(title=title_of["size_mb"]),
                             zaxis=dict(title=title_of["metric"]), camera=dict(eye=dict(x=1.7, y=1.7, z=1.0)),
                             domain=dict(x=[0.02, 0.98], y=[0.02, 0.98])))
    return _fig(data, layout)


def layer_bars(df: pd.DataFrame, cols: dict[str, str], unit: str, title: str, top: int = 25) -> go.Figure:
    """Grouped horizontal bars per layer; ``cols`` maps column → legend name (e.g. measured/estimated)."""
    key = next(iter(cols))
    present = [c for c in cols if c in df]
    d = df[df[present].fillna(0).gt(0).any(axis=1)] if present else df  # rows with something to draw
    d = d.sort_values(key, ascending=False).head(top).iloc[::-1]
    fig = go.Figure()
    for col, name in cols.items():
        if col in d:
            color = "#aec7e8" if "baseline" in name else "#ff7f0e" if "estimated" in name else "#1f77b4"
            fig.add_trace(go.Bar(y=d["node"], x=d[col], name=name, orientation="h", marker_color=color))
    fig.update_layout(title=title, barmode="group", xaxis_title=unit, yaxis_title="layer",
                      height=max(300, 22 * len(d) * max(1, len(cols)) // 1.5 + 120),
                      margin=MARGIN)
    return fit(fig)


def op_histogram_chart(ops: pd.DataFrame) -> go.Figure:
    fig = go.Figure(go.Bar(x=ops["op_type"], y=ops["count"], marker_color="#1f77b4"))
    fig.update_layout(title="Operators in the graph", xaxis_title="operator type", yaxis_title="count (nodes)",
                      height=300, margin=MARGIN)
    return fit(fig)


def quant_error_chart(demo: dict[str, Any]) -> go.Figure:
    bits = int(demo["bits"])
    name = bits_label(bits)
    fig = go.Figure()
    fig.add_trace(go.Histogram(x=demo["weights"], name="FP32 weights", opacity=0.6, nbinsx=80,
                               marker_color="#9e9e9e"))
    fig.add_trace(go.Histogram(x=demo["quantized"], name=f"after {name}", opacity=0.6, nbinsx=80,
                               marker_color=BIT_COLORS.get(bits, "#d62728")))
    fig.update_layout(title=f"Weights of {demo['layer']} ({demo['levels']} distinct values after {name})",
                      barmode="overlay", xaxis_title="weight value", yaxis_title="count (weights)", height=340,
                      margin=MARGIN)
    return fit(fig)


def sensitivity_heatmap(table: pd.DataFrame, title: str) -> go.Figure:
    z = np.clip(table.to_numpy(dtype=float), -10, 80)
    fig = go.Figure(go.Heatmap(z=z, x=list(table.columns), y=list(table.index), colorscale="RdYlGn",
                               colorbar=dict(title="SQNR (dB)")))
    fig.update_layout(title=title, xaxis_title="precision", yaxis_title="layer",
                      height=max(300, 18 * len(table) + 120), margin=MARGIN)
    return fit(fig)


def roofline_chart(points: pd.DataFrame, peak_gflops: float, bw_gbs: float, device: str,
                   effective: pd.DataFrame | None = None) -> go.Figure:
    """Per-layer roofline: arithmetic intensity (ops/byte) vs attained G ops/s, log-log.

    ``effective`` (columns intensity, effective_gops) is the roof the estimator really uses (peak and
    bandwidth times the device's efficiency factors); a calibrated CPU can sit above the DRAM roof
    because small layers' working sets stay in its caches."""
    ai = np.logspace(-2, 3, 100)
    above = effective is not None and len(effective) > 0 and bool(
        (effective["effective_gops"] > np.minimum(peak_gflops, effective["intensity"] * bw_gbs) * 1.01).any())
    fig = go.Figure(go.Scatter(x=ai, y=np.minimum(peak_gflops, ai * bw_gbs), mode="lines",
                               name=f"DRAM roof (spec): {peak_gflops:.0f} G ops/s, {bw_gbs:.0f} GB/s from main memory",
                               line=dict(color="black")))
    if effective is not None and len(effective):
        fig.add_trace(go.Scatter(
            x=effective["intensity"], y=effective["effective_gops"], mode="lines", line=dict(color="#7f7f7f", dash="dash"),
            name="effective roof used by the estimate (calibrated on this CPU: data that fits in cache beats DRAM)"
            if above else "effective roof used by the estimate (spec × the device's efficiency)"))
    fig.add_trace(go.Scatter(x=points["intensity"], y=points["gflops"], mode="markers", name="layers (estimated)",
                             text=points["node"], hoverinfo="text+x+y", marker=dict(size=9, color="#ff7f0e")))
    name = device if "estimated" in device else f"{device} (estimated)"
    fig.update_layout(title=f"Roofline on {name}", xaxis=dict(type="log", dtick=1), yaxis=dict(type="log", dtick=1),
                      xaxis_title="arithmetic intensity (ops/byte)", yaxis_title="attained (G ops/s)",
                      height=420, margin=MARGIN, legend=dict(orientation="h", yanchor="top", y=-0.25))
    return fit(fig)


def channel_norms_chart(demo: dict[str, Any]) -> go.Figure:
    """L2 norm per output channel of one layer, the channels structured pruning removes in red."""
    norms = np.asarray(demo["channel_norms"])
    dropped = np.isin(np.arange(norms.size), demo["dropped_channels"])
    fig = go.Figure(go.Bar(x=np.arange(norms.size), y=norms, marker_color=np.where(dropped, "#d62728", "#1f77b4")))
    fig.update_layout(title=f"L2 norm per output channel of {demo['layer']} (red = removed by structured pruning)",
                      xaxis_title="output channel", yaxis_title="L2 norm", height=320, margin=MARGIN)
    return fit(fig)


def soft_labels_chart(soft: pd.DataFrame) -> go.Figure:
    """Teacher probabilities per class at each softmax temperature (columns 'T = …')."""
    fig = go.Figure([go.Bar(x=soft["class"], y=soft[c], name=c) for c in soft.columns if c.startswith("T =")])
    fig.update_layout(title="Teacher probabilities at two temperatures", xaxis_title="class", xaxis_type="category",
                      yaxis_title="probability", barmode="group", height=320, margin=MARGIN)
    return fit(fig)
