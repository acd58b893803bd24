"""Fitting the host model: per-class roofline factors to kernel times, and the whole-model correction.

Per op class a least-squares fit of ``max(ops / (peak x e_c), bytes / (bw x e_m)) + overhead`` to the
node times, in log space and pulled gently towards priors so a class with few nodes stays sane
(``scipy.optimize.least_squares``); then a kernel-time scale and a per-kernel profiler cost fitted to the
measured whole-model latencies (bounded linear least squares). No library fits a roofline to ORT traces.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from optim.hardware.device import OP_CLASSES
from optim.hardware.model.roofline import COMPUTE_CLASSES

CONV_VARIANTS = ("conv_nchw", "conv1x1_nchw", "dwconv_nchw", "gemm_int8")
INT8_CALIBRATION: tuple[str, ...] = ()


PRIORS = {"eff_compute": 0.3, "eff_memory": 1.0, "overhead_us": 5.0}


BOUNDS = {"eff_compute": (1e-3, 3.0), "eff_memory": (1e-3, 50.0), "overhead_us": (0.05, 2000.0)}


def _predict(params: np.ndarray, ops: np.ndarray, nbytes: np.ndarray, peak: float, bw: float) -> np.ndarray:
    e_c, e_m, over = np.exp(params)
    return np.maximum(ops / (peak * e_c), nbytes / (bw * e_m)) * 1e3 + over * 1e-3


def _objective(pred: np.ndarray, meas: np.ndarray, w: np.ndarray, params: np.ndarray, prior: np.ndarray,
               prior_weight: float) -> np.ndarray:
    """Sum of squared weighted log errors over nodes (last axis) plus the pull towards the priors."""
    data = (w * (np.log(pred) - np.log(meas))) ** 2
    return data.sum(-1) + (prior_weight**2) * ((params - prior) ** 2).sum(-1)


def fit_class(rows: pd.DataFrame, peak: float, bw: float, prior_weight: float = 0.3,
              priors: dict[str, float] | None = None, eff_memory: float | None = None,
              overhead_us: float | None = None) -> dict[str, float]:
    """Fit (eff_compute, eff_memory, overhead_us) of one op class to its node times (ms); a given
    ``eff_memory`` is held fixed (the memory system does not depend on the op), and so is a given
    ``overhead_us`` (a conv variant seen in a few same-shaped layers cannot tell overhead from speed).

    A log-spaced grid search followed by a local least-squares polish: the ``max`` makes the objective
    non-smooth, and a gradient method alone was seen to stall far from the optimum."""
    from scipy.optimize import least_squares

    keys = ("eff_compute", "eff_memory", "overhead_us")
    prior = np.log([(priors or PRIORS)[k] for k in keys])
    lo = np.log([BOUNDS[k][0] for k in keys])
    hi = np.log([BOUNDS[k][1] for k in keys])
    for i, fixed in ((1, eff_memory), (2, overhead_us)):
        if fixed is not None:
            prior[i] = np.log(fixed)
            lo[i], hi[i] = prior[i] - 1e-4, prior[i] + 1e-4
    ops, nbytes = rows["ops"].to_numpy(float), rows["bytes"].to_numpy(float)
    meas = np.maximum(rows["ms"].to_numpy(float), 1e-5)
    w = np.sqrt(meas / meas.sum() * len(meas))
    grids = [np.linspace(lo[i], hi[i], n) for i, n in enumerate((25, 25, 40))]
    for i, fixed in ((1, eff_memory), (2, overhead_us)):
        if fixed is not None:
            grids[i] = prior[i:i + 1]
    g = np.stack(np.meshgrid(*grids, indexing="ij"), -1).reshape(-1, 3)
    e = np.exp(g)
    pred = (np.maximum(ops / (peak * e[:, :1]), nbytes / (bw * e[:, 1:2])) * 1e3 + e[:, 2:3] * 1e-3)
    best = g[int(np.argmin(_objective(pred, meas, w, g, prior, prior_weight)))]

    def resid(p: np.ndarray) -> np.ndarray:
        data = w * (np.log(_predict(p, ops, nbytes, peak, bw)) - np.log(meas))
        return np.concatenate([data, prior_weight * (p - prior)])

    sol = least_squares(resid, np.clip(best, lo + 1e-6, hi - 1e-6), bounds=(lo, hi))
    x = sol.x if sol.cost * 2 <= _objective(
        _predict(best, ops, nbytes, peak, bw), meas, w, best, prior, prior_weight) else best
    e_c, e_m, over = np.exp(x)
    return {"eff_compute": float(e_c), "eff_memory": float(e_m), "overhead_us": float(over), "nodes": len(rows)}


def fit_factors(table: pd.DataFrame, peak: float, bw: float) -> dict[str, dict[str, float]]:
    """Per-class factors for every class that has nodes in ``table``.

    Dense convs are fitted first; their factors are the prior of the other compute classes (the same
    MLAS GEMM kernels run them), so a class seen only in a few memory-bound layers — the classifier Gemm
    of a CNN — does not keep an arbitrary compute efficiency; they share the convs' memory efficiency,
    and the other conv kernels (:data:`CONV_VARIANTS`) its per-kernel overhead too."""
    out: dict[str, dict[str, float]] = {}
    if (table["op_class"] == "conv").any():
        out["conv"] = fit_class(table[table["op_class"] == "conv"], peak, bw)
    compute_prior = {k: out["conv"][k] for k in PRIORS} if "conv" in out else None
    for c in OP_CLASSES:
        rows = table[table["op_class"] == c]
        if c in out or rows.empty:
            continue
        compute = compute_prior is not None and c in COMPUTE_CLASSES
        out[c] = fit_class(rows, peak, bw, priors=compute_prior if compute else None,
                           eff_memory=compute_prior["eff_memory"] if compute else None,
                           overhead_us=compute_prior["overhead_us"] if compute and c in CONV_VARIANTS else None)
    return out


def fit_whole_model(sums: np.ndarray, counts: np.ndarray, measured: np.ndarray, run_overhead_ms: float,
                    max_delta_ms: float = 0.005) -> tuple[float, float]:
    """(kernel scale s, profiler cost per kernel δ) minimising the relative whole-model error of
    ``s·sums - δ·counts + R`` vs ``measured``, R the measured per-run overhead; 0.5 ≤ s ≤ 2,
    0 ≤ δ ≤ max_delta_ms.

    The profiler's own timing events inflate every profiled kernel by about the same amount, and
    kernels timed one by one run warmer or colder than inside a whole run; whole-model latencies of
    the calibration models pin both down."""
    from scipy.optimize import lsq_linear

    a = np.stack([sums, -counts], axis=1) / measured[:, None]
    b = (measured - run_overhead_ms) / measured
    sol = lsq_linear(a, b, bounds=([0.5, 0.0], [2.0, max(max_delta_ms, 1e-9)]))
    return float(sol.x[0]), float(sol.x[1])
