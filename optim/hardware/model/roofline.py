"""Per-layer roofline arithmetic for one device: the pure, testable core of the estimator.

A layer costs ``max(ops / (peak × eff_compute), bytes / (bandwidth × eff_memory)) + overhead`` (the sum of
the two terms instead of their max on a device flagged ``additive_cost``: the calibrated host);
the bound is whichever term wins, intensity is ops per byte moved. Inputs are the per-node columns of
``optim.graph.summary.summarize(handle).layers`` plus the op class and fusion flags worked out from the graph
(see :mod:`optim.hardware.model.graphinfo`). Written here because roofline tools (e.g. nn-Meter, ANNETTE)
are research code bound to their own graph formats and kernel tables, not libraries we can call.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from optim.errors import HardwareError
from optim.hardware.device import PRECISION_BITS, PRECISIONS, Device

COMPUTE_CLASSES = ("conv", "conv_in", "conv1x1", "conv_nchw", "conv1x1_nchw", "dwconv", "dwconv_nchw", "gemm", "conv_int8", "dwconv_int8",
                   "gemm_int8", "conv_int8_odd", "dwconv_int8_odd", "conv_integer", "dwconv_integer",
                   "conv_integer_odd", "dwconv_integer_odd", "gemm_integer", "gemv", "gemv_int8", "gemv_integer")
LAYER_COLUMNS = ["node", "op_type", "op_class", "macs", "ops", "weight_bytes", "act_bytes", "bytes", "out_elems",
                 "intensity", "compute_ms", "memory_ms", "overhead_ms", "ms", "bound", "precision_path", "calls",
                 "out_rows", "bcast_ops", "dram_bytes"]
DRAM_RAMP = (0.5, 1.5)  # a run's bytes / last-level cache at which its weights start / finish streaming from DRAM


def dram_share(run_bytes: float, llc_bytes: float) -> float:
    """Share of a layer's weight bytes read from DRAM: each weight is read once per run, so it is still in the
    last-level cache from the previous run only when a whole run's traffic fits there; the share ramps from
    0 at half the cache to 1 at 1.5x (other tenants use a shared cache too)."""
    if llc_bytes <= 0:
        return 0.0
    lo, hi = DRAM_RAMP
    return float(np.clip((run_bytes / llc_bytes - lo) / (hi - lo), 0.0, 1.0))


@dataclass(frozen=True)
class PrecisionPath:
    """How a requested precision runs on a device: compute and weight-storage precisions, in words."""

    requested: str
    compute: str
    storage: str
    mode: str
    text: str

    @property
    def act_bytes(self) -> float:
        return PRECISION_BITS[self.compute] / 8 if self.compute != "int4" else 1.0


def precision_of_bits(bits: int | float | None) -> str:
    """32 → fp32, 16 → fp16, 5..8 → int8, ≤ 4 → int4."""
    b = 32 if bits is None else int(bits)
    if b >= 32:
        return "fp32"
    if b >= 9:
        return "fp16"
    return "int8" if b >= 5 else "int4"


def _fallback_order(precision: str) -> list[str]:
    """Higher precisions first (keeps accuracy), then lower ones (needs conversion)."""
    i = PRECISIONS.index(precision)
    return [*reversed(PRECISIONS[:i]), *PRECISIONS[i + 1:]]


def resolve_precision(device: Device, precision: str) -> PrecisionPath:
    """Which path ``precision`` takes on ``device`` (native, emulated, converted or a fallback)."""
    support = device.precisions[precision]
    up = precision.upper()
    if support.mode == "native":
        return PrecisionPath(precision, precision, precision, "native", f"{up} native")
    if support.mode == "emulated":
        tgt = support.target or "fp32"
        return PrecisionPath(precision, tgt, precision, "emulated",
                             f"{up} emulated: weights stored {up}, computed in {tgt.upper()} ({support.source})")
    if support.mode == "convert":
        tgt = support.target or "int8"
        return PrecisionPath(precision, tgt, tgt, "convert",
                             f"{up} not executed: toolchain converts to {tgt.upper()} ({support.source}); "
                             f"accuracy at {tgt.upper()} not measured here")
    for alt in _fallback_order(precision):
        if device.precisions[alt].mode == "native":
            return PrecisionPath(precision, alt, alt, "fallback",
                                 f"{up} not supported on {device.name}: falls back to {alt.upper()}")
    raise HardwareError(f"{device.name} runs none of {PRECISIONS}; fix its catalog entry.")


def layer_times(layers: pd.DataFrame, device: Device, path: PrecisionPath, batch: int = 1,
                sparse_2_4: bool = False) -> pd.DataFrame:
    """Roofline time per layer. ``layers`` needs node, op_type, op_class, macs, flops, params,
    act_in_elems, act_out_elems, fused (bool). Returns :data:`LAYER_COLUMNS`."""
    df = layers.copy()
    is_compute = df["op_class"].isin(COMPUTE_CLASSES)
    pad = df["mac_pad"].astype(float) if "mac_pad" in df else 1.0
    ops = np.where(is_compute, 2.0 * df["macs"].astype(float) * pad, df["flops"].astype(float)) * batch
    w_bytes = df["params"].astype(float) * PRECISION_BITS[path.storage] / 8
    a_bytes = (df["act_in_elems"].astype(float) + df["act_out_elems"].astype(float)) * batch * path.act_bytes
    if "im2col_elems" in df:  # convs lowered to im2col + GEMM write and read back their patch matrix
        a_bytes = a_bytes + 2 * df["im2col_elems"].astype(float).fillna(0.0) * batch * path.act_bytes
    total_bytes = w_bytes + a_bytes
    peak = device.peak(path.compute)
    bw = device.spec("bandwidth")
    eff_c = df["op_class"].map(lambda c: device.factors(c).eff_compute).astype(float)
    eff_m = df["op_class"].map(lambda c: device.factors(c).eff_memory).astype(float)
    over = df["op_class"].map(lambda c: device.factors(c).overhead_s).astype(float)
    per_out = df["op_class"].map(lambda c: device.factors(c).per_output_s).astype(float)
    per_row = df["op_class"].map(lambda c: device.factors(c).per_row_s).astype(float)
    once = df["op_class"].map(lambda c: device.factors(c).kernel_s).astype(float)
    calls = df["calls"].astype(float) if "calls" in df else pd.Series(1.0, index=df.index)
    rows = df["out_rows"].astype(float) * batch if "out_rows" in df else pd.Series(0.0, index=df.index)
    over = over * calls + once + per_out * df["act_out_elems"].astype(float) * batch + per_row * rows
    t_c = ops / (peak * eff_c)
    if "bcast_ops" in df:  # blocked convs with few output blocks reuse each input broadcast less
        t_c = t_c + df["bcast_ops"].astype(float) * batch / peak * df["op_class"].map(lambda c: device.factors(c).bcast)
    if sparse_2_4:
        t_c = np.where(is_compute, t_c / 2, t_c)
    free = df["fused"].astype(bool) | ((df["op_class"] == "shape") & ("shape" not in device.class_factors))
    dram = np.zeros(len(df))
    if device.flag("dram_weights") and "onchip" in device.specs:  # weights beyond the cache come at DRAM speed
        dram = np.where(free, 0.0, w_bytes * dram_share(float(total_bytes[~free].sum()), device.spec("onchip")))
    t_m = (total_bytes - dram) / (bw * eff_m) + dram / (bw * np.minimum(eff_m, 1.0))
    busy = t_c + t_m if device.flag("additive_cost") else np.maximum(t_c, t_m)
    t = np.where(free, 0.0, busy + over)
    out = pd.DataFrame({
        "node": df["node"], "op_type": df["op_type"], "op_class": df["op_class"],
        "macs": df["macs"].astype(float) * batch, "ops": ops, "weight_bytes": w_bytes, "act_bytes": a_bytes,
        "bytes": total_bytes, "out_elems": df["act_out_elems"].astype(float) * batch,
        "intensity": np.divide(ops, total_bytes, out=np.zeros(len(df)), where=total_bytes > 0),
        "compute_ms": np.where(free, 0.0, t_c * 1e3), "memory_ms": np.where(free, 0.0, t_m * 1e3),
        "overhead_ms": np.where(free, 0.0, over * 1e3), "ms": t * 1e3,
        "bound": np.where(free, np.where(df["fused"], "fused", "free"), np.where(t_c >= t_m, "compute", "memory")),
        "precision_path": path.text, "calls": calls.to_numpy(), "out_rows": rows.to_numpy(),
        "bcast_ops": (df["bcast_ops"].astype(float) * batch).to_numpy() if "bcast_ops" in df else np.zeros(len(df)),
        "dram_bytes": dram,
    })
    return out[LAYER_COLUMNS].reset_index(drop=True)


def ridge_intensity(device: Device, compute: str, op_class: str = "conv") -> float:
    """Ops/byte where the effective compute and memory roofs meet."""
    f = device.factors(op_class)
    return device.peak(compute) * f.eff_compute / (device.spec("bandwidth") * f.eff_memory)


def roof_curve(device: Device, compute: str, op_class: str = "conv", n: int = 60) -> pd.DataFrame:
    """Roofline curve (intensity → attainable GOPS), peak and effective, for a log-log chart."""
    f = device.factors(op_class)
    x = np.logspace(-2, 4, n)
    peak, bw = device.peak(compute), device.spec("bandwidth")
    return pd.DataFrame({
        "intensity": x,
        "peak_gops": np.minimum(peak, bw * x) / 1e9,
        "effective_gops": np.minimum(peak * f.eff_compute, bw * f.eff_memory * x) / 1e9,
    })
