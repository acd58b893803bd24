"""The host cost form's per-call, per-row and per-kernel terms, and the robust class fit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from optim.graph.summary import summarize
from optim.handle import ModelHandle
from optim.hardware.calibration import fit
from optim.hardware.model import graphinfo
from optim.hardware.model.estimator import estimate_with_device
from optim.hardware.model.host_device import host_device
from optim.hardware.model.ortplan import apply_plan, ort_plan
from optim.io.export import torch_to_onnx

PEAK, BW = 100e9, 20e9


def _dw_rows(n: int, seed: int = 0) -> pd.DataFrame:
    """Depthwise convs off the blocked layout: 0.2 us per channel, 30 ns per output row, 1 ns per output."""
    rng = np.random.default_rng(seed)
    calls = rng.integers(4, 129, n).astype(float)
    height = rng.integers(2, 49, n).astype(float)
    width = rng.integers(2, 49, n).astype(float)
    rows, out = calls * height, calls * height * width
    ops, nbytes = 18 * out, 8 * out
    ms = (calls * 0.2e-6 + rows * 30e-9 + out * 1e-9 + ops / (PEAK * 0.5) + nbytes / (BW * 2.0)) * 1e3
    return pd.DataFrame({"ops": ops, "bytes": nbytes, "out_elems": out, "out_rows": rows, "calls": calls, "ms": ms})


def test_fit_class_separates_per_call_per_row_and_per_output_costs() -> None:
    got = fit.fit_class(_dw_rows(80), PEAK, BW, prior_weight=0.0)
    assert got["overhead_us"] == pytest.approx(0.2, rel=0.1)
    assert got["row_ns"] == pytest.approx(30.0, rel=0.1)
    assert got["fit_median_pct"] < 2


def test_fit_class_is_not_moved_by_one_outlying_reading() -> None:
    rows = _dw_rows(40, seed=1)
    clean = fit.fit_class(rows, PEAK, BW)
    bad = rows.copy()
    bad.loc[bad["ms"].idxmax(), "ms"] *= 5  # one kernel read 5x too slow (preempted, cold)
    got = fit.fit_class(bad, PEAK, BW)
    pred = lambda f: (rows["calls"] * f["overhead_us"] * 1e-3 + rows["ops"] / (PEAK * f["eff_compute"]) * 1e3  # noqa: E731
                      + rows["bytes"] / (BW * f["eff_memory"]) * 1e3 + rows["out_elems"] * f["out_ns"] * 1e-6
                      + rows["out_rows"] * f["row_ns"] * 1e-6)
    assert float((pred(got) / pred(clean) - 1).abs().median()) < 0.05


def _depthwise(channels: int) -> ModelHandle:
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(channels, channels, 3, padding=1, groups=channels), torch.nn.ReLU()).eval()
    return ModelHandle(torch_to_onnx(m, [torch.randn(1, channels, 12, 10)]), f"dw{channels}", meta={"bits": 32})


def test_depthwise_conv_off_the_blocked_layout_is_one_call_per_channel() -> None:
    handle = _depthwise(6)  # 6 channels: not a multiple of 4, ORT keeps it off the NCHWc layout
    plan = ort_plan(handle.model)
    assert plan is not None
    base = graphinfo.annotate(summarize(handle).layers, handle.model, False, 0, "ort_cpu")
    rows = apply_plan(base, handle.model, plan, block=8).set_index("node")
    conv = next(n.name for n in handle.model.graph.node if n.op_type == "Conv")
    assert rows.loc[conv, "op_class"] == "dwconv_nchw"
    assert rows.loc[conv, "calls"] == 6 and rows.loc[conv, "out_rows"] == 6 * 12


def test_host_cost_form_pays_overhead_per_call_and_kernel_cost_once() -> None:
    handle = _depthwise(6)
    free = {"eff_compute": 1e12, "eff_memory": 1e12, "out_ns": 0.0}
    profile = {"cost_form": "additive", "classes": {
        "dwconv_nchw": {**free, "overhead_us": 1.0, "kernel_us": 5.0, "row_ns": 100.0},
        "elementwise": {**free, "overhead_us": 0.0}, "reorder": {**free, "overhead_us": 0.0}}}
    layers = estimate_with_device(handle, host_device(profile)).layers.set_index("node")
    conv = next(n.name for n in handle.model.graph.node if n.op_type == "Conv")
    expected_us = 6 * 1.0 + 5.0 + 6 * 12 * 0.1  # 6 calls, one kernel, 72 output rows
    assert layers.loc[conv, "ms"] * 1e3 == pytest.approx(expected_us, rel=1e-6)


def test_integer_convs_loop_over_output_pixels_not_channel_rows() -> None:
    from optim.hardware.calibration.models import quantized

    handle = quantized(_depthwise(16), "int8")  # QLinearConv: MLAS computes it channels-last
    plan = ort_plan(handle.model)
    assert plan is not None
    base = graphinfo.annotate(summarize(handle).layers, handle.model, False, 0, "ort_cpu")
    rows = apply_plan(base, handle.model, plan, block=8).set_index("node")
    conv = next(n.name for n in handle.model.graph.node if n.op_type == "Conv")
    assert rows.loc[conv, "op_class"].startswith("dwconv_int8")
    assert rows.loc[conv, "out_rows"] == 12 * 10  # the 12 x 10 output pixels, not 16 channels x 12 rows
