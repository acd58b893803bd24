"""Tests for optim.measure.layer_profile: runtime kernels at the real optimisation level mapped back to ONNX nodes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest
from onnx import TensorProto, helper

from optim.handle import ModelHandle
from optim.io.data import Dataset
from optim.measure.layer_profile import (
    LAYOUT_ROW,
    OTHER_ROW,
    borrow_in_order,
    execution_order,
    kernel_family,
    map_kernels,
    profile_layers,
)
from optim.passes import get_pass
from optim.passes.base import PassContext
from optim.sweep.run import SweepConfig, measure_variant
from optim.sweep.store import Store

QDQ = {"QuantizeLinear", "DequantizeLinear"}


@pytest.fixture(scope="module")
def calib() -> Dataset:
    rng = np.random.default_rng(0)
    return Dataset(rng.standard_normal((16, 3, 16, 16)).astype(np.float32), rng.integers(0, 10, 16), "calib")


@pytest.fixture(scope="module")
def tiny_int8(tiny_cnn: ModelHandle, calib: Dataset) -> ModelHandle:
    spec = get_pass("quantize")
    return spec.run(tiny_cnn, spec.config_cls(mode="int8_static"), PassContext(calib=calib))


def _weight_nodes(handle: ModelHandle) -> set[str]:
    return {n.name for n in handle.model.graph.node if n.op_type in ("Conv", "Gemm")}


# --- profile_layers on real sessions -----------------------------------------------------------
def test_profile_layers_times_every_conv_and_gemm_without_qdq_rows_when_int8_qdq(tiny_int8: ModelHandle) -> None:
    prof = profile_layers(tiny_int8, opt_level="all", runs=5)
    t = prof.table.set_index("node")
    assert _weight_nodes(tiny_int8) <= set(t.index)
    assert (t.loc[sorted(_weight_nodes(tiny_int8)), "ms"] > 0).all()
    assert not t["op_type"].isin(QDQ).any()
    convs = t[t["op_type"] == "Conv"]
    assert convs["kernels"].str.contains("QLinearConv").all()
    assert prof.table["ms"].sum() == pytest.approx(prof.node_sum_ms)
    assert prof.node_sum_ms <= prof.run_ms * 1.02 and 0 < prof.coverage <= 1.02


def test_profile_layers_names_are_onnx_node_names_when_fp32(tiny_cnn: ModelHandle) -> None:
    prof = profile_layers(tiny_cnn, opt_level="all", runs=5)
    names = {n.name for n in tiny_cnn.model.graph.node}
    assert set(prof.table["node"]) <= names
    assert _weight_nodes(tiny_cnn) <= set(prof.table["node"])
    assert prof.opt_level == "all"
    assert prof.table["share"].sum() == pytest.approx(1.0)


def test_profile_layers_lists_each_node_once_as_its_own_kernel_when_disabled(tiny_cnn: ModelHandle) -> None:
    prof = profile_layers(tiny_cnn, opt_level="disable", runs=3)
    assert sorted(prof.table["node"]) == sorted(n.name for n in tiny_cnn.model.graph.node)
    assert (prof.table["kernels"] == prof.table["op_type"]).all()


# --- map_kernels on hand-written graphs --------------------------------------------------------
def _vi(name: str) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, None)


def _model(nodes: list[onnx.NodeProto]) -> onnx.ModelProto:
    return helper.make_model(helper.make_graph(nodes, "g", [_vi("x")], [_vi("y")]))


def test_map_kernels_attributes_fused_layout_and_lone_qdq_kernels_to_source_nodes() -> None:
    src = _model([
        helper.make_node("Conv", ["x", "w"], ["c_out"], name="conv"),
        helper.make_node("Relu", ["c_out"], ["r_out"], name="relu"),
        helper.make_node("QuantizeLinear", ["r_out", "s"], ["q_out"], name="q"),
        helper.make_node("DequantizeLinear", ["q_out", "s"], ["dq_out"], name="dq"),
        helper.make_node("ReduceMean", ["dq_out"], ["m"], name="mean"),
        helper.make_node("Gemm", ["m", "w2"], ["g"], name="fc"),
        helper.make_node("Relu", ["g"], ["y"], name="relu2"),
    ])  # fmt: skip
    opt = _model([
        helper.make_node("ReorderInput", ["x"], ["t0"], name="ReorderInput_token_3"),
        helper.make_node("Conv", ["t0", "w"], ["t1"], name="r_out_nchwc", domain="com.microsoft.nchwc"),
        helper.make_node("ReorderOutput", ["t1"], ["r_out"], name="ReorderOutput_token_7"),
        helper.make_node("QuantizeLinear", ["r_out", "s"], ["q_out"], name="q"),
        helper.make_node("DequantizeLinear", ["q_out", "s"], ["dq_out"], name="dq"),
        helper.make_node("ReduceMean", ["dq_out"], ["m"], name="mean"),
        helper.make_node("FusedGemm", ["m", "w2"], ["y"], name="fused fc", domain="com.microsoft"),
        helper.make_node("Transpose", ["y"], ["z"], name="Transpose_token_9"),
        helper.make_node("MysteryKernel", ["z"], ["zz"], name="kernel_42"),
    ])  # fmt: skip
    got = map_kernels(src, opt)
    assert got["r_out_nchwc"] == "conv"  # named after the fused Relu's output → the Conv it fused
    assert got["ReorderInput_token_3"] == "conv" and got["ReorderOutput_token_7"] == "conv"
    assert got["q"] == "conv"  # a lone Q belongs to its producer, a lone DQ to its consumer
    assert got["dq"] == "mean"
    assert got["fused fc"] == "fc"
    assert got["Transpose_token_9"] == "fc"
    assert got["kernel_42"] == OTHER_ROW


def test_map_kernels_reports_runtime_layout_when_layout_kernel_has_no_mapped_neighbour() -> None:
    src = _model([helper.make_node("Relu", ["x"], ["y"], name="relu")])
    opt = _model([helper.make_node("ReorderInput", ["x"], ["t"], name="ReorderInput")])
    assert map_kernels(src, opt) == {"ReorderInput": LAYOUT_ROW}


def test_map_kernels_uses_the_kernel_name_prefix_when_outputs_are_renamed() -> None:
    src = _model([helper.make_node("Conv", ["x", "w"], ["y"], name="/conv1/Conv")])
    opt = _model([helper.make_node("QLinearConv", ["x", "w"], ["/conv1/Conv"], name="/conv1/Conv_token_1")])
    assert map_kernels(src, opt) == {"/conv1/Conv_token_1": "/conv1/Conv"}


def test_kernel_family_maps_fused_and_quantized_kernels_to_their_onnx_op() -> None:
    assert kernel_family("QLinearConv") == {"Conv"}
    assert kernel_family("FusedConv") == {"Conv"}
    assert kernel_family("QGemm") == {"Gemm", "MatMul"}
    assert kernel_family("QLinearAdd") == {"Add"}
    assert kernel_family("ReduceMean") == {"ReduceMean"}


# --- the sweep stores the mapped rows ----------------------------------------------------------
def test_measure_variant_stores_mapped_layers_with_kernels_when_int8(
    tiny_int8: ModelHandle, calib: Dataset, tmp_path: Path, store
) -> None:
    cfg = SweepConfig(latency_budget_s=0.02, profile_runs=3)
    row, layers = measure_variant(tiny_int8, calib, None, cfg, "all")
    timed = layers[layers["ms"].notna()]
    assert not timed["op_type"].isin(QDQ).any()
    assert _weight_nodes(tiny_int8) <= set(timed["node"])
    vid = store.put_variant({"variant_id": "v1", "sweep_id": "s", "status": "ok", **row}, layers=layers)
    got = store.layers(vid)
    assert got.loc[got["op_type"] == "Conv", "kernels"].str.contains("QLinearConv").all()


def test_store_adds_kernels_column_to_an_older_layers_table(tmp_path: Path) -> None:
    db = Store(tmp_path).db_path
    with sqlite3.connect(db) as conn:
        conn.execute("DROP TABLE layers")
        conn.execute("CREATE TABLE layers (variant_id TEXT, idx INTEGER, node TEXT, op_type TEXT, ms REAL, "
                     "share REAL, provider TEXT, macs INTEGER, flops REAL, params INTEGER, weight_bytes INTEGER, "
                     "PRIMARY KEY (variant_id, idx))")  # fmt: skip
    store = Store(tmp_path)
    store.put_variant({"variant_id": "v", "sweep_id": "s"}, layers=pd.DataFrame({"node": ["n"], "ms": [1.0],
                                                                                 "kernels": ["Conv"]}))
    assert store.layers("v")["kernels"].tolist() == ["Conv"]


def test_map_kernels_gives_untraceable_expanded_kernels_the_next_named_kernels_node() -> None:
    src = _model([helper.make_node("Softmax", ["x"], ["s_out"], name="/attn/Softmax"),
                  helper.make_node("MatMul", ["s_out", "v"], ["y"], name="/attn/MatMul")])  # fmt: skip
    opt = _model([
        helper.make_node("ReduceMax", ["x"], ["m"], name="ReduceMax_146"),
        helper.make_node("Sub", ["x", "m"], ["d"], name="Sub_147"),
        helper.make_node("Cast", ["d"], ["s_out"], name="InsertedPrecisionFreeCast_/attn/Softmax"),
        helper.make_node("MatMul", ["s_out", "v"], ["y"], name="/attn/MatMul"),
    ])  # fmt: skip
    got = map_kernels(src, opt)
    assert got["ReduceMax_146"] == got["Sub_147"] == "/attn/Softmax"
    assert got["InsertedPrecisionFreeCast_/attn/Softmax"] == "/attn/Softmax"


def test_borrow_in_order_maps_kernels_missing_from_the_saved_graph_to_the_next_mapped_kernel() -> None:
    def ev(name: str, ts: float, cat: str = "Node") -> dict:
        return {"cat": cat, "name": name if cat == "Session" else f"{name}_kernel_time", "ts": ts, "dur": 1.0}

    events = [ev("model_run", 0.0, "Session") | {"dur": 10.0}, ev("Exp_148", 1.0), ev("Div_150", 2.0),
              ev("cast", 3.0), ev("mm", 4.0), ev("model_run", 20.0, "Session") | {"dur": 10.0}, ev("Exp_148", 21.0),
              ev("Div_150", 22.0), ev("cast", 23.0), ev("mm", 24.0)]  # fmt: skip
    order = execution_order(events)
    assert order == ["Exp_148", "Div_150", "cast", "mm"]
    got = borrow_in_order({"cast": "/attn/Softmax", "mm": "/attn/MatMul"}, order)
    assert got["Exp_148"] == got["Div_150"] == "/attn/Softmax" and got["mm"] == "/attn/MatMul"


def test_layer_comparison_marks_timeless_variant_nodes_fused_when_profile_is_mapped() -> None:
    from optim.present.variant_view import layer_comparison

    base = pd.DataFrame({"node": ["conv", "relu"], "op_type": ["Conv", "Relu"], "ms": [2.0, None],
                         "kernels": ["FusedConv", None], "params": [10, 0]})  # fmt: skip
    var = pd.DataFrame({"node": ["conv", "relu", "w_dq", "mean"], "op_type": ["Conv", "Relu", "DequantizeLinear",
                        "ReduceMean"], "ms": [1.0, None, None, 0.1], "kernels": ["QLinearConv", None, None, "ReduceMean"],
                        "params": [10, 0, 0, 0]})
    got = layer_comparison(base, var).set_index("node")["status"].to_dict()
    assert got == {"conv": "kept", "relu": "fused", "w_dq": "fused", "mean": "gained"}
    legacy = layer_comparison(base.drop(columns="kernels"), var.drop(columns="kernels")).set_index("node")["status"]
    assert legacy["w_dq"] == "gained" and legacy["relu"] == "kept"
