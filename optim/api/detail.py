"""Second half of :mod:`optim.api.core`: one variant layer by layer, measured per-layer sensitivity of the
loaded model (a background job, stored), and the Learn page's live illustrations.

Split from ``api.py`` to keep files small; pages import everything through ``optim.api``.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from optim.api.core import (
    MEASURED_DEVICE,
    Loaded,
    baseline_row,
    estimate_layers,
    sensitivity_table,
    variant_layers,
    variants,
)
from optim.errors import ConfigError, OptimError
from optim.jobs import client as jobrun
from optim.jobs import codec
from optim.sweep.jobs import SweepJob, job_for_sweep, start_job


def layer_view(sweep_id: str, variant_id: str, device_id: str | None = None) -> dict[str, Any]:
    """Everything the Layers page shows for one variant: its row, the baseline's, the per-layer table."""
    from optim.present.variant_view import layer_comparison

    df = variants(sweep_id)
    hit = df[df["variant_id"] == variant_id]
    if hit.empty:
        raise OptimError(f"Variant {variant_id} is not part of sweep {sweep_id}: pick one on the Pareto page.")
    row, base = hit.iloc[0], baseline_row(df)
    var_layers = variant_layers(variant_id)
    base_layers = variant_layers(base["variant_id"]) if base is not None else var_layers.iloc[0:0]
    est, notes, est_total = None, [], None
    if device_id and device_id != MEASURED_DEVICE and isinstance(row["artifact_path"], str):
        e = estimate_layers(row["artifact_path"], device_id)
        est, notes, est_total = e["layers"], e["notes"], e["total_ms"]
    table = layer_comparison(base_layers, var_layers, est, int(row["bits"]))
    return {"row": row, "base": base, "table": table, "est_layers": est, "est_total_ms": est_total,
            "notes": notes, "layers": var_layers}


def graph_changes(base_artifact: str, var_artifact: str) -> dict[str, Any]:
    from optim.present.variant_view import graph_changes as _changes

    return _changes(base_artifact, var_artifact)


def runtime_fusion(artifact: str) -> pd.DataFrame:
    from optim.present.variant_view import runtime_fusion as _fusion

    return _fusion(artifact)


def sensitivity(artifact: str) -> pd.DataFrame:
    """Weight SQNR per layer × precision of a stored model (proxy for quantization sensitivity)."""
    from optim.present.variant_view import handle_of

    return sensitivity_table(handle_of(artifact))


def roofline(artifact: str, device_id: str) -> dict[str, Any] | None:
    """Per-layer roofline points on a catalog device (estimated), or None for the measured CPU."""
    from optim.hardware import targets as estimator
    from optim.present.variant_view import handle_of

    if not device_id or device_id == MEASURED_DEVICE:
        return None
    r = estimator.roofline_points(handle_of(artifact), device_id)
    pts = r["layers"].rename(columns={"attained_gops": "gflops"})
    return {"points": pts, "peak_gflops": r["peak_gops"], "bw_gbs": r["bandwidth_gbs"], "device": r["device_name"],
            "precision": r["precision_path"], "effective": r["roof"]}


# --- measured per-layer sensitivity of the loaded model --------------------------------------------
SENSITIVITY_N = 300
SENSITIVITY_PRUNE = (0.25, 0.5, 0.75)
SENSITIVITY_BITS = (8, 4, 2)


def sensitivity_data(loaded: Loaded, n: int = SENSITIVITY_N) -> tuple[Any, str]:
    """(data set, where it comes from) the measured analysis runs on: ``n`` samples of the training split
    when the model has one, else of its calibration data, never the test split of a bundled sample."""
    if loaded.train is not None and len(loaded.train):
        src, what = loaded.train, "training split"
    elif loaded.calib is not None and len(loaded.calib):
        src, what = loaded.calib, "calibration data"
        if loaded.origin == "upload":
            what = ("inputs (no separate calibration data)" if loaded.calib is loaded.test
                    else "calibration subset of the evaluation upload (no separate training data)")
    else:
        raise ConfigError("Measuring sensitivity needs input data: upload evaluation data on Home.")
    sub = src.subset(min(int(n), len(src)))
    return sub, f"{len(sub)} samples of the {what}" + ("" if sub.y is not None else ", no labels: agreement")


def _sensitivity_key(loaded: Loaded, n: int, prune_levels: tuple[float, ...],
                     quant_bits: tuple[int, ...]) -> tuple[Any, dict[str, Any], str]:
    from optim.sweep.store import stable_id

    data, _ = sensitivity_data(loaded, n)
    settings = {"prune_levels": [float(p) for p in prune_levels], "quant_bits": [int(b) for b in quant_bits]}
    return data, settings, "sensitivity:" + stable_id(loaded.handle.content_hash, data.content_hash, settings)


def stored_sensitivity(loaded: Loaded, n: int = SENSITIVITY_N,
                       settings: dict[str, Any] | None = None) -> pd.DataFrame | None:
    """The stored measured table for the loaded model on its sensitivity data (newest settings), or None."""
    from optim.sweep.store import Store

    data, _ = sensitivity_data(loaded, n)
    return Store().sensitivity(loaded.handle.content_hash, data.content_hash, settings)


