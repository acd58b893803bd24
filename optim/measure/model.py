"""Measure one model: the single composition of evaluation, latency and the per-layer profile that the sweep
(every variant), the dashboard's baseline and the case study use, so a number means the same everywhere."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np

from optim.measure.budget import runs_within
from optim.measure.core import Evaluation, evaluate
from optim.measure.layer_profile import profile_layers
from optim.measure.session import ModelLike
from optim.measure.timing import Latency, NodeProfile, latency

__all__ = ["Measured", "measure_model"]


@dataclass(frozen=True)
class Measured:
    """What :func:`measure_model` found: the evaluation (None without data), batch-1 latency, the profile (None
    unless asked for)."""

    evaluation: Evaluation | None
    latency: Latency
    profile: NodeProfile | None = None


def measure_model(handle: ModelLike, data: Any = None, reference_logits: np.ndarray | None = None, *,
                  threads: int = 1, opt_level: str = "all", budget_s: float = 1.0, warmup: int = 3,
                  min_runs: int = 10, profile_runs: int = 0,
                  quiet: AbstractContextManager[Any] | None = None, known: Any = None) -> Measured:
    """Evaluate on ``data`` (accuracy ± Wilson interval with labels, fidelity against ``reference_logits``;
    batched, 2 threads), then, inside ``quiet`` (a context during which nothing else runs on the machine), time
    batch-1 latency with ``threads`` intra-op threads at ``opt_level`` and, when ``profile_runs`` > 0, profile
    the runtime kernels mapped back to ONNX nodes at the same level (at most ``profile_runs`` runs; fewer when
    they would not fit twice ``budget_s`` at the measured latency). ``known``: the model's outputs on ``data``,
    already computed (:func:`optim.measure.core.evaluate`)."""
    ev = evaluate(handle, data, reference_logits=reference_logits, known=known) if data is not None else None
    with quiet if quiet is not None else nullcontext():
        lat = latency(handle, threads=threads, opt_level=opt_level, budget_s=budget_s, warmup=warmup,
                      min_runs=min_runs)
        runs = runs_within(lat.median_ms / 1e3, 2 * budget_s, 2, profile_runs) if profile_runs else 0
        prof = profile_layers(handle, threads=threads, opt_level=opt_level, runs=runs) if runs else None
    return Measured(ev, lat, prof)
