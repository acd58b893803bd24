"""A sweep's stored results for the Pareto and Export pages: sweep status, the prepared variant table, one
variant's layers and artifact, the CSV download, the CPU's INT8 support."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from optim.api.store import open_store
from optim.errors import OptimError
from optim.hardware.host import cpu_has_vnni as detect_vnni
from optim.present import results

__all__ = ["artifact_bytes", "cpu_has_vnni", "estimate_layers", "results_csv", "sweep_exists", "sweep_info",
           "sweep_version", "variant_layers", "variants"]


def sweep_info(sweep_id: str) -> dict[str, Any] | None:
    """The sweep's stored row (model_name, config, status, total, …) or None."""
    return open_store().sweep(sweep_id)


def sweep_version(sweep_id: str) -> tuple[int, str]:
    """(stored variant count, sweep status): changes whenever the sweep's results change."""
    st = open_store()
    info = st.sweep(sweep_id) or {}
    return len(st.finished_keys(sweep_id)), str(info.get("status", "unknown"))


def sweep_exists(sweep_id: str) -> bool:
    try:
        return len(open_store().variants(sweep_id)) > 0
    except (OptimError, KeyError):
        return False


def variants(sweep_id: str, device_id: str | None = None) -> pd.DataFrame:
    """Variants of a sweep prepared for the decisions (:func:`optim.present.results.variant_table`): metric in %,
    interval, size, latency on the chosen target, Pareto membership, flags."""
    return results.variant_table(sweep_id, device_id)


def estimate_layers(artifact: str, device_id: str) -> dict[str, Any]:
    """Hardware estimate of one ONNX artifact on a catalog device: total_ms, layers, notes."""
    return results.estimate_view(artifact, device_id)


def variant_layers(variant_id: str) -> pd.DataFrame:
    """Per-node profile (measured ms) + summary columns of one variant, from the store."""
    return open_store().layers(variant_id).copy()


def artifact_bytes(path: str | None) -> bytes:
    if not path or not Path(path).exists():
        raise OptimError("This variant has no ONNX artifact (it failed or was simulated only). Pick another.")
    return open_store().read_artifact(path)  # refused when its bytes no longer match their hash


def results_csv(df: pd.DataFrame) -> bytes:
    """Every measured column plus flags; server-side paths and raw metadata stay out of a shared file."""
    return df.drop(columns=["artifact_path", "meta_json"], errors="ignore").to_csv(index=False).encode()


def cpu_has_vnni() -> bool | None:
    """Whether this CPU has 8-bit dot-product instructions (VNNI / AMX); None when it cannot be told."""
    return detect_vnni()
