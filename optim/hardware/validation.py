"""Validation of the estimator: against published batch-1 latencies and against this machine.

Published points (HARDWARE_FACTS.md) are compared with graphs of the same architectures built in code
(random weights; latency does not depend on them). On this machine the estimate under the saved host
profile is compared with measured ONNX Runtime latency on models that were *not* used to calibrate it:
leave-one-out over the bundled samples, the MLPerf Tiny reference models at several widths, zoo
architectures and compression variants (structured pruning, INT8) of a bundled sample.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from optim.handle import ModelHandle


@dataclass(frozen=True)
class PublishedPoint:
    label: str
    model: str  # zoo or reference name
    bits: int
    device: str
    published_ms: float
    source: str


PUBLISHED: tuple[PublishedPoint, ...] = (
    PublishedPoint("ResNet-50 INT8, T4", "resnet50", 8, "t4", 1.00, "MLPerf Inference single-stream, TensorRT"),
    PublishedPoint("ResNet-50 INT8, A100", "resnet50", 8, "a100", 0.47, "MLPerf Inference single-stream (A100-PCIe)"),
    PublishedPoint("ResNet-50 INT8, AGX Orin", "resnet50", 8, "agx_orin", 0.63, "MLPerf Inference single-stream"),
    PublishedPoint("MobileNetV2 INT8, Coral USB", "mobilenet_v2", 8, "coral_edgetpu", 2.3, "coral.ai benchmarks"),
    PublishedPoint("ResNet-8 INT8, STM32H7A3", "resnet8", 8, "stm32h7a3", 54.3, "MLPerf Tiny v1.0 (IC)"),
    PublishedPoint("DS-CNN INT8, STM32H7A3", "ds_cnn", 8, "stm32h7a3", 16.8, "MLPerf Tiny v1.0 (KWS)"),
    PublishedPoint("MobileNetV1-0.25 INT8, STM32H7A3", "mobilenet_v1_025", 8, "stm32h7a3", 50.7,
                   "MLPerf Tiny v1.0 (VWW)"),
    PublishedPoint("MobileNetV2 FP16, A17 Pro ANE", "mobilenet_v2", 16, "apple_a17_ane", 0.49, "Core ML (iPhone 15 Pro)"),
    PublishedPoint("MobileNetV2 W8A8, A17 Pro ANE", "mobilenet_v2", 8, "apple_a17_ane", 0.20, "Core ML (iPhone 15 Pro)"),
    PublishedPoint("ResNet-50 FP16, A17 Pro ANE", "resnet50", 16, "apple_a17_ane", 1.38, "Core ML (iPhone 15 Pro)"),
    PublishedPoint("ResNet-50 W8A8, A17 Pro ANE", "resnet50", 8, "apple_a17_ane", 0.77, "Core ML (iPhone 15 Pro)"),
    PublishedPoint("MobileNetV2 INT8, Snapdragon 8 Gen 3", "mobilenet_v2", 8, "snapdragon_8g3", 0.369,
                   "Galaxy S24 (precision assumed INT8)"),
    PublishedPoint("ResNet-50 INT8, Snapdragon 8 Gen 3", "resnet50", 8, "snapdragon_8g3", 1.40,
                   "Galaxy S24 (precision assumed INT8)"),
)


def architecture(name: str) -> ModelHandle:
    """FP32 graph of a zoo or MLPerf Tiny reference architecture."""
    from optim.hardware.reference_models import REFERENCE_NAMES, reference_model
    from optim.reference.zoo import zoo_model

    if name in REFERENCE_NAMES:
        return reference_model(name)
    return ModelHandle(zoo_model(name), name, meta={"bits": 32})


def published_table(points: Iterable[PublishedPoint] = PUBLISHED) -> pd.DataFrame:
    """Predicted vs published latency for every published point (ratio = predicted / published)."""
    from optim.hardware.estimator import estimate

    cache: dict[str, ModelHandle] = {}
    rows = []
    for p in points:
        base = cache.setdefault(p.model, architecture(p.model))
        h = ModelHandle(base.model, base.name, meta={"bits": p.bits})
        e = estimate(h, p.device)
        rows.append({"point": p.label, "device": p.device, "predicted_ms": e.total_ms,
                     "published_ms": p.published_ms, "ratio": e.total_ms / p.published_ms,
                     "precision_path": e.precision_path, "source": p.source})
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
    from optim.hardware import calibrate

    rows = []
    for i, held in enumerate(models):
        train = [m for j, m in enumerate(models) if j != i]
        train += fill[: max(0, 2 - len(train))]
        profile = calibrate.calibrate(train, out=None, repeats=3)
        rows.append(_row("leave-one-out", held, calibrate.estimate_host(held, profile),
                         calibrate.measured_latency_ms(held)))
    return pd.DataFrame(rows)


def held_out(models: Iterable[tuple[str, Callable[[], ModelHandle]]]) -> pd.DataFrame:
    """Estimate under the saved host profile vs measured latency for each (kind, builder)."""
    from optim.hardware import calibrate
    from optim.hardware.catalog import load_host_profile

    profile = load_host_profile()
    used = set(profile.get("calibration_models", [])) if profile else set()
    rows = []
    for kind, build in models:
        h = build()
        if h.name in used and kind != "variant":
            continue
        rows.append(_row(kind, h, calibrate.estimate_host(h, profile), calibrate.measured_latency_ms(h)))
    return pd.DataFrame(rows)
