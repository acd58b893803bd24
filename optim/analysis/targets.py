"""Latency of stored variants on a chosen target device: measured on this CPU, or estimated on a catalog device.

The one place a sweep's variants get their target latency, so the CLI (``sweep --target``), the pages and the
report rank variants on the same numbers (:func:`optim.analysis.select.prepare` takes the result).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import onnx
import pandas as pd

from optim.errors import OptimError
from optim.handle import ModelHandle
from optim.hardware import targets as hardware
from optim.hardware.model.estimator import Estimate

__all__ = ["MEASURED_DEVICE", "artifact_handle", "estimate_artifact", "estimated_ms", "is_measured"]

MEASURED_DEVICE = "this-cpu"  # the target whose latency the sweep measured (no estimate)


def is_measured(device_id: str | None) -> bool:
    return not device_id or device_id == MEASURED_DEVICE


@lru_cache(maxsize=32)
def artifact_handle(artifact: str) -> ModelHandle:
    """A stored variant's ONNX file as a handle (content-addressed files: safe to cache by path)."""
    if not artifact or not Path(artifact).exists():
        raise OptimError("This variant's ONNX file is missing from the store; re-run the sweep to rebuild it.")
    return ModelHandle(model=onnx.load(artifact), name=Path(artifact).stem)


@lru_cache(maxsize=256)
def _estimate_cached(artifact: str, device_id: str, state: str) -> Estimate:
    return hardware.estimate(artifact_handle(artifact), device_id, batch=1)


def estimate_artifact(artifact: str, device_id: str) -> Estimate:
    """Hardware estimate of one stored ONNX artifact on a device, batch 1; cached per artifact, device and
    (on the host) the calibration state (:func:`optim.hardware.targets.estimate_key`): a host estimate
    made on the fallback profile is recomputed once this CPU's calibration lands."""
    return _estimate_cached(artifact, device_id, hardware.estimate_key(device_id))


def _estimate_ms(artifact: object, device_id: str) -> float | None:
    if not isinstance(artifact, str) or not Path(artifact).exists():
        return None
    try:
        return float(estimate_artifact(artifact, device_id).total_ms)
    except OptimError:
        return None


def estimated_ms(df: pd.DataFrame, device_id: str | None) -> pd.Series | None:
    """Estimated batch-1 latency (ms) of every variant's artifact on ``device_id`` (NaN where none can be made),
    index of ``df``; None for the measured CPU (the sweep's own latency is the target's)."""
    if is_measured(device_id):
        return None
    return pd.Series([_estimate_ms(a, str(device_id)) for a in df["artifact_path"]], index=df.index, dtype=float)
