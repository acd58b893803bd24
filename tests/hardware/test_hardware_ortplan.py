"""The host estimator reads ORT's own kernel plan: classes, fusion and layout rows from the optimised graph."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from optim.graph.summary import summarize
from optim.handle import ModelHandle
from optim.hardware.model import graphinfo
from optim.hardware.model.ortplan import apply_plan, ort_plan, row_keys
from optim.io.export import torch_to_onnx


def _rows(handle: ModelHandle) -> tuple[list, object]:
    plan = ort_plan(handle.model)
    assert plan is not None
    base = graphinfo.annotate(summarize(handle).layers, handle.model, False, 0, "ort_cpu")
    return plan, apply_plan(base, handle.model, plan, block=8)


def test_ort_plan_maps_conv_kernels_and_fuses_activations(tiny_cnn: ModelHandle) -> None:
    plan, rows = _rows(tiny_cnn)
    by_node = rows.set_index("node")
    convs = [n.name for n in tiny_cnn.model.graph.node if n.op_type == "Conv"]
    assert all(by_node.loc[c, "op_class"].split(":")[0] in ("conv", "conv_in", "conv1x1", "dwconv", "conv_nchw", "conv1x1_nchw",
                                                           "dwconv_nchw") for c in convs)
    relus = [n.name for n in tiny_cnn.model.graph.node if n.op_type == "Relu"]
    assert by_node.loc[relus, "fused"].any()  # ORT folds activations into the conv kernel
    assert not by_node.loc[convs, "fused"].any()
    assert {k.node for k in plan if k.node} <= set(rows["node"])


def test_ort_plan_gives_layout_kernels_rows_of_their_own(tiny_cnn: ModelHandle) -> None:
    plan, rows = _rows(tiny_cnn)
    layout = [k for k in plan if k.layout]
    reorder = rows[rows["op_class"] == "reorder"]
    assert len(reorder) == len(layout) > 0  # NCHWc reorders on x86
    assert (reorder["act_in_elems"] > 0).all()


def test_row_keys_are_the_same_for_two_sessions_of_one_graph(tiny_cnn: ModelHandle) -> None:
    from optim.hardware.model import ortplan

    first = set(row_keys(tiny_cnn.model, ort_plan(tiny_cnn.model)).values())
    ortplan._plan_cached.cache_clear()  # noqa: SLF001 - force a second ORT session
    second = set(row_keys(tiny_cnn.model, ort_plan(tiny_cnn.model)).values())
    assert first == second


def test_batch_one_linear_is_a_gemv_and_token_matmul_a_gemm() -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 8))
    vec = ModelHandle(torch_to_onnx(net, [torch.randn(1, 64)]), "vec")
    tok = ModelHandle(torch_to_onnx(net, [torch.randn(1, 16, 64)]), "tok")
    assert set(_rows(vec)[1].query("op_type in ['Gemm', 'MatMul']")["op_class"]) == {"gemv"}
    assert set(_rows(tok)[1].query("op_type in ['Gemm', 'MatMul']")["op_class"]) == {"gemm"}


@pytest.mark.slow
def test_ort_plan_classes_qdq_convs_as_int8_kernels(tiny_cnn: ModelHandle) -> None:
    from optim.hardware.calibration.models import quantized

    q = quantized(tiny_cnn, "int8")
    _, rows = _rows(q)
    convs = [n.name for n in q.model.graph.node if n.op_type == "Conv"]
    assert set(rows.set_index("node").loc[convs, "op_class"]) <= {"conv_int8", "dwconv_int8", "conv_int8_odd",
                                                                   "dwconv_int8_odd"}
    dq_weights = [n.name for n in q.model.graph.node if n.op_type == "DequantizeLinear"
                  and n.input[0] in {i.name for i in q.model.graph.initializer}]
    assert rows.set_index("node").loc[dq_weights, "fused"].all()
    assert np.isfinite(rows["ops"].astype(float) if "ops" in rows else rows["macs"].astype(float)).all()
