"""A sweep's results as every reader sees them (pages through ``optim.api``, the HTML report): the prepared
variant table with its flags, one variant layer by layer, a stored artifact's hardware estimate and roofline.

The decisions themselves (baseline, metric interval, front, recommendation) are :mod:`optim.analysis.select`'s;
this module only joins them with the store and the flag texts.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from optim.analysis import select, targets
from optim.errors import OptimError
from optim.handle import ModelHandle
from optim.hardware import targets as hardware
from optim.hardware.host import cpu_has_vnni
from optim.present.variant_view import layer_comparison, profile_totals
from optim.present.views import add_flags, flags_on_target
from optim.sweep.node import hardware_label
from optim.sweep.store import Store

__all__ = ["estimate_view", "layer_view", "roofline_view", "variant_table"]


def variant_table(sweep_id: str, device_id: str | None = None, store: Store | None = None) -> pd.DataFrame:
    """The sweep's variants prepared for the decisions (:func:`optim.analysis.select.prepare`: metric in %,
    interval, size, latency on the chosen target, Pareto membership) plus the ``flags`` text."""
    df = (store or Store()).variants(sweep_id)
    est = targets.estimated_ms(df, device_id)
    df = select.prepare(add_flags(df, vnni=cpu_has_vnni()), est)
    if est is not None:
        df["flags"] = flags_on_target(df["flags"], df["target_source"].eq("estimated"))
    df["hardware"] = [hardware_label(j) for j in df["node_json"]] if "node_json" in df.columns else None
    return df


def estimate_view(artifact: str, device_id: str) -> dict[str, Any]:
    """Hardware estimate of one stored ONNX artifact on a catalog device: total_ms, layers, notes."""
    e = targets.estimate_artifact(artifact, device_id)
    return {"total_ms": e.total_ms, "layers": e.layers, "fits": e.fits, "notes": list(e.notes or []),
            "precision_path": e.precision_path, "fit_notes": e.fit_notes}


def layer_view(sweep_id: str, variant_id: str, device_id: str | None = None,
               store: Store | None = None) -> dict[str, Any]:
    """Everything shown for one variant layer by layer: its row, the baseline's, the per-layer comparison."""
    store = store or Store()
    df = variant_table(sweep_id, store=store)
    hit = df[df["variant_id"] == variant_id]
    if hit.empty:
        raise OptimError(f"Variant {variant_id} is not part of sweep {sweep_id}: pick one on the Pareto page.")
    row, base = hit.iloc[0], select.baseline_row(df)
    var_layers = store.layers(variant_id)
    base_layers = store.layers(base["variant_id"]) if base is not None else var_layers.iloc[0:0]
    est, notes, est_total = None, [], None
    if not targets.is_measured(device_id) and isinstance(row["artifact_path"], str):
        e = estimate_view(row["artifact_path"], str(device_id))
        est, notes, est_total = e["layers"], e["notes"], e["total_ms"]
    table = layer_comparison(base_layers, var_layers, est, int(row["bits"]))
    return {"row": row, "base": base, "table": table, "est_layers": est, "est_total_ms": est_total,
            "notes": notes, "layers": var_layers, "profile": profile_totals(row.get("meta_json"))}


def roofline_view(handle: ModelHandle, device_id: str) -> dict[str, Any]:
    """Per-layer roofline points of a model on a catalog device (estimated), in the charts' column names."""
    r = hardware.roofline_points(handle, device_id)
    return {"points": r["layers"].rename(columns={"attained_gops": "gflops"}), "peak_gflops": r["peak_gops"],
            "bw_gbs": r["bandwidth_gbs"], "device": r["device_name"], "precision": r["precision_path"],
            "effective": r["roof"]}
