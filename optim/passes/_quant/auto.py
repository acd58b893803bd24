"""``int8_auto``: the INT8 configuration search (:mod:`optim.passes._quant.search`) run on one model.

Everything happens on files in one scratch directory: the FP32 model is written once from the handle's
serialized bytes (no ModelProto copy), pre-processed once, calibrated once (ranges cached across calls,
:mod:`optim.passes._quant.calib`), and each candidate is quantised from that file. Only the chosen
candidate is loaded back into a ModelProto; the others are deleted with the directory.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from optim.errors import PassUnavailableError
from optim.graph.summary import summarize
from optim.handle import ModelHandle
from optim.io.shapes import synthesize_inputs
from optim.passes._quant.calib import preprocess
from optim.passes._quant.core import load_embedded, save, scratch_dir
from optim.passes._quant.int8 import calibrate, calibration_arrays, calibration_constants, compact
from optim.passes._quant.opset import opens, quantizable
from optim.passes._quant.search import PROBE_SAMPLES, matmul_share, note, search


def _probe_inputs(model: onnx.ModelProto, calib: Any, n_samples: int, cost: tuple[int, int]
                  ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], int]:  # fmt: skip
    """(probe samples of every input the data gives — the first input first —, feeds for the other inputs at
    batch 1, calibration samples used)."""
    used = 0
    if calib is not None:
        arrays, _batch = calibration_arrays(model, calib, n_samples, cost)
        rows = {k: np.ascontiguousarray(v[:PROBE_SAMPLES]) for k, v in arrays.items()}
        used = len(next(iter(arrays.values())))
    else:
        feeds = synthesize_inputs(model, batch=PROBE_SAMPLES, seed=1)
        first = next(iter(feeds))
        rows = {first: np.ascontiguousarray(feeds[first])}
    rest = {k: v for k, v in synthesize_inputs(model, batch=1).items() if k not in rows}
    rest.update(calibration_constants(calib))  # a 0-d sample rate from the data, not the synthesised one
    return rows, rest, used


def int8_auto(
    handle: ModelHandle, calib: Any, *, n_samples: int, calibration: str, budget_s: float, probe_budget_s: float,
    only: tuple[str, ...] = (), tick: Callable[[float, str], None] = lambda f, m: None,
) -> tuple[onnx.ModelProto, dict[str, Any]]:  # fmt: skip
    """The fastest INT8 configuration of ``handle`` whose fidelity holds, and the search record."""
    model, per_channel, conv_note = quantizable(handle.model, True)
    summary = summarize(handle)
    share = matmul_share(summary.layers)
    has_conv = bool((summary.layers["op_type"].isin(["Conv", "ConvTranspose"]) & (summary.layers["params"] > 0)).any())
    cost = (int(summary.layers["act_out_elems"].fillna(0).sum()) * 4, int(summary.macs))
    rows, rest, used = _probe_inputs(model, calib, n_samples, cost)
    with scratch_dir() as d:
        src = d / "in.onnx"
        if model is handle.model:
            src.write_bytes(handle.model_bytes)
        else:
            save(model, src)
        cal = None
        if calib is not None:
            cal = calibrate(model, src, d, calib, n_samples=n_samples, calibration=calibration, cost=cost,
                            model_key=None if conv_note else handle.content_hash,
                            tick=lambda f: tick(0.3 * f, "INT8 search: calibrating"))  # fmt: skip
            pre = cal.pre
        else:
            pre = preprocess(src, d, {n.op_type for n in model.graph.node})
        del model
        path, rec = search(src, pre, cal, rows, d, share=share, budget_s=budget_s, probe_budget_s=probe_budget_s,
                           only=only, per_channel=per_channel, extra=rest, has_conv=has_conv, tick=tick)  # fmt: skip
        if path is None:
            raise PassUnavailableError(note(rec) + " Try an explicit INT8 mode (int8_static / int8_dynamic).")
        opens(Path(path))  # from the file: no serialised copy, the probe's sessions are gone by now
        out = compact(load_embedded(Path(path)))
    rec["matmul_share"] = share
    rec["calibration_samples"] = used
    if conv_note:
        rec["opset_note"] = conv_note
    return out, rec
