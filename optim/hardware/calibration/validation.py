"""Validation of the estimator: against published batch-1 latencies and against this machine.

Published points (HARDWARE_FACTS.md; kept with their device in ``devices.toml``) are compared with graphs of the same architectures built in code
(random weights; latency does not depend on them). On this machine the estimate under the saved host
profile is compared with measured ONNX Runtime latency on models that were *not* used to calibrate it:
leave-one-out over the bundled samples, the MLPerf Tiny reference models at several widths, zoo
architectures and compression variants (structured pruning, INT8) of a bundled sample.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import pandas as pd

from optim.handle import ModelHandle
from optim.hardware.calibration.calibrate import calibrate, estimate_host
from optim.hardware.calibration.micro import measured_latency_ms
from optim.hardware.calibration.reference_models import REFERENCE_NAMES, reference_model
from optim.hardware.catalog import static_catalog
from optim.hardware.device import ValidationPoint
from optim.hardware.targets import estimate


def published_points() -> list[tuple[str, ValidationPoint]]:
    """(device id, point) for every published validation point in ``devices.toml``."""
    return [(d.id, p) for d in static_catalog() for p in d.validation]


def architecture(name: str) -> ModelHandle:
    """FP32 graph of a zoo or MLPerf Tiny reference architecture."""
    from optim.reference.zoo import zoo_model

    if name in REFERENCE_NAMES:
        return reference_model(name)
    return ModelHandle(zoo_model(name), name, meta={"bits": 32})


def published_table(points: Iterable[tuple[str, ValidationPoint]] | None = None) -> pd.DataFrame:
    """Predicted vs published latency for every published point (ratio = predicted / published);
    ``recorded_ms`` is the estimate ``devices.toml`` keeps for the band (it should equal ``predicted_ms``)."""
    cache: dict[str, ModelHandle] = {}
    rows = []
    for device_id, p in (published_points() if points is None else points):
        base = cache.setdefault(p.model, architecture(p.model))
        h = ModelHandle(base.model, base.name, meta={"bits": p.bits})
        e = estimate(h, device_id)
        rows.append({"point": p.label, "device": device_id, "predicted_ms": e.total_ms,
                     "published_ms": p.published_ms, "ratio": e.total_ms / p.published_ms,
                     "recorded_ms": p.estimated_ms, "precision_path": e.precision_path, "source": p.source})
    return pd.DataFrame(rows)


def error_summary(errors_pct: Iterable[float]) -> dict[str, float]:
    """Distribution of signed percentage errors: median |e|, p90 |e|, share within ±15 %, bias."""
    e = np.asarray(list(errors_pct), dtype=float)
    if e.size == 0:
        return {"n": 0}
    a = np.abs(e)
    return {"n": int(e.size), "median_abs_pct": float(np.median(a)), "p90_abs_pct": float(np.percentile(a, 90)),
            "max_abs_pct": float(a.max()), "within_15_pct": float((a <= 15).mean()),
            "mean_signed_pct": float(e.mean())}


def _row(kind: str, h: ModelHandle, predicted: float, measured: float) -> dict[str, object]:
    return {"kind": kind, "model": h.name, "bits": h.meta.get("bits", 32), "predicted_ms": predicted,
            "measured_ms": measured, "error_pct": (predicted / measured - 1) * 100}


def leave_one_out(models: list[ModelHandle], fill: list[ModelHandle]) -> pd.DataFrame:
    """Calibrate on all bundled models but one (plus ``fill`` when fewer than two remain), predict it."""
    rows = []
    for i, held in enumerate(models):
        train = [m for j, m in enumerate(models) if j != i]
        train += fill[: max(0, 2 - len(train))]
        profile = calibrate(fit_models=train, holdout_models=[], save=False)
        rows.append(_row("leave-one-out", held, estimate_host(held, profile), measured_latency_ms(held)))
    return pd.DataFrame(rows)


def held_out(models: Iterable[tuple[str, Callable[[], ModelHandle]]], profile: dict[str, Any] | None
             ) -> pd.DataFrame:
    """Estimate under ``profile`` vs measured latency for each (kind, builder) the profile was not fitted on."""
    used = set(profile.get("calibration_models", [])) if profile else set()
    rows = []
    for kind, build in models:
        h = build()
        if h.name in used:
            continue
        rows.append(_row(kind, h, estimate_host(h, profile), measured_latency_ms(h)))
    return pd.DataFrame(rows)
