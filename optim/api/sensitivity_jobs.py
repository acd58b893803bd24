"""Measured per-layer sensitivity of the loaded model for the Layers page: the data it runs on, the stored
table, the background job that measures it and a rough duration."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pandas as pd

from optim.analysis.sensitivity import weight_layers
from optim.api.models import Loaded
from optim.api.store import open_store
from optim.errors import ConfigError
from optim.io.data import Dataset
from optim.jobs import client as jobrun
from optim.jobs import codec
from optim.sweep.jobs import SweepJob, job_for_sweep, start_job
from optim.sweep.store import stable_id

__all__ = ["SENSITIVITY_BITS", "SENSITIVITY_N", "SENSITIVITY_PRUNE", "sensitivity_data", "sensitivity_estimate_s",
           "start_sensitivity", "stored_sensitivity"]

SENSITIVITY_N = 300
SENSITIVITY_PRUNE = (0.25, 0.5, 0.75)
SENSITIVITY_BITS = (8, 4, 2)


def sensitivity_data(loaded: Loaded, n: int = SENSITIVITY_N) -> tuple[Dataset, str]:
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
    judged = "" if sub.y is not None else (", no labels: agreement" if "agreement" in loaded.judged_by
                                           else ", no labels: output cosine")
    return sub, f"{len(sub)} samples of the {what}{judged}"


def _sensitivity_key(loaded: Loaded, n: int, prune_levels: tuple[float, ...],
                     quant_bits: tuple[int, ...]) -> tuple[Dataset, dict[str, Any], str]:
    data, _ = sensitivity_data(loaded, n)
    settings = {"prune_levels": [float(p) for p in prune_levels], "quant_bits": [int(b) for b in quant_bits]}
    return data, settings, "sensitivity:" + stable_id(loaded.handle.content_hash, data.content_hash, settings)


def stored_sensitivity(loaded: Loaded, n: int = SENSITIVITY_N,
                       settings: dict[str, Any] | None = None) -> pd.DataFrame | None:
    """The stored measured table for the loaded model on its sensitivity data (newest settings), or None."""
    data, _ = sensitivity_data(loaded, n)
    return open_store().sensitivity(loaded.handle.content_hash, data.content_hash, settings)


def start_sensitivity(loaded: Loaded, n: int = SENSITIVITY_N,
                      prune_levels: tuple[float, ...] = SENSITIVITY_PRUNE,
                      quant_bits: tuple[int, ...] = SENSITIVITY_BITS) -> SweepJob:
    """Measure every weight layer alone at each setting in the background, then store the table.

    Poll ``job.snapshot()``; ``job.cancel()`` stops before the next perturbed model (nothing stored).
    A second call while the same analysis runs (another tab) returns the running job; once it is stored,
    a job for the same model, data and settings ends at once without recomputing."""
    data, settings, key = _sensitivity_key(loaded, n, prune_levels, quant_bits)
    running = job_for_sweep(key)
    if running is not None and running.state == "running":
        return running
    total = len(weight_layers(loaded.handle.model)) * (len(prune_levels) + len(quant_bits))
    store_path = str(open_store().path)

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
