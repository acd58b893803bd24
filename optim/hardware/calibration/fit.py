"""Fitting the host model: per-class kernel costs from profiled rows, then the whole-model correction.

Per op class a row costs ``calls x overhead + ops / (peak x e_c) + bytes / (bw x e_m) + out_elems x c_out
+ out_rows x c_row`` (``calls``: one per kernel, one per channel for a depthwise conv off the blocked layout) —
additive, because on a CPU core a kernel's arithmetic and its loads do not overlap perfectly, and
because it makes the fit a linear least-squares problem in ``(overhead, 1/e_c, 1/e_m, c_out, c_row)``. The
per-output-element cost ``c_out`` (compute classes only) is what makes a conv with few input channels
slower per MAC than a deep one: MLAS pays it for every output pixel it writes. The fit is non-negative
(``scipy.optimize.nnls``), on relative errors weighted by the square root of each row's share of its
model's time (a model's big kernels dominate its sum, small ones must still not be off by multiples,
and every calibration model counts alike: weighted by absolute time, the 3 ms MobileNet at width 4 set
the blocked 1x1 conv's cost and priced the 0.2-0.5 ms models' 1x1 convs 1.3x their profile; mean held-out
within ±15 % over 12 recorded calibrations 82 -> 86 %, worst 65 -> 76 %), with weak priors, and
refitted twice with Cauchy weights (:data:`ROBUST_SCALE`) so one outlying kernel reading (a first
kernel after a cold start, a preempted run) does not set the class's cost.
Classes are fitted parents first (:func:`optim.hardware.device.parent_class`); a class with fewer than
:data:`FULL_FIT_ROWS` rows only rescales its parent's cost (one number instead of four). Then one scale
per kernel family and a per-kernel cost are fitted to the measured whole-model latencies
(:func:`fit_group_scales`). No library fits this to ORT traces, hence this module.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from optim.hardware.device import parent_class
from optim.hardware.model.roofline import COMPUTE_CLASSES

PRIORS = {"eff_compute": 0.3, "eff_memory": 1.0, "overhead_us": 2.0, "out_ns": 0.0, "row_ns": 0.0, "bcast": 0.0}
BOUNDS = {"eff_compute": (1e-3, 3.0), "eff_memory": (1e-3, 50.0), "overhead_us": (0.05, 2000.0)}
PRIOR_WEIGHT = 0.02
FULL_FIT_ROWS = 6
OUT_NS_REF = 1.0  # ridge scale of the per-output cost (ns per element)
ROW_NS_REF = 30.0  # ridge scale of the per-output-row cost (ns per row)
BCAST_REF = 1.0  # ridge scale of the input-broadcast cost (x its ops at peak)
ROBUST_PASSES = 2  # reweighted refits of a class (one outlying kernel reading must not set a class's cost)
ROBUST_SCALE = 0.3  # relative residual at which a row's weight halves
NO_COMPUTE = 1e3  # eff_compute of a memory class: its element count is not priced as arithmetic


def _depth(c: str) -> int:
    d = 0
    p = parent_class(c)
    while p is not None:
        p, d = parent_class(p), d + 1
    return d


def _col(rows: pd.DataFrame, name: str, default: float, on: bool = True) -> np.ndarray:
    return rows[name].to_numpy(float) if on and name in rows else np.full(len(rows), default if on else 0.0)


def _terms(rows: pd.DataFrame, peak: float, bw: float, compute: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(time s, design matrix [calls, ops/peak, bytes/bw, out elems x 1e-9, out rows x 1e-9, bcast ops/peak],
    weights)."""
    dram = _col(rows, "dram_bytes", 0.0)  # weights read from DRAM: priced at the measured copy bandwidth, not fitted
    raw = rows["ms"].to_numpy(float) * 1e-3
    t = np.maximum(np.maximum(raw - dram / bw, 0.1 * raw), 1e-9)
    ops = rows["ops"].to_numpy(float) / peak if compute else np.zeros(len(t))
    design = np.stack([_col(rows, "calls", 1.0), ops, (rows["bytes"].to_numpy(float) - dram) / bw,
                       _col(rows, "out_elems", 0.0, compute) * 1e-9, _col(rows, "out_rows", 0.0, compute) * 1e-9,
                       _col(rows, "bcast_ops", 0.0, compute) / peak],
                      axis=1)
    share = rows["share"].to_numpy(float) if "share" in rows else t
    if not (share > 0).all():  # rows without their model's total: weighted by time
        share = t
    return t, design, np.sqrt(share / share.mean())


