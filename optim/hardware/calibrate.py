"""Fit this machine's efficiency and overhead factors from ONNX Runtime per-node profiles.

1. Micro-benchmarks (one thread): peak FP32 from a square matmul, memory bandwidth from a large copy.
2. Per-node profiles (``measure.profile_nodes``, ORT_DISABLE_ALL so node names match the graph) of the
   calibration models, joined with the summary's per-node MACs and bytes.
3. Per op class (conv, dwconv, gemm, elementwise, shape) a least-squares fit of
   ``max(ops / (peak × e_c), bytes / (bw × e_m)) + overhead`` to the node times, in log space and
   pulled gently towards priors so a class with few nodes stays sane (``scipy.optimize.least_squares``).
4. One graph-optimisation factor: measured whole-model latency at ORT_ENABLE_ALL / fitted sum of the
   un-fused nodes, median over the calibration models (fusion and NCHWc layouts that the per-node
   profile cannot see).
No library fits a roofline to ORT traces, hence this module.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from optim.handle import ModelHandle
from optim.hardware import graphinfo
from optim.hardware.catalog import HOST_PROFILE_PATH, OP_CLASSES
from optim.hardware.roofline import COMPUTE_CLASSES

PRIORS = {"eff_compute": 0.3, "eff_memory": 1.0, "overhead_us": 5.0}
BOUNDS = {"eff_compute": (1e-3, 1.0), "eff_memory": (1e-3, 50.0), "overhead_us": (0.05, 2000.0)}


def measure_peak_gflops(n: int = 384, budget_s: float = 0.4) -> float:
    """Best single-thread FP32 matmul rate (GFLOPS) over a short loop."""
    import torch

    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a, b = torch.randn(n, n), torch.randn(n, n)
        best, start = float("inf"), time.perf_counter()
        while time.perf_counter() - start < budget_s:
            t0 = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - t0)
    finally:
        torch.set_num_threads(prev)
    return 2.0 * n**3 / best / 1e9


def measure_bandwidth_gbs(mbytes: int = 64, repeats: int = 5) -> float:
    """Best single-thread copy bandwidth (GB/s, read + write bytes) of a buffer far larger than caches."""
    src = np.ones(mbytes * 2**20 // 8)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    return 2 * src.nbytes / best / 1e9


def default_calibration_models() -> list[ModelHandle]:
    """The bundled sample models when their artifacts exist, else the built-in reference models."""
    handles: list[ModelHandle] = []
    try:
        from optim import samples

        for info in samples.list_samples():
            if info.model_path.exists():
                handles.append(samples.load_sample(info.name)[0])
    except Exception:  # noqa: BLE001 - samples not built yet: fall back to reference models
        handles = []
    if handles:
        return handles
    from optim.hardware.reference_models import REFERENCE_NAMES, reference_model

    return [reference_model(n) for n in REFERENCE_NAMES]


def node_table(handle: ModelHandle, runs: int = 20) -> pd.DataFrame:
    """Summary layers + op class + measured per-node ms (ORT_DISABLE_ALL, 1 thread) for one model."""
    from optim import measure
    from optim.summary import summarize

    layers = graphinfo.annotate(summarize(handle).layers, handle.model, fuses=False)
    prof = measure.profile_nodes(handle, threads=1, opt_level="disable", runs=runs).table
    df = layers.merge(prof[["node", "ms"]], on="node", how="inner")
    is_compute = df["op_class"].isin(COMPUTE_CLASSES)
    df["ops"] = np.where(is_compute, 2.0 * df["macs"].astype(float), df["flops"].astype(float))
    df["bytes"] = df["params"].astype(float) * 4 + (df["act_in_elems"] + df["act_out_elems"]).astype(float) * 4
    df["model"] = handle.name
    return df


def _predict(params: np.ndarray, ops: np.ndarray, nbytes: np.ndarray, peak: float, bw: float) -> np.ndarray:
    e_c, e_m, over = np.exp(params)
    return np.maximum(ops / (peak * e_c), nbytes / (bw * e_m)) * 1e3 + over * 1e-3


def fit_class(rows: pd.DataFrame, peak: float, bw: float, prior_weight: float = 0.3) -> dict[str, float]:
    """Fit (eff_compute, eff_memory, overhead_us) of one op class to its node times (ms)."""
    from scipy.optimize import least_squares

    keys = ("eff_compute", "eff_memory", "overhead_us")
    prior = np.log([PRIORS[k] for k in keys])
    lo = np.log([BOUNDS[k][0] for k in keys])
    hi = np.log([BOUNDS[k][1] for k in keys])
    ops, nbytes = rows["ops"].to_numpy(float), rows["bytes"].to_numpy(float)
    meas = np.maximum(rows["ms"].to_numpy(float), 1e-5)
    w = np.sqrt(meas / meas.sum() * len(meas))

    def resid(p: np.ndarray) -> np.ndarray:
        data = w * (np.log(_predict(p, ops, nbytes, peak, bw)) - np.log(meas))
        return np.concatenate([data, prior_weight * (p - prior)])

    sol = least_squares(resid, np.clip(prior, lo + 1e-6, hi - 1e-6), bounds=(lo, hi))
    e_c, e_m, over = np.exp(sol.x)
    return {"eff_compute": float(e_c), "eff_memory": float(e_m), "overhead_us": float(over), "nodes": len(rows)}


def fit_factors(table: pd.DataFrame, peak: float, bw: float) -> dict[str, dict[str, float]]:
    """Per-class factors for every class that has nodes in ``table``."""
    return {c: fit_class(table[table["op_class"] == c], peak, bw) for c in OP_CLASSES
            if (table["op_class"] == c).any()}


def _profile_dict(peak: float, bw: float, classes: dict[str, Any], names: Sequence[str]) -> dict[str, Any]:
    return {
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "peak_fp32": {"value": round(peak, 2), "unit": "GFLOPS", "tag": "measured",
                      "source": "single-thread torch.mm 384x384 FP32, best of a 0.4 s loop"},
        "bandwidth": {"value": round(bw, 2), "unit": "GB/s", "tag": "measured",
                      "source": "single-thread 64 MiB numpy copy (read + write), best of 5"},
        "classes": classes, "calibration_models": list(names), "graph_opt_factor": 1.0,
    }


def estimate_host(handle: ModelHandle, profile: dict[str, Any]) -> float:
    """Estimated ms for ``handle`` on this machine under ``profile`` (without touching the saved file)."""
    from optim.hardware.estimator import estimate_with_device
    from optim.hardware.host import host_device

    return estimate_with_device(handle, host_device(profile)).total_ms


def calibrate(models: Sequence[ModelHandle] | None = None, out: Path | None = HOST_PROFILE_PATH,
              runs: int = 20, latency_budget_s: float = 0.5) -> dict[str, Any]:
    """Run the micro-benchmarks and profiles, fit the factors, save the host profile JSON (unless out=None)."""
    from optim import measure

    handles = list(models) if models is not None else default_calibration_models()
    t0 = time.perf_counter()
    peak, bw = measure_peak_gflops(), measure_bandwidth_gbs()
    table = pd.concat([node_table(h, runs) for h in handles], ignore_index=True)
    profile = _profile_dict(peak, bw, fit_factors(table, peak * 1e9, bw * 1e9), [h.name for h in handles])
    ratios, errors = [], []
    for h in handles:
        measured = measure.latency(h, threads=1, opt_level="all", budget_s=latency_budget_s).median_ms
        ratios.append(measured / estimate_host(h, profile))
    profile["graph_opt_factor"] = float(np.median(ratios))
    for h, r in zip(handles, ratios, strict=True):
        errors.append(abs(r / profile["graph_opt_factor"] - 1) * 100)
    profile["fit_error_pct"] = float(np.median(errors))
    profile["calibration_s"] = round(time.perf_counter() - t0, 1)
    if out is not None:
        Path(out).write_text(json.dumps(profile, indent=2) + "\n")
    return profile
