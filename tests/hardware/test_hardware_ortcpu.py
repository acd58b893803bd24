"""ONNX Runtime NCHWc rewrite prediction and the channel-alignment penalty of the host estimator."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import ort_runner
import pytest
from onnx import TensorProto, helper, numpy_helper

from optim.handle import ModelHandle
from optim.hardware import host, profiles
from optim.hardware.model import graphinfo
from optim.hardware.model.estimator import estimate_with_device
from optim.hardware.model.host_device import host_device
from optim.hardware.model.ortcpu import nchwc_plan

BLOCK = 16


def _convs(cin: int, widths: list[int], hw: int = 8, depthwise_first: bool = False) -> onnx.ModelProto:
    """input (1, cin, hw, hw) → [depthwise 3x3] → 3x3 convs of ``widths`` channels, each + Relu."""
    rng = np.random.default_rng(0)
    nodes, inits, prev, c = [], [], "x", cin
    if depthwise_first:
        inits.append(numpy_helper.from_array(rng.random((c, 1, 3, 3), dtype=np.float32), "wd"))
        nodes.append(helper.make_node("Conv", [prev, "wd"], ["d"], name="dw", group=c, pads=[1] * 4))
        prev = "d"
    for i, cout in enumerate(widths):
        inits.append(numpy_helper.from_array(rng.random((cout, c, 3, 3), dtype=np.float32), f"w{i}"))
        nodes.append(helper.make_node("Conv", [prev, f"w{i}"], [f"c{i}"], name=f"conv{i}", pads=[1] * 4))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}"))
        prev, c = f"r{i}", cout
    graph = helper.make_graph(nodes, "convs", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, hw, hw])],
                              [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [1, c, hw, hw])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _ort_reorders(model: onnx.ModelProto, tmp_path) -> int:
    """Reorder kernels in the graph ONNX Runtime itself builds at ORT_ENABLE_ALL (needs AVX2/AVX-512)."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.optimized_model_filepath = str(tmp_path / "opt.onnx")
    opts.log_severity_level = 3
    ort_runner.session(model, opts)
    return sum(n.op_type.startswith("Reorder") for n in onnx.load(tmp_path / "opt.onnx").graph.node)


def test_nchwc_plan_keeps_conv_off_blocked_path_when_channels_not_multiple_of_4() -> None:
    plan = nchwc_plan(_convs(3, [22, 22, 24, 24, 11]), BLOCK)
    assert plan.blocked == {"conv0", "conv3", "conv4"}  # input channels 3 (< block), 24, 24
    assert plan.fallback == {"conv1", "conv2"}  # input channels 22
    assert plan.mac_pad["conv0"] == pytest.approx(32 / 22)  # 22 output channels padded to two blocks


def test_nchwc_plan_keeps_depthwise_off_blocked_path_when_channels_not_multiple_of_4() -> None:
    assert "dw" in nchwc_plan(_convs(22, [32], depthwise_first=True), BLOCK).fallback
    assert "dw" in nchwc_plan(_convs(20, [32], depthwise_first=True), BLOCK).blocked


def test_nchwc_plan_predicts_onnxruntime_reorder_count(tmp_path) -> None:
    if host.channel_block() != BLOCK:
        pytest.skip("reorder layout checked for AVX-512 (16-float NCHWc blocks)")
    for model in (_convs(3, [32, 22, 22, 32]), _convs(3, [32, 11, 32]), _convs(32, [32, 32])):
        assert len(nchwc_plan(model, BLOCK).reorders) == _ort_reorders(model, tmp_path)


def test_annotate_adds_reorder_rows_and_nchw_classes() -> None:
    from optim.graph.summary import summarize

    model = _convs(3, [32, 22, 22, 32])
    layers = graphinfo.annotate(summarize(ModelHandle(model, "m")).layers, model, True, BLOCK, "ort_cpu")
    classes = dict(zip(layers["node"], layers["op_class"], strict=True))
    assert classes["conv2"] == "conv_nchw" and classes["conv0"] == "conv"
    assert (layers["op_class"] == "reorder").sum() == len(nchwc_plan(model, BLOCK).reorders) > 0


def test_estimate_host_prices_odd_width_conv_slower_than_aligned_one_of_equal_macs() -> None:
    odd = ModelHandle(_convs(32, [22, 22], hw=32), "odd", meta={"bits": 32})
    aligned = ModelHandle(_convs(32, [32, 32], hw=22), "aligned", meta={"bits": 32})
    from optim.graph.summary import summarize

    macs = {h.name: summarize(h).layers.set_index("node").loc["conv1", "macs"] for h in (odd, aligned)}
    assert macs["odd"] == macs["aligned"]  # 22·22·32² = 32·32·22²
    profile = profiles.select_profile().profile
    if profile is None or "conv_nchw" not in profile["classes"]:
        pytest.skip("needs a calibrated host profile")
    est = {h.name: estimate_with_device(h, host_device(profile)) for h in (odd, aligned)}
    odd_conv = est["odd"].layers.set_index("node").loc["conv1", "ms"]
    aligned_conv = est["aligned"].layers.set_index("node").loc["conv1", "ms"]
    assert odd_conv > 1.3 * aligned_conv
    assert est["odd"].total_ms > est["aligned"].total_ms
    # (that the runtime agrees is a timing, so it lives in benchmarks/hardware.py, not in a test)


def test_boundary_qdq_prices_only_qdq_next_to_float_ops() -> None:
    s, z = numpy_helper.from_array(np.array(0.1, np.float32), "s"), numpy_helper.from_array(np.array(0, np.uint8), "z")
    w = numpy_helper.from_array(np.ones((8, 3, 3, 3), np.uint8), "wq")
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="q_in"),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"], name="dq_in"),
             helper.make_node("DequantizeLinear", ["wq", "s", "z"], ["wd"], name="dq_w"),
             helper.make_node("Conv", ["xd", "wd"], ["c"], name="conv", pads=[1] * 4),
             helper.make_node("QuantizeLinear", ["c", "s", "z"], ["cq"], name="q_conv"),
             helper.make_node("DequantizeLinear", ["cq", "s", "z"], ["cd"], name="dq_conv"),
             helper.make_node("ReduceMean", ["cd"], ["y"], name="mean", keepdims=0)]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])], [s, z, w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    assert graphinfo.boundary_qdq(model) == {"q_in", "dq_conv"}
    assert {"q_in", "dq_conv"}.isdisjoint(graphinfo.fused_nodes(model, "ort_cpu"))
    assert {"dq_in", "dq_w", "q_conv"} <= graphinfo.fused_nodes(model, "ort_cpu")
    assert graphinfo.int8_compute_nodes(model) == {"conv"}
    assert [t for _, t in graphinfo.int8_layout_transposes(model)] == ["xq", "c"]


def test_device_factors_fall_back_to_fp32_class_when_int8_class_uncalibrated() -> None:
    profile = {"classes": {"conv": {"eff_compute": 0.5, "eff_memory": 2.0, "overhead_us": 3.0}}}
    dev = host_device(profile)
    assert dev.factors("conv_int8") == dev.factors("conv")
    assert dev.factors("conv_int8").overhead_s == pytest.approx(3e-6)
