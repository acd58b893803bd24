"""Calibration ranges computed once and reused, and INT8 graphs built from files.

Static INT8 needs each activation's range on calibration data. ``quantize_static`` recomputes them on
every call; the INT8 configuration search quantises one model several ways (QDQ/QOperator, U8S8/S8S8,
per-channel/per-tensor, layers left FP32), and a sweep quantises the same model again at every
optimisation level, so ranges are computed here once per (model, calibration data, method) and handed
to ORT through its own calibration cache (``quantize_static(calibration_cache_path=...)``, a JSON file
of ``TensorsData``). The ranges depend only on the FP32 graph and the data: the activation type, format
and weight settings turn the same ranges into scales.

Memory: ORT's calibrator makes every intermediate tensor a graph output; the histogram methods (entropy,
percentile) keep all of them for a whole reader pass. Data is therefore fed in calls sized by
:func:`optim.measure.budget.calibration_batch`, one ``collect_data`` pass per call (histograms and
min/max both accumulate across passes), and the calibrator and its session are released as soon as the
ranges exist. Models travel as files: the pre-processed graph is written once and every candidate is
quantised from that path (``quant_pre_process`` output), never from copies of the ModelProto.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    TensorsData,
    create_calibrator,
    quant_pre_process,
    save_tensors_data,
)
from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

from optim.io.shapes import synthesize_inputs
from optim.passes._quant.opset import unshare_biases

CACHE_ENTRIES = 16
_RANGES: OrderedDict[tuple[Any, ...], TensorsData] = OrderedDict()
_LOCK = threading.Lock()


class ArrayReader(CalibrationDataReader):
    """Feeds calibration arrays (every input the data gives, by name, the same rows each) to ORT's calibrator in
    batches (batch 1 when the model fixes it); inputs the data lacks are synthesised per batch from ``model``."""

    def __init__(self, arrays: dict[str, np.ndarray], batch: int, tick: Callable[[float], None],
                 model: onnx.ModelProto | None = None, constants: dict[str, np.ndarray] | None = None) -> None:  # fmt: skip
        self.arrays, self.batch, self.tick, self.pos = arrays, batch, tick, 0
        self.constants = constants or {}  # inputs without a sample axis (a 0-d sample rate): whole, every batch
        self.n = len(next(iter(arrays.values())))
        self.model = model  # given when the model has inputs the data does not give: those are synthesised

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.pos >= self.n:
            return None
        chunk = {k: v[self.pos : self.pos + self.batch] for k, v in self.arrays.items()}
        b = len(next(iter(chunk.values())))
        self.pos += b
        self.tick(self.pos / self.n)
        if self.model is None:
            return {**self.constants, **chunk}
        return {**synthesize_inputs(self.model, batch=b), **self.constants, **chunk}

    def rewind(self) -> None:
        self.pos = 0


SYMBOLIC_OPS = {"Softmax", "LayerNormalization", "Attention", "MultiHeadAttention", "Einsum", "Range", "NonZero",
                "Expand", "ConstantOfShape", "Loop", "If", "Scan"}  # fmt: skip


def preprocess(src: Path, d: Path, ops: set[str] | None = None) -> Path:
    """``quant_pre_process`` (shape inference + basic fusion) of the file ``src`` into ``d``.

    ORT's symbolic shape inference (sympy) is what transformer graphs need, and it is slow: 11 s of a
    12 s pre-processing of the 5 MB bundled ResNet on a loaded machine. Graphs without ops whose shapes
    depend on values (``ops`` has none of :data:`SYMBOLIC_OPS`) try ONNX's own shape inference first.
    Falls back to ``src`` when pre-processing fails. A path, not a ModelProto, goes on to ORT:
    ``quantize_static`` rewrites a ModelProto argument in place (external-data references into a
    temporary directory it deletes).
    """
    dst = d / "pre.onnx"
    logging.getLogger("onnxruntime").setLevel(logging.ERROR)
    order: list[dict[str, bool]] = [{}, {"skip_symbolic_shape": True}]
    if ops is not None and not ops & SYMBOLIC_OPS:
        order.reverse()
    for kwargs in order:
        t0 = time.time()
        try:
            quant_pre_process(str(src), str(dst), **kwargs)
            pre = onnx.load_model(str(dst))
            fixed = unshare_biases(pre)  # ORT's ConstantSharing merges equal small constants again
            if fixed is not pre:
                onnx.save_model(fixed, str(dst))
            return dst
        except Exception:  # noqa: BLE001 - symbolic shape inference fails on some graphs; ORT still works
            remove_shape_infer_leftover(t0)
            continue
    return src


LEFTOVER = "sym_shape_infer_temp.onnx"  # ORT's symbolic shape inference saves this into the cwd when it fails


def remove_shape_infer_leftover(since: float, cwd: Path | None = None) -> None:
    """Delete the model (and its external-data files) ORT's failed symbolic shape inference just wrote into
    the working directory: a 170 MB file per failed attempt on a pruned BERT-base, left wherever we ran."""
    temp = (cwd or Path.cwd()) / LEFTOVER
    try:
        if temp.stat().st_mtime < since - 1:
            return  # not from this attempt
        model = onnx.load_model(str(temp), load_external_data=False)
    except Exception:  # noqa: BLE001 - absent or unreadable: nothing of ours to remove
        return
    names = {e.value for t in model.graph.initializer for e in t.external_data if e.key == "location"}
    for name in names:
        data = temp.parent / name
        if Path(name).name == name and data.is_file():  # a bare file name beside it, never a path elsewhere
            data.unlink(missing_ok=True)
    temp.unlink(missing_ok=True)


def data_key(arrays: dict[str, np.ndarray] | np.ndarray) -> str:
    """A short digest of calibration arrays (names, shapes, dtypes and bytes; a bare array: the first input's)."""
    items = arrays.items() if isinstance(arrays, dict) else [("", arrays)]
    h = hashlib.sha256()
    for i, (name, x) in enumerate(items):
        h.update(f"{name if i else ''}{x.dtype.str}{x.shape}".encode())  # the first keeps the one-array digest
        h.update(np.ascontiguousarray(x).data)
    return h.hexdigest()[:24]


def ranges(
    pre: Path, d: Path, *, key: tuple[Any, ...], arrays: dict[str, np.ndarray], batch: int, method: Any,
    extra: dict[str, Any], tick: Callable[[float], None], model: onnx.ModelProto | None = None,
    constants: dict[str, np.ndarray] | None = None,
) -> TensorsData:  # fmt: skip
    """Activation ranges of the pre-processed model ``pre`` on ``arrays`` (every given input by name, the same
    rows each; cached under ``key``)."""
    with _LOCK:
        if key in _RANGES:
            _RANGES.move_to_end(key)
            tick(1.0)
            return _RANGES[key]
    calibrator = create_calibrator(
        pre, list(set(QLinearOpsRegistry) | set(QDQRegistry)), augmented_model_path=str(d / "augmented.onnx"),
        calibrate_method=method, extra_options=extra,
    )
    # min/max keeps only each tensor's reduced range per call: one pass over all the data (a pass per call
    # cost ~0.1 s of range merging each); histograms keep every tensor of a pass, so one pass per call
    n = len(next(iter(arrays.values())))
    per_pass = n if method == CalibrationMethod.MinMax else batch
    try:
        for start in range(0, n, per_pass):
            part = {k: v[start : start + per_pass] for k, v in arrays.items()}
            calibrator.collect_data(ArrayReader(part, batch, lambda f, s=start: tick((s + f * per_pass) / n), model,
                                                constants))
        result = calibrator.compute_data()
    finally:
        del calibrator  # its session holds the augmented model
    (d / "augmented.onnx").unlink(missing_ok=True)
    with _LOCK:
        _RANGES[key] = result
        while len(_RANGES) > CACHE_ENTRIES:
            _RANGES.popitem(last=False)
    return result


def write_cache(tensors: TensorsData, path: Path) -> Path:
    """The JSON calibration cache ``quantize_static(calibration_cache_path=...)`` reads."""
    save_tensors_data(tensors, path)
    return path


def clear_cache() -> None:
    with _LOCK:
        _RANGES.clear()
