"""The measured per-layer sensitivity table as the Layers page shows it: a heatmap-ready view, one sentence that
reads it, and the heatmap (the table itself comes from :func:`optim.analysis.sensitivity.analyze`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from optim.present.charts import MARGIN, fit

__all__ = ["sensitivity_chart", "sensitivity_view"]


def _setting_label(kind: str, level: float) -> str:
    return f"prune {level * 100:g} %" if kind == "prune" else f"{int(level)}-bit"


def sensitivity_view(df: pd.DataFrame) -> dict[str, Any]:
    """Heatmap-ready view of a measured table: ``table`` (layers × settings, drop in points), ``top``
    (the 5 most sensitive layers by worst drop), ``reading`` (one sentence), ``metric_name``, ``baseline``."""
    metric = str(df.attrs.get("metric_name") or "accuracy")
    d = df.assign(setting=[_setting_label(k, v) for k, v in zip(df["kind"], df["level"], strict=True)])
    pairs = d[["kind", "level"]].drop_duplicates()
    order = ([_setting_label("prune", v) for v in sorted(pairs.loc[pairs["kind"] == "prune", "level"])]
             + [_setting_label("quant", v) for v in sorted(pairs.loc[pairs["kind"] == "quant", "level"], reverse=True)])
    layers = list(dict.fromkeys(d["layer"]))
    table = d.pivot_table(index="layer", columns="setting", values="drop", aggfunc="first").reindex(
        index=layers, columns=order)
    worst = d.sort_values(["drop", "rel_error"], ascending=False).groupby("layer", sort=False).head(1)
    top = worst.head(5)[["layer", "op_type", "params", "setting", "drop", "rel_error"]].rename(
        columns={"setting": "worst setting", "drop": f"{metric} drop (points)"}).reset_index(drop=True)
    return {"table": table, "top": top, "reading": _reading(d, metric), "metric_name": metric,
            "baseline": df.attrs.get("baseline")}


def _reading(d: pd.DataFrame, metric: str) -> str:
    """'X is the most fragile: 2-bit costs N points' at the harshest quantisation and pruning levels."""
    parts = []
    for kind in ("quant", "prune"):
        sub = d[d["kind"] == kind]
        if sub.empty:
            continue
        level = sub["level"].min() if kind == "quant" else sub["level"].max()
        r = sub[sub["level"] == level].sort_values(["drop", "rel_error"], ascending=False).iloc[0]
        label = _setting_label(kind, level)
        if r["drop"] <= 0:
            parts.append(f"No layer alone loses {metric} at {label} on these samples (largest output change: "
                         f"{r['layer']}, relative error {r['rel_error']:.2f}).")
        elif not parts:
            parts.append(f"{r['layer']} ({r['op_type']}) is the most fragile: {label} costs "
                         f"{r['drop']:.1f} points of {metric}.")
        else:
            parts.append(f"Under pruning, {r['layer']} loses most: {label} costs {r['drop']:.1f} points.")
    return " ".join(parts) or "No measured settings."


def sensitivity_chart(table: pd.DataFrame, metric_name: str = "accuracy") -> go.Figure:
    """Measured heatmap: layers (rows, graph order) × settings, colour = drop in points (red = fragile)."""
    z = table.to_numpy(dtype=float)
    fig = go.Figure(go.Heatmap(
        z=z, x=list(table.columns), y=list(table.index), colorscale="Reds", zmin=0,
        zmax=max(1.0, float(np.nanmax(z)) if np.isfinite(z).any() else 1.0),
        texttemplate="%{z:.1f}", colorbar=dict(title=f"{metric_name} drop (points)"),
        hovertemplate="%{y}<br>%{x}: %{z:.2f} points<extra></extra>"))
    fig.update_layout(title=f"Measured sensitivity: {metric_name} drop when only this layer is compressed",
                      xaxis_title="setting (one layer at a time)", yaxis_title="layer",
                      yaxis_autorange="reversed", height=max(300, 22 * len(table) + 140), margin=MARGIN)
    return fit(fig)
