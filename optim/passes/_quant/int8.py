"""FP16 and INT8 (dynamic / static) conversions through ONNX Runtime's own tools.

These wrap ``onnxruntime.quantization`` and ``onnxruntime.transformers.float16``; the tools read and
write files, so every call runs in a scratch directory and the result is loaded back into a
ModelProto with its weights embedded. Nothing here edits the caller's ModelProto.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)

from optim.errors import ConfigError, MissingInputError, PassUnavailableError, ShapeMismatchError
from optim.io.named_inputs import input_arrays
from optim.measure.budget import calibration_batch, calibration_samples, per_sample_cost, sample_bytes
from optim.passes._quant.calib import data_key, preprocess, ranges, write_cache
from optim.passes._quant.core import load_embedded, save, scratch_dir
from optim.passes._quant.opset import checked, quantizable

QUANT_TYPES = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
CALIB_METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}
FORMATS = {"qdq": QuantFormat.QDQ, "qoperator": QuantFormat.QOperator}
CALIB_BATCH = 32


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """FP16 weights and compute; inputs/outputs stay FP32 (Casts at the boundaries)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    src = onnx.ModelProto()
    src.CopyFrom(model)  # the converter edits its argument in place
    return convert_float_to_float16(src, keep_io_types=True)


def _graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    inits = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if not inputs:
        raise PassUnavailableError("INT8 static calibration needs a model input; this model has none.")
    return inputs


def _n_inputs(model: onnx.ModelProto) -> int:
    inits = {t.name for t in model.graph.initializer}
    return sum(1 for i in model.graph.input if i.name not in inits)


def _input_dims(vi: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_param or (d.dim_value if d.HasField("dim_value") else "?") for d in vi.type.tensor_type.shape.dim]


def _as_input(vi: onnx.ValueInfoProto, arr: np.ndarray, first: bool) -> np.ndarray:
    """``arr`` in the dtype of input ``vi``, its sample shape checked against the input's."""
    elem = vi.type.tensor_type.elem_type
    dtype = np.float32 if elem in (0, onnx.TensorProto.FLOAT) else onnx.helper.tensor_dtype_to_np_dtype(elem)
    x = np.asarray(arr, dtype=dtype)
    dims = _input_dims(vi)
    if x.ndim != len(dims) or any(isinstance(w, int) and w != g for w, g in zip(dims[1:], x.shape[1:], strict=False)):
        what = "Calibration data" if first else f"Calibration array {vi.name!r}"
        raise ShapeMismatchError(
            f"{what} has shape {tuple(x.shape)} but model input '{vi.name}' expects "
            f"{tuple(dims)}: use data prepared for this model."
        )
    return x