def _result(x: np.ndarray, t: np.ndarray, design: np.ndarray, how: str) -> dict[str, float | int | str]:
    """Factors from the solution ``x`` (per-call s, 1/e_c, 1/e_m, per-output s·1e9, per-row s·1e9)."""
    pred = design @ x
    e_c = float(np.clip(1 / x[1], *BOUNDS["eff_compute"])) if x[1] > 0 else NO_COMPUTE
    e_m = float(np.clip(1 / x[2], *BOUNDS["eff_memory"])) if x[2] > 0 else BOUNDS["eff_memory"][1]
    return {"eff_compute": e_c, "eff_memory": e_m, "overhead_us": float(np.clip(x[0] * 1e6, *BOUNDS["overhead_us"])),
            "out_ns": float(x[3]), "row_ns": float(x[4]), "bcast": float(x[5]), "nodes": int(len(t)),
            "fit_median_pct": round(float(np.median(np.abs(pred / t - 1)) * 100), 2), "fit": how}


def _x_of(f: dict[str, float], compute: bool) -> np.ndarray:
    return np.array([f["overhead_us"] * 1e-6, 1 / f["eff_compute"] if compute else 0.0, 1 / f["eff_memory"],
                     float(f.get("out_ns", 0.0)) if compute else 0.0, float(f.get("row_ns", 0.0)) if compute else 0.0,
                     float(f.get("bcast", 0.0)) if compute else 0.0])


def fit_class(rows: pd.DataFrame, peak: float, bw: float, prior_weight: float = PRIOR_WEIGHT,
              priors: dict[str, float] | None = None, compute: bool = True) -> dict[str, float | int | str]:
    """Fit (overhead_us per call, eff_compute, eff_memory, out_ns, row_ns) of one class to its rows (``ops``,
    ``bytes``, ``out_elems``, ``out_rows``, ``calls``, ``ms``): weighted NNLS with one weak prior row per
    parameter; a memory class (``compute`` False) has no compute, per-output or per-row term (its ``ops``
    are element counts, not MACs)."""
    from scipy.optimize import nnls

    p = {**PRIORS, **(priors or {})}
    t, design, w = _terms(rows, peak, bw, compute)
    lam = prior_weight * np.sqrt(w @ w)
    prior_x = np.array([p["overhead_us"] * 1e-6, 1 / p["eff_compute"] if compute else 1.0, 1 / p["eff_memory"]])
    reg = np.zeros((6, 6))
    reg[np.arange(3), np.arange(3)] = lam / prior_x
    reg[3, 3], reg[4, 4], reg[5, 5] = lam / OUT_NS_REF, lam / ROW_NS_REF, lam / BCAST_REF
    target = np.array([lam, lam, lam, lam * p["out_ns"] / OUT_NS_REF, lam * p.get("row_ns", 0.0) / ROW_NS_REF,
                       lam * p.get("bcast", 0.0) / BCAST_REF])
    if not compute:
        for i in (1, 3, 4, 5):  # pins 1/e_c, the per-output and the per-row cost to zero
            reg[i, i], target[i] = 1e9, 0.0
    down = np.ones_like(t)
    for _ in range(ROBUST_PASSES + 1):  # Cauchy reweighting: a kernel read 3x off its peers barely counts
        ww = w * down
        x, _ = nnls(np.vstack([design * (ww / t)[:, None], reg]), np.concatenate([ww, target]))
        down = 1.0 / (1.0 + ((design @ x / t - 1) / ROBUST_SCALE) ** 2)
    if not compute:
        x[1] = 0.0
    return _result(x, t, design, "full")


def scale_parent(rows: pd.DataFrame, peak: float, bw: float, parent: dict[str, float], compute: bool
                 ) -> dict[str, float | int | str]:
    """A class with few rows: its parent's cost times one factor (weighted least squares on relative error)."""
    t, design, w = _terms(rows, peak, bw, compute)
    x = _x_of(parent, compute)
    r = design @ x / t
    s = float(np.clip((w**2 * r).sum() / (w**2 * r * r).sum(), 1e-3, 1e3))  # argmin Σ w²(s·r - 1)²
    return _result(x * s, t, design, "scaled parent")


def fit_factors(table: pd.DataFrame, peak: float, bw: float) -> dict[str, dict[str, float | int | str]]:
    """Per-class factors for every class with rows in ``table``, parents first. A family (``quant``) is
    fitted on all its op-type rows (``quant:QuantizeLinear``, ``quant:DynamicQuantizeLinear``, ...), each
    op type then on its own rows; a kernel variant (``conv_nchw`` of ``conv``) on its own rows only."""
    out: dict[str, dict[str, float | int | str]] = {}
    if "model" in table and "share" not in table:
        table = table.assign(share=table["ms"] / table.groupby("model")["ms"].transform("sum"))
    present = set(table["op_class"])
    family = table["op_class"].str.split(":").str[0]
    for c in sorted(present | set(family), key=lambda c: (_depth(c), c)):
        rows = table[table["op_class"] == c] if ":" in c else table[family == c]
        if rows.empty:
            continue
        parent = parent_class(c)
        while parent is not None and parent not in out:
            parent = parent_class(parent)
        compute = c.split(":")[0] in COMPUTE_CLASSES
        if parent is not None and len(rows) < FULL_FIT_ROWS:
            out[c] = scale_parent(rows, peak, bw, out[parent], compute)  # type: ignore[arg-type]
        else:
            prior = {k: float(out[parent][k]) for k in PRIORS} if parent is not None else None
            out[c] = fit_class(rows, peak, bw, priors=prior, compute=compute)
    return out


