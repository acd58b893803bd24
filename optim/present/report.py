"""Self-contained HTML report of a sweep for stakeholders (opens offline: plotly.js is embedded inline).

Plain string templating over plotly's ``Figure.to_html(full_html=False)``: a template engine would be a
new dependency for one page, and plotly already produces the interactive parts.
"""

from __future__ import annotations

import html
import time
from typing import Any

import pandas as pd

from optim.analysis.select import RECOMMENDATION, baseline_row, recommend
from optim.analysis.targets import is_measured
from optim.errors import OptimError
from optim.hardware import targets as hardware
from optim.hardware.host import cpu_has_vnni
from optim.present.charts import layer_bars, pareto_2d, pareto_3d
from optim.present.results import layer_view, variant_table
from optim.present.views import fmt_ms, int8_note, ms_decimals
from optim.sweep.store import Store

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;color:#222}
h1{margin-bottom:0}.sub{color:#666}table{border-collapse:collapse;font-size:13px;margin:1em 0}
td,th{border:1px solid #ddd;padding:3px 7px;text-align:right;vertical-align:top}th{background:#f4f4f4}
td:first-child{text-align:left;white-space:nowrap}td:last-child{text-align:left;min-width:16em;overflow-wrap:anywhere}
.scroll{overflow-x:auto;max-width:100%}
.box{border:1px solid #ddd;border-radius:8px;padding:0.6em 1em;margin:1em 0;background:#fafafa}
.tag{display:inline-block;padding:0 6px;border-radius:4px;font-size:12px;margin-right:4px}
.m{background:#e3f2e3}.e{background:#fff2d6}.s{background:#f9dede}
"""


def _table(df: pd.DataFrame, cols: dict[str, str], fmt: dict[str, str] | None = None) -> str:
    fmt = fmt or {}
    head = "".join(f"<th>{html.escape(v)}</th>" for v in cols.values())
    rows = []
    for _, r in df.iterrows():
        cells = []
        for c in cols:
            v = r.get(c)
            text = "" if v is None or (isinstance(v, float) and pd.isna(v)) else (
                format(v, fmt[c]) if c in fmt and isinstance(v, (int, float)) else str(v))
            cells.append(f"<td>{html.escape(text)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<div class=scroll><table><tr>{head}</tr>{''.join(rows)}</table></div>"


def _variant_box(row: pd.Series, note: str) -> str:
    return (f"<div class=box><b>{html.escape(str(row['label']))}</b>: {row['metric']:.2f} % "
            f"[{row['metric_lo']:.2f}–{row['metric_hi']:.2f}] {html.escape(str(row['metric_name']))}, "
            f"{fmt_ms(row['target_ms'])} ({note}), {row['size_mb']:.3f} MB"
            + (f"<br>⚑ {html.escape(row['flags'])}" if row["flags"] else "") + "</div>")


def _summary(df: pd.DataFrame, base: pd.Series | None, rec: pd.Series | None, note: str) -> str:
    """'What we did, what it costs, what we recommend' in three sentences, for a reader who stops here."""
    ok = df["status"].eq("ok")
    ratios = sorted({float(r) for r in df["prune_ratio"].dropna()})
    bits = sorted({int(b) for b in df["bits"].dropna()}, reverse=True)
    did = (f"We built and measured {len(df)} variants of the model (pruning ratios "
           f"{', '.join(f'{r:.0%}' for r in ratios) or 'none'}; bit-widths {', '.join(map(str, bits))})"
           + (f"; {int((~ok).sum())} could not be built and are listed with their reason" if (~ok).any() else "")
           + ".")
    if base is None or rec is None:
        return f"<h2>In short</h2><p>{html.escape(did, quote=False)} No variant can be recommended yet.</p>"
    delta = float(rec["metric"]) - float(base["metric"])
    inside = float(base["metric_lo"]) <= float(rec["metric"]) <= float(base["metric_hi"])
    speed = float(base["target_ms"]) / float(rec["target_ms"]) if float(rec["target_ms"]) > 0 else float("nan")
    size = float(rec["size_mb"]) / float(base["size_mb"]) if float(base["size_mb"]) > 0 else float("nan")
    cost = (f"It costs {abs(delta):.2f} points of {rec['metric_name']} "
            f"({'within' if inside else 'outside'} the baseline's 95 % interval, so "
            f"{'not a significant loss' if inside else 'a real difference'})" if delta < 0 else
            f"It loses no {rec['metric_name']} ({delta:+.2f} points)")
    buys = f"and buys {speed:.2f}× the baseline's speed ({note}) at {size:.2f}× its size."
    if rec["variant_id"] == base["variant_id"]:
        return (f"<h2>In short</h2><p>{html.escape(did, quote=False)} No compressed variant keeps the accuracy within the "
                "baseline's interval while being faster, so we recommend keeping the baseline.</p>")
    return (f"<h2>In short</h2><p>{html.escape(did, quote=False)} We recommend <b>{html.escape(str(rec['label']))}</b>. "
            f"{html.escape(cost, quote=False)} {html.escape(buys, quote=False)}</p>")


def build_report(sweep_id: str, variant_id: str | None = None, device_id: str | None = None,
                 model_label: str = "") -> str:
    """The whole report as one HTML string (≈ 4.5 MB with plotly.js inline).

    "Recommended" is always the engine's recommendation (:func:`optim.analysis.select.recommend`, on the
    latency of ``device_id``); ``variant_id``, the user's selection, gets its own section when it differs."""
    store = Store()
    df = variant_table(sweep_id, device_id, store)
    if df.empty:
        raise OptimError(f"Sweep {sweep_id} has no stored variants: run it first, then build the report.")
    note = "measured on this CPU" if is_measured(device_id) else f"estimated on {_device_name(device_id)}"
    rec = recommend(df)
    rec_id = rec["variant_id"] if rec is not None else None
    hit = df[(df["variant_id"] == variant_id) & df["status"].eq("ok")] if variant_id else df.iloc[0:0]
    chosen = hit.iloc[0] if len(hit) and variant_id != rec_id else None
    figs: list[Any] = [pareto_2d(df, latency_note=note, recommended_id=rec_id,
                                 selected_id=chosen["variant_id"] if chosen is not None else None),
                       pareto_2d(df, "size_mb", "metric", latency_note=note), pareto_3d(df, latency_note=note)]
    info = store.sweep(sweep_id) or {}
    parts = [f"<h1>Compression report: {html.escape(model_label or str(info.get('model_name', '')))}</h1>",
             f"<p class=sub>Sweep <code>{sweep_id}</code> · {len(df)} variants · generated "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}</p>",
             "<div class=box><span class='tag m'>measured</span>accuracy (95 % Wilson interval), latency on this "
             "CPU (ONNX Runtime, 1 thread, batch 1), file size. <span class='tag e'>estimated</span>latency on a "
             "catalog device (roofline model). <span class='tag s'>simulated</span>bit-widths the runtime "
             "cannot execute: accuracy from fake-quantised weights, size as packed bytes.</div>"]
    base = baseline_row(df)
    parts.insert(2, _summary(df, base, rec, note))
    if base is not None:
        parts.append(f"<h2>The model</h2><p>Baseline (FP32, unpruned): <b>{base['metric']:.2f} %</b> "
                     f"[{base['metric_lo']:.2f}–{base['metric_hi']:.2f}], {fmt_ms(base['latency_ms'])} measured, "
                     f"{base['size_mb']:.2f} MB.</p>")
    if df["bits"].eq(8).any():
        parts.append(f"<p class=sub>{html.escape(int8_note(cpu_has_vnni()))}</p>")
    if rec is not None:
        why = RECOMMENDATION.format(metric=str(rec["metric_name"]))
        parts.append(f"<h2>Recommended variant</h2><p class=sub>The engine's choice: {html.escape(why)}.</p>"
                     + _variant_box(rec, note))
    if chosen is not None:
        parts.append("<h2>Your selection</h2><p class=sub>The variant selected in the dashboard (not the "
                     "recommendation).</p>" + _variant_box(chosen, note))
    parts.append("<h2>The Pareto front</h2>")
    for i, fig in enumerate(figs):
        parts.append(fig.to_html(full_html=False, include_plotlyjs=(i == 0), config={"displaylogo": False}))
    for row, title in ((rec, "Recommended variant"), (chosen, "Your selection")):
        if row is not None:
            parts.append(_layers_section(sweep_id, row, device_id, title))
    parts.append("<h2>All variants</h2>" + _table(
        df.sort_values("metric", ascending=False),
        {"label": "variant", "metric": f"{df['metric_name'].iloc[0]} %", "metric_lo": "95 % lo", "metric_hi": "95 % hi",
         "latency_ms": "latency ms (measured)", "target_ms": f"latency ms ({note})", "size_mb": "size MB",
         "pareto": "Pareto", "flags": "flags"},
        {"metric": ".2f", "metric_lo": ".2f", "metric_hi": ".2f", "latency_ms": f".{ms_decimals(df['latency_ms'])}f",
         "target_ms": f".{ms_decimals(df['target_ms'])}f", "size_mb": ".3f"}))
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>Compression report</title>"
            f"<style>{_CSS}</style></head><body>{''.join(parts)}</body></html>")


def _layers_section(sweep_id: str, rec: pd.Series, device_id: str | None, title: str) -> str:
    try:
        view = layer_view(sweep_id, rec["variant_id"], device_id)
    except OptimError as err:
        return f"<p>Per-layer view unavailable: {html.escape(str(err))}</p>"
    t = view["table"]
    cols = {"ms": "variant (measured)", "base_ms": "baseline (measured)"}
    if t["est_ms"].notna().any():
        cols["est_ms"] = "variant (estimated)"
    fig = layer_bars(t, cols, "time (ms)", f"Where the time goes: {rec['label']}")
    return (f"<h2>{html.escape(title)}, layer by layer</h2>"
            + fig.to_html(full_html=False, include_plotlyjs=False)
            + _table(t.head(40), {"node": "layer", "op_type": "op", "status": "", "base_ms": "baseline ms",
                                  "ms": "variant ms", "est_ms": "estimated ms", "macs": "MACs",
                                  "params": "params", "applied_ratio": "params removed"},
                     {"base_ms": ".4f", "ms": ".4f", "est_ms": ".4f", "applied_ratio": ".2f", "macs": ",.0f",
                      "params": ",.0f"}))


def _device_name(device_id: str) -> str:
    try:
        return hardware.get_device(device_id).name
    except OptimError:
        return device_id