def calibration_arrays(model: onnx.ModelProto, calib: Any, n: int,
                       cost: tuple[int, int] | None = None) -> tuple[dict[str, np.ndarray], int]:  # fmt: skip
    """(every input's calibration array by name — the first input first —, feed batch), each of the same ≤ n
    samples and checked against its input's shape. A plain array or a one-array dataset feeds the first input;
    named multi-input data (``Dataset.x_name`` / ``feeds``, :mod:`optim.io.named_inputs`) gives every input it
    names its own rows (the calibrator synthesises only the inputs the data lacks).

    Fewer than ``n`` samples when ``n`` would exceed the calibration compute budget
    (:func:`optim.measure.budget.calibration_samples`); ``cost``: the model's (activation bytes, MACs) per
    sample when already known."""
    if calib is None:
        raise ConfigError(
            "mode 'int8_static' needs calibration data: pick a dataset (a few hundred samples of the "
            "training split), or use mode 'int8_dynamic' which needs none."
        )
    inputs = _graph_inputs(model)
    first = inputs[0]
    by_name = {vi.name: vi for vi in inputs}
    given = input_arrays(model, calib)
    if first.name not in given:
        raise MissingInputError(f"The calibration data has no array for the model's first input {first.name!r}; "
                                f"add an array named {first.name!r}.")
    arrays = {first.name: _as_input(first, given.pop(first.name), True)}
    arrays.update({k: _as_input(by_name[k], v, False) for k, v in given.items()})
    x = arrays[first.name]
    if len(x) == 0:
        raise ConfigError("calibration data is empty: give at least one sample.")
    if any(len(v) != len(x) for v in arrays.values()):
        raise ShapeMismatchError("The calibration arrays have different numbers of samples "
                                 f"({', '.join(f'{k}: {len(v)}' for k, v in arrays.items())}); give one row per "
                                 "sample in every array.")
    act, macs = cost or per_sample_cost(model)
    n = calibration_samples(n, macs)
    if len(x) > n:
        idx = np.sort(np.random.default_rng(0).choice(len(x), n, replace=False))
        arrays = {k: v[idx] for k, v in arrays.items()}
        x = arrays[first.name]
    cap = calibration_batch(sum(sample_bytes(v) for v in arrays.values()), act, max_batch=CALIB_BATCH)
    dims = _input_dims(first)
    batch = _feed_batch(len(x), cap) if not isinstance(dims[0], int) else max(int(dims[0]), 1)
    if len(x) < batch:
        raise ConfigError(f"calibration data has {len(x)} samples but the model's fixed batch is {batch}: give more.")
    keep = len(x) - len(x) % batch  # equal batches: ORT's histogram calibrators stack them
    return {k: np.ascontiguousarray(v[:keep]) for k, v in arrays.items()}, batch


def calibration_constants(calib: Any) -> dict[str, np.ndarray]:
    """Values of inputs without a sample axis the data sets (``Dataset.constants``: a 0-d sample rate), fed whole
    with every calibration batch."""
    return dict(getattr(calib, "constants", None) or {})


def _feed_batch(n: int, cap: int = CALIB_BATCH) -> int:
    """Largest divisor of ``n`` up to ``cap`` (no sample dropped), or ``cap`` if that divisor is tiny."""
    best = max(d for d in range(1, min(n, cap) + 1) if n % d == 0)
    return best if best >= min(8, cap) or n < cap else cap


def int8_dynamic(model: onnx.ModelProto, weight_type: str, per_channel: bool, reduce_range: bool,
                 exclude: Sequence[str] = ()) -> onnx.ModelProto:  # fmt: skip
    model, per_channel, _note = quantizable(model, per_channel)

    def build(pc: bool) -> onnx.ModelProto:
        with scratch_dir() as d:
            pre = preprocess(save(model, d / "in.onnx"), d, {n.op_type for n in model.graph.node})
            out = build_dynamic(pre, d / "q.onnx", weight_type, pc, reduce_range, exclude)
            return compact(load_embedded(out))

    return checked(build, "INT8 dynamic", per_channel)


def build_dynamic(pre: Path, out: Path, weight_type: str, per_channel: bool, reduce_range: bool,
                  exclude: Sequence[str] = (), op_types: Sequence[str] = ()) -> Path:  # fmt: skip
    """Dynamic INT8 of the file ``pre`` into ``out``; ``op_types``: only these op types (e.g. MatMul/Gemm, so
    convolutions stay FP32); empty: every op type ORT quantises dynamically."""
    quantize_dynamic(str(pre), str(out), weight_type=QUANT_TYPES[weight_type], per_channel=per_channel,
                     reduce_range=reduce_range, nodes_to_exclude=list(exclude),
                     op_types_to_quantize=list(op_types) or None)  # fmt: skip
    return out


@dataclass(frozen=True)
class Calibrated:
    """A pre-processed FP32 file and its activation ranges in ORT's calibration-cache format."""

    pre: Path
    cache: Path
    method: str


