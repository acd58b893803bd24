"""Second half of :mod:`optim.api`: one variant layer by layer, and the Learn page's live illustrations.

Split from ``api.py`` to keep files small; pages still import everything through ``optim.api``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from optim.api import (
    MEASURED_DEVICE,
    Loaded,
    baseline_row,
    estimate_layers,
    sensitivity_table,
    variant_layers,
    variants,
)
from optim.errors import OptimError


def layer_view(sweep_id: str, variant_id: str, device_id: str | None = None) -> dict[str, Any]:
    """Everything the Layers page shows for one variant: its row, the baseline's, the per-layer table."""
    from optim.variant_view import layer_comparison

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
    from optim.variant_view import graph_changes as _changes

    return _changes(base_artifact, var_artifact)


def runtime_fusion(artifact: str) -> pd.DataFrame:
    from optim.variant_view import runtime_fusion as _fusion

    return _fusion(artifact)


def sensitivity(artifact: str) -> pd.DataFrame:
    """Weight SQNR per layer × precision of a stored model (proxy for quantization sensitivity)."""
    from optim.variant_view import handle_of

    return sensitivity_table(handle_of(artifact))


def roofline(artifact: str, device_id: str) -> dict[str, Any] | None:
    """Per-layer roofline points on a catalog device (estimated), or None for the measured CPU."""
    from optim.hardware import estimator
    from optim.variant_view import handle_of

    if not device_id or device_id == MEASURED_DEVICE:
        return None
    r = estimator.roofline_points(handle_of(artifact), device_id)
    pts = r["layers"].rename(columns={"attained_gops": "gflops"})
    return {"points": pts, "peak_gflops": r["peak_gops"], "bw_gbs": r["bandwidth_gbs"], "device": r["device_name"],
            "precision": r["precision_path"]}


# --- Learn page helpers ---------------------------------------------------------------------------
def soft_labels(loaded: Loaded, index: int = 0, temperatures: tuple[float, ...] = (1.0, 4.0)) -> pd.DataFrame:
    """The model's class probabilities for one test sample at several softmax temperatures (KD targets)."""
    from optim import measure

    if loaded.test is None:
        raise OptimError("No test data to illustrate distillation with: upload evaluation data on Home.")
    i = int(index) % len(loaded.test)
    logits = np.asarray(measure.predict(loaded.handle, loaded.test.x[i : i + 1]), dtype=np.float64)[0]
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
    import tempfile

    from optim.variant_view import runtime_fusion

    path = Path(tempfile.gettempdir()) / f"optim_learn_{loaded.handle.content_hash[:16]}.onnx"
    if not path.exists():
        path.write_bytes(loaded.handle.model_bytes)
    return runtime_fusion(str(path))


def roofline_of(loaded: Loaded, device_id: str) -> dict[str, Any]:
    """Per-layer roofline points of the loaded model on a catalog device (estimated)."""
    from optim.hardware import estimator

    r = estimator.roofline_points(loaded.handle, device_id)
    return {"points": r["layers"].rename(columns={"attained_gops": "gflops"}), "peak_gflops": r["peak_gops"],
            "bw_gbs": r["bandwidth_gbs"], "device": r["device_name"], "precision": r["precision_path"]}
