"""One variant layer by layer for the Layers page: the per-layer comparison with the baseline, what the graph
and the runtime changed, weight SQNR per layer, and the roofline on a catalog device."""

from __future__ import annotations

from typing import Any

import pandas as pd

from optim.analysis.targets import artifact_handle, is_measured
from optim.present import results, variant_view
from optim.present.learn import sensitivity_table

__all__ = ["graph_changes", "layer_view", "roofline", "runtime_fusion", "sensitivity"]


def layer_view(sweep_id: str, variant_id: str, device_id: str | None = None) -> dict[str, Any]:
    """Everything the Layers page shows for one variant: its row, the baseline's, the per-layer table."""
    return results.layer_view(sweep_id, variant_id, device_id)


def graph_changes(base_artifact: str, var_artifact: str) -> dict[str, Any]:
    return variant_view.graph_changes(base_artifact, var_artifact)


def runtime_fusion(artifact: str) -> pd.DataFrame:
    return variant_view.runtime_fusion(artifact)


def sensitivity(artifact: str) -> pd.DataFrame:
    """Weight SQNR per layer × precision of a stored model (proxy for quantization sensitivity)."""
    return sensitivity_table(artifact_handle(artifact))


def roofline(artifact: str, device_id: str) -> dict[str, Any] | None:
    """Per-layer roofline points on a catalog device (estimated), or None for the measured CPU."""
    if is_measured(device_id):
        return None
    return results.roofline_view(artifact_handle(artifact), device_id)