def profiler_cost(rows: list[list[float]], latency_ms: np.ndarray, run_overhead_ms: float,
                  max_ms: float = 0.008) -> float:
    """What ORT's profiler adds to each kernel it times (ms): the cost that, taken off every kernel, makes
    the calibration models' ``(latency - run overhead) / Σ kernels`` most alike (least variance of its log).

    Measured here it is ~5 µs a kernel, longer than a small kernel itself: a 28-kernel autoencoder of
    0.05 ms profiles at 0.13 ms. Scaling profiles to whole-model latency without removing it first would
    shrink a model's big kernels for the sake of its many small ones."""
    from scipy.optimize import minimize_scalar

    target = np.maximum(np.asarray(latency_ms, float) - run_overhead_ms, 1e-6)

    def spread(delta: float) -> float:
        sums = np.array([sum(max(t - delta, 0.1 * t) for t in r) for r in rows])
        return float(np.var(np.log(target / np.maximum(sums, 1e-9))))

    return float(minimize_scalar(spread, bounds=(0.0, max_ms), method="bounded").x)


GROUPS = ("conv", "dwconv", "nchw", "gemm", "int8", "integer", "memory")


def group_of(op_class: str) -> str:
    """The kernel family a class's whole-model correction is shared with (:data:`GROUPS`). The convs off the
    blocked layout (``*_nchw``: im2col + GEMM, one GEMM per group for depthwise) are a family of their own:
    sharing a scale with the blocked kernels let an off-layout miss inflate every blocked depthwise conv."""
    base = op_class.split(":")[0]
    if "integer" in base:
        return "integer"
    if "int8" in base:
        return "int8"
    if base.endswith("_nchw"):
        return "nchw"
    if base.startswith("dwconv"):
        return "dwconv"
    if base.startswith("conv"):
        return "conv"
    return "gemm" if base in ("gemm", "gemv") else "memory"


def fit_group_scales(parts: np.ndarray, counts: np.ndarray, measured: np.ndarray, run_overhead_ms: float,
                     ridge: float = 0.15, max_delta_ms: float = 0.003,
                     overhead_range: tuple[float, float] = (1.0, 1.0)) -> tuple[np.ndarray, float, float]:
    """(scale per kernel family, cost per kernel in ms, per-run overhead in ms) so that
    ``R + Σ_g s_g·parts[:, g] + δ·counts`` matches the measured whole-model latencies in relative error;
    scales are pulled towards 1 (``ridge``) and bounded to 0.3-3, |δ| ≤ ``max_delta_ms``, and ``R`` stays
    within ``overhead_range`` x the measured ``run_overhead_ms`` (pulled gently towards it; (1, 1) pins it).
    ``parts[m, g]`` is model m's predicted time in family g.

    Kernels timed one by one by the profiler run warmer or colder than inside a whole run, and by a
    different amount per family (a conv's weights stay in cache between profiled runs, a transpose's
    input does not); the calibration models' whole latencies pin each family's factor down. The run
    overhead is fitted with them because the empty graph it is measured on reads ~9 us in some sessions
    and ~13 us in others, while the small calibration models (an MLP of ~20 us) pin what a run really costs."""
    from scipy.optimize import lsq_linear

    g = parts.shape[1]
    r0 = max(float(run_overhead_ms), 1e-6)
    a = np.concatenate([parts, counts[:, None], np.full((len(measured), 1), r0)], axis=1) / measured[:, None]
    b = np.ones(len(measured))
    used = parts.sum(axis=0) > 0
    reg = np.zeros((g + 1, g + 2))
    reg[np.arange(g), np.arange(g)] = ridge * used
    reg[g, g + 1] = ridge / 3  # the overhead, as a multiple of the measured one, pulled towards 1
    a = np.vstack([a, reg])
    b = np.concatenate([b, ridge * used.astype(float), [ridge / 3]])
    lo_r, hi_r = overhead_range
    lo = np.concatenate([np.where(used, 0.3, 1.0 - 1e-9), [-max_delta_ms], [min(lo_r, 1.0 - 1e-9)]])
    hi = np.concatenate([np.where(used, 3.0, 1.0 + 1e-9), [max_delta_ms], [max(hi_r, 1.0 + 1e-9)]])
    sol = lsq_linear(a, b, bounds=(lo, hi))
    return sol.x[:g], float(sol.x[g]), float(sol.x[g + 1] * r0)