def calibrate(model: onnx.ModelProto, src: Path, d: Path, calib: Any, *, n_samples: int, calibration: str,
              model_key: str | None, tick: Callable[[float], None],
              cost: tuple[int, int] | None = None) -> Calibrated:  # fmt: skip
    """Pre-process ``src`` (the file of ``model``) and compute (or reuse) its activation ranges."""
    arrays, batch = calibration_arrays(model, calib, n_samples, cost)
    consts = calibration_constants(calib)
    pre = preprocess(src, d, {n.op_type for n in model.graph.node})
    extra = {"percentile": 99.999} if calibration == "percentile" else {}
    key = (model_key or data_key_of(src), data_key({**arrays, **{f"{k} (every call)": v for k, v in consts.items()}}),
           calibration, batch)
    synth = model if _n_inputs(model) > len(arrays) + len(consts) else None  # what the data lacks: per batch
    tensors = ranges(pre, d, key=key, arrays=arrays, batch=batch, method=CALIB_METHODS[calibration], extra=extra,
                     tick=tick, model=synth, constants=consts)  # fmt: skip
    return Calibrated(pre, write_cache(tensors, d / f"calib_{calibration}.json"), calibration)


def data_key_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:24]


def build_static(cal: Calibrated, out: Path, *, quant_format: str, activation_type: str, weight_type: str,
                 per_channel: bool, reduce_range: bool, exclude: Sequence[str] = ()) -> Path:  # fmt: skip
    """Quantise ``cal.pre`` with its cached ranges into ``out`` (no calibration run)."""
    extra: dict[str, Any] = {}
    if activation_type == "int8":
        extra["ActivationSymmetric"] = True
    if quant_format == "qdq":
        # Keep Conv/Gemm biases FP32 in QDQ: ORT still fuses DQ→Conv→Q into QLinearConv (it quantises the
        # bias itself), and the file saves the int32 copy's extra per-channel scale (mobilenetv2_digits:
        # 0.371 → 0.328 of FP32, same kernels, same latency).
        extra["QuantizeBias"] = False
    quantize_static(str(cal.pre), str(out), None, quant_format=FORMATS[quant_format], per_channel=per_channel,
                    reduce_range=reduce_range, activation_type=QUANT_TYPES[activation_type],
                    weight_type=QUANT_TYPES[weight_type], calibrate_method=CALIB_METHODS[cal.method],
                    nodes_to_exclude=list(exclude), extra_options=extra,
                    calibration_cache_path=str(cal.cache))  # fmt: skip
    return out


def int8_static(
    model: onnx.ModelProto,
    calib: Any,
    *,
    n_samples: int,
    quant_format: str,
    activation_type: str,
    weight_type: str,
    per_channel: bool,
    reduce_range: bool,
    calibration: str,
    tick: Callable[[float], None],
    model_key: str | None = None,
    exclude: Sequence[str] = (),
) -> onnx.ModelProto:
    """Static INT8 of ``model``; ranges are reused across calls with the same ``model_key`` and data."""
    cost = per_sample_cost(model)
    calibration_arrays(model, calib, n_samples, cost)  # refuse bad data before any work
    model, per_channel, note = quantizable(model, per_channel)
    key = model_key if not note else None  # a converted graph is another model

    def build(pc: bool) -> onnx.ModelProto:
        with scratch_dir() as d:
            cal = calibrate(model, save(model, d / "in.onnx"), d, calib, n_samples=n_samples,
                            calibration=calibration, model_key=key, tick=tick, cost=cost)  # fmt: skip
            out = build_static(cal, d / "q.onnx", quant_format=quant_format, activation_type=activation_type,
                               weight_type=weight_type, per_channel=pc, reduce_range=reduce_range, exclude=exclude)
            return compact(load_embedded(out))

    return checked(build, "INT8 static", per_channel)


def compact(model: onnx.ModelProto) -> onnx.ModelProto:
    """Drop the intermediate shape annotations ``quant_pre_process`` added (ORT re-infers them on load).

    The FP32 input carries none, so keeping them would charge the INT8 file ~0.05 % of FP32 for
    metadata, not weights.
    """
    del model.graph.value_info[:]
    return model
