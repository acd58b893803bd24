"""Live illustrations for the Learn page: a layer's weights under quantization and magnitude pruning.

Plain NumPy over the ONNX initializers (symmetric per-tensor fake quantization, magnitude threshold)
so the page can show *this* model's numbers instantly; the real passes live in ``optim.passes``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from onnx import numpy_helper

from optim.analysis.labels import bits_label
from optim.handle import ModelHandle
from optim.passes._quant import core as quant_core
from optim.passes._quant.core import weight_refs


def _weights(handle: ModelHandle) -> dict[str, tuple[str, np.ndarray]]:
    """node name → (op_type, float weight array) for the weight layers the quantize pass sees."""
    inits = {t.name: t for t in handle.model.graph.initializer}
    out: dict[str, tuple[str, np.ndarray]] = {}
    for ref in weight_refs(handle.model):
        arr = numpy_helper.to_array(inits[ref.name])
        if arr.size >= 16:
            out[ref.node or ref.name] = (ref.op_type, arr.astype(np.float32))
    return out


def weight_layers(handle: ModelHandle) -> pd.DataFrame:
    """Layers with float weights: node, op_type, shape, params."""
    rows = [(n, op, "×".join(map(str, w.shape)), int(w.size)) for n, (op, w) in _weights(handle).items()]
    return pd.DataFrame(rows, columns=["node", "op_type", "shape", "params"])


def fake_quantize(w: np.ndarray, bits: int) -> np.ndarray:
    """Symmetric per-tensor fake quantization (the passes' quantiser, one scale for the whole layer);
    bits ≥ 16 returns the FP16 rounding."""
    if bits >= 32:
        return w.copy()
    if bits == 16:
        return w.astype(np.float16).astype(np.float32)
    return quant_core.fake_quantize(w, bits, per_channel_axis=None)[0]


def sqnr_db(w: np.ndarray, wq: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio in dB (higher is better; inf when exact)."""
    noise = float(np.sum((w - wq) ** 2))
    signal = float(np.sum(w**2))
    return float("inf") if noise == 0 else 10 * np.log10(max(signal, 1e-30) / noise)


def quant_demo(handle: ModelHandle, layer: str, bits: int) -> dict[str, Any]:
    """One layer's weights before/after fake quantization, error stats and distinct levels."""
    op, w = _weights(handle)[layer]
    wq = fake_quantize(w, bits)
    err = (wq - w).ravel()
    return {"layer": layer, "op_type": op, "bits": bits, "weights": w.ravel(), "quantized": wq.ravel(),
            "levels": int(np.unique(wq).size), "sqnr_db": sqnr_db(w, wq),
            "max_abs_error": float(np.abs(err).max()), "rmse": float(np.sqrt(np.mean(err**2)))}


def prune_demo(handle: ModelHandle, layer: str, ratio: float) -> dict[str, Any]:
    """Magnitude pruning of one layer: threshold, weights kept, and per-output-channel L2 norms."""
    op, w = _weights(handle)[layer]
    flat = np.abs(w.ravel())
    thr = float(np.quantile(flat, ratio)) if ratio > 0 else 0.0
    kept = flat > thr if ratio > 0 else np.ones_like(flat, dtype=bool)
    axis0 = w.reshape(w.shape[0], -1) if op != "MatMul" else w.T.reshape(w.shape[-1], -1)
    norms = np.sqrt((axis0**2).sum(axis=1))
    n_drop = int(round(ratio * norms.size))
    dropped = np.argsort(norms)[:n_drop]
    return {"layer": layer, "weights": w.ravel(), "threshold": thr, "kept_fraction": float(kept.mean()),
            "channel_norms": norms, "dropped_channels": np.sort(dropped)}


def sensitivity_table(handle: ModelHandle, bits: tuple[int, ...] = (16, 8, 6, 4, 2)) -> pd.DataFrame:
    """Weight SQNR (dB) per layer × bit-width: a cheap proxy for which layers tolerate fewer bits."""
    rows = {}
    for name, (_, w) in _weights(handle).items():
        rows[name] = {bits_label(b): sqnr_db(w, fake_quantize(w, b)) for b in bits}
    return pd.DataFrame.from_dict(rows, orient="index")