def start_sensitivity(loaded: Loaded, n: int = SENSITIVITY_N,
                      prune_levels: tuple[float, ...] = SENSITIVITY_PRUNE,
                      quant_bits: tuple[int, ...] = SENSITIVITY_BITS) -> SweepJob:
    """Measure every weight layer alone at each setting in the background, then store the table.

    Poll ``job.snapshot()``; ``job.cancel()`` stops before the next perturbed model (nothing stored).
    A second call while the same analysis runs (another tab) returns the running job; once it is stored,
    a job for the same model, data and settings ends at once without recomputing."""
    from optim.analysis.sensitivity import weight_layers
    from optim.sweep.store import Store

    data, settings, key = _sensitivity_key(loaded, n, prune_levels, quant_bits)
    running = job_for_sweep(key)
    if running is not None and running.state == "running":
        return running
    total = len(weight_layers(loaded.handle.model)) * (len(prune_levels) + len(quant_bits))
    store_path = str(Store().path)

    def work(progress: Any, cancel: Any) -> str:  # a server thread waiting on the worker that does the work
        jobrun.run("sensitivity", f"sensitivity of {loaded.label[:80]}",
                   {"settings": settings, "store": store_path, "total": total}, handle=loaded.handle,
                   datasets={"data": data}, progress=lambda d: progress(SimpleNamespace(**d)), cancel=cancel)
        return key

    return start_job(work, label=f"{loaded.label}: sensitivity of {total} layer settings", total=total,
                     sweep_id=key)


def sensitivity_estimate_s(loaded: Loaded, n: int = SENSITIVITY_N,
                           n_settings: int = len(SENSITIVITY_PRUNE) + len(SENSITIVITY_BITS)) -> float:
    """Rough duration of :func:`start_sensitivity`: a run of the model (session included) timed on 8 and
    on 64 samples, extrapolated linearly to the sensitivity data, times the number of perturbed models."""
    from optim.analysis.sensitivity import weight_layers

    data, _ = sensitivity_data(loaded, n)

    def timed(k: int) -> tuple[int, float]:  # timed inside the worker: session + run, not the transfer
        x = data.x[:k]
        res = jobrun.run("predict", "timing the model", {"threads": 2}, {"x": codec.array_bytes(x)},
                         handle=loaded.handle)
        return len(x), float(res.value["seconds"])

    timed(8)  # warm-up: one-off costs the analysis pays only once
    (n1, t1), (n2, t2) = timed(8), timed(64)
    per_sample = max(t2 - t1, 0.0) / (n2 - n1) if n2 > n1 else t2 / max(n2, 1)
    one = t1 + per_sample * (len(data) - n1)
    return one * (len(weight_layers(loaded.handle.model)) * n_settings + 1)


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
                      yaxis_autorange="reversed", height=max(300, 22 * len(table) + 140),
                      margin=dict(l=10, r=10, t=50, b=10))
    return fig


# --- Learn page helpers ---------------------------------------------------------------------------
def soft_labels(loaded: Loaded, index: int = 0, temperatures: tuple[float, ...] = (1.0, 4.0)) -> pd.DataFrame:
    """The model's class probabilities for one test sample at several softmax temperatures (KD targets)."""
    if loaded.test is None:
        raise OptimError("No test data to illustrate distillation with: upload evaluation data on Home.")
    i = int(index) % len(loaded.test)
    res = jobrun.run("predict", "predicting one sample", {}, {"x": codec.array_bytes(loaded.test.x[i : i + 1])},
                     handle=loaded.handle)
    logits = np.asarray(codec.array_from(res.blobs["logits"]), dtype=np.float64)[0]
    names = getattr(loaded.test, "class_names", None) or [str(k) for k in range(len(logits))]
    out = {"class": names[: len(logits)]}
    for t in temperatures:
        z = logits / t
        p = np.exp(z - z.max())
        out[f"T = {t:g}"] = p / p.sum()
    label = None if loaded.test.y is None else int(loaded.test.y[i])
    return pd.DataFrame(out).assign(true_label=[k == label for k in range(len(logits))])


def fusion_of(loaded: Loaded) -> pd.DataFrame:
    """Graph nodes vs kernels ONNX Runtime runs after its optimisations, for the loaded model."""
    res = jobrun.run("fusion", f"optimising {loaded.label[:80]} with ONNX Runtime", handle=loaded.handle)
    return codec.frame_from(res.value["table"])


def roofline_of(loaded: Loaded, device_id: str) -> dict[str, Any]:
    """Per-layer roofline points of the loaded model on a catalog device (estimated)."""
    from optim.hardware import targets as estimator

    r = estimator.roofline_points(loaded.handle, device_id)
    return {"points": r["layers"].rename(columns={"attained_gops": "gflops"}), "peak_gflops": r["peak_gops"],
            "bw_gbs": r["bandwidth_gbs"], "device": r["device_name"], "precision": r["precision_path"],
            "effective": r["roof"]}
