"""Numeric helpers shared by the quantization and pruning passes (and the UI's "Learn" page).

ONNX Runtime's quantization tool only *executes* bit-widths its kernels support (8-bit, 4-bit
MatMul). For teaching and for layers that no kernel runs at low precision we simulate: weights are
quantised to ``bits`` and immediately dequantised back to FP32 ("fake quantisation"), so accuracy
reflects the rounding error while the graph stays an ordinary FP32 graph. No maintained library
exposes this on ONNX initializers with per-channel scales *and* the packed-size bookkeeping we need,
so the few lines live here.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from optim.hardware import host

# Ops whose input #1 is a weight matrix/kernel, and the axis of its *output* channels.
WEIGHT_OPS: tuple[str, ...] = ("Conv", "ConvTranspose", "Gemm", "MatMul")
# Ops whose presence means a graph runs layers quantised: ORT's INT8 (QOperator, QDQ, dynamic) and INT4 forms.
QUANTISED_OPS = frozenset({"ConvInteger", "MatMulInteger", "QLinearConv", "QLinearMatMul", "QGemm", "MatMulNBits",
                           "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "DynamicQuantizeMatMul",
                           "MatMulIntegerToFloat", "DynamicQuantizeLSTM", "QAttention"})


@dataclass(frozen=True)
class QuantError:
    """How far a fake-quantised array is from the original."""

    bits: int
    mse: float
    max_abs_error: float
    rel_error: float  # ||w - q(w)|| / ||w||
    sqnr_db: float  # 10 log10(signal power / noise power); inf when exact


def fake_quantize(
    array: np.ndarray, bits: int, per_channel_axis: int | None = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric linear quantisation to ``bits`` then back to float: ``(dequantized, scale)``.

    Levels are the integers ``-qmax..qmax`` with ``qmax = 2**(bits-1) - 1`` (the restricted symmetric
    range used for weights), one scale per slice along ``per_channel_axis`` (``None``: one scale for
    the whole tensor). ``scale`` has the shape of that axis (or shape ``(1,)``), dtype float32.
    """
    if not 2 <= bits <= 16:
        raise ValueError(f"bits must be between 2 and 16, got {bits}")
    w = np.asarray(array, dtype=np.float32)
    qmax = float(2 ** (bits - 1) - 1)
    if per_channel_axis is None or w.ndim == 0:
        amax = np.abs(w).max(initial=0.0).reshape(1)
        scale_b = amax / qmax
        scale_b = np.where(scale_b > 0, scale_b, 1.0).astype(np.float32)
        deq = np.clip(np.round(w / scale_b[0]), -qmax, qmax) * scale_b[0]
        return deq.astype(np.float32), scale_b
    axis = per_channel_axis % w.ndim
    reduce_axes = tuple(i for i in range(w.ndim) if i != axis)
    amax = np.abs(w).max(axis=reduce_axes, keepdims=True, initial=0.0)
    scale = np.where(amax > 0, amax / qmax, 1.0).astype(np.float32)
    deq = np.clip(np.round(w / scale), -qmax, qmax) * scale
    return deq.astype(np.float32), scale.reshape(-1)


def quantization_error(array: np.ndarray, bits: int, per_channel_axis: int | None = 0) -> QuantError:
    """Error of :func:`fake_quantize` on ``array``: MSE, max |error|, relative L2 error, SQNR (dB)."""
    w = np.asarray(array, dtype=np.float64)
    deq, _ = fake_quantize(w, bits, per_channel_axis)
    err = w - deq.astype(np.float64)
    noise = float(np.mean(err**2)) if err.size else 0.0
    signal = float(np.mean(w**2)) if w.size else 0.0
    sqnr = float("inf") if noise == 0 else 10.0 * np.log10(max(signal, 1e-300) / noise)
    norm = float(np.linalg.norm(w))
    return QuantError(
        bits=bits,
        mse=noise,
        max_abs_error=float(np.abs(err).max(initial=0.0)),
        rel_error=float(np.linalg.norm(err) / norm) if norm > 0 else 0.0,
        sqnr_db=sqnr,
    )


def packed_bytes(n_values: int, bits: int, n_scales: int) -> int:
    """Bytes of ``n_values`` integers packed at ``bits`` each plus FP32 scales (symmetric: no zero points)."""
    return -(-n_values * bits // 8) + 4 * n_scales


# --- weight discovery on ONNX graphs ---------------------------------------------------------------
@dataclass(frozen=True)
class WeightRef:
    """A float weight initializer consumed as input #1 of a Conv/Gemm/MatMul node."""

    name: str  # initializer name
    node: str  # consuming node name
    op_type: str
    out_axis: int  # axis of output channels in the stored tensor


def _attr(node: onnx.NodeProto, name: str, default: int) -> int:
    for a in node.attribute:
        if a.name == name:
            return int(a.i)
    return default


def weight_refs(model: onnx.ModelProto) -> list[WeightRef]:
    """Float weight initializers of Conv/ConvTranspose/Gemm/MatMul nodes, graph order, each once."""
    inits = {t.name: t for t in model.graph.initializer}
    seen: set[str] = set()
    refs: list[WeightRef] = []
    for node in model.graph.node:
        if node.op_type not in WEIGHT_OPS or len(node.input) < 2:
            continue
        name = node.input[1]
        t = inits.get(name)
        if t is None or name in seen or t.data_type not in _FLOAT_TYPES or len(t.dims) < 2:
            continue
        if node.op_type == "ConvTranspose":
            axis = 1
        elif node.op_type == "Gemm":
            axis = 0 if _attr(node, "transB", 0) else 1
        elif node.op_type == "MatMul":
            axis = len(t.dims) - 1
        else:
            axis = 0
        seen.add(name)
        refs.append(WeightRef(name, node.name, node.op_type, axis))
    return refs


_FLOAT_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE)


def replace_initializers(model: onnx.ModelProto, arrays: dict[str, np.ndarray]) -> None:
    """Overwrite named initializers of ``model`` (a copy the caller owns) keeping each stored dtype."""
    for i, t in enumerate(model.graph.initializer):
        if t.name in arrays:
            dtype = onnx.helper.tensor_dtype_to_np_dtype(t.data_type)
            new = numpy_helper.from_array(np.asarray(arrays[t.name]).astype(dtype), t.name)
            model.graph.initializer[i].CopyFrom(new)


def op_histogram(model: onnx.ModelProto) -> dict[str, int]:
    """Node count per op type; ops outside the default domain are labelled ``op (domain)``."""
    hist: dict[str, int] = {}
    for node in model.graph.node:
        key = node.op_type if node.domain in ("", "ai.onnx") else f"{node.op_type} ({node.domain})"
        hist[key] = hist.get(key, 0) + 1
    return dict(sorted(hist.items(), key=lambda kv: (-kv[1], kv[0])))


def cpu_has_vnni() -> bool | None:
    """True/False when the CPU lists (or lacks) an 8-bit dot-product extension; None if unknown.
    The probe itself is :func:`optim.hardware.host.cpu_has_vnni` (one CPU probe for the project)."""
    return host.cpu_has_vnni()


# --- ORT tools write files: run them in a scratch dir ----------------------------------------------
@contextmanager
def scratch_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="optim_pass_") as d:
        yield Path(d)


def save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save_model(model, str(path))
    return path


def load_embedded(path: Path) -> onnx.ModelProto:
    """Load a model ORT wrote, pulling any external data back into the ModelProto."""
    model = onnx.load_model(str(path), load_external_data=True)
    return model
