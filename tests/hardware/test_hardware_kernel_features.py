"""Kernel features the host model prices from ORT's plan: stems, integer GEMM panels, kernel-less nodes."""

from __future__ import annotations

import numpy as np
import torch
from onnx import TensorProto, helper, numpy_helper

from optim.graph.summary import summarize
from optim.handle import ModelHandle
from optim.hardware.calibration.models import quantized
from optim.hardware.model import graphinfo
from optim.hardware.model.ortplan import INT8_PANEL, NCHWC_DOMAIN, apply_plan, ort_plan
from optim.io.export import torch_to_onnx


def _rows(handle: ModelHandle):
    plan = ort_plan(handle.model)
    assert plan is not None
    base = graphinfo.annotate(summarize(handle).layers, handle.model, False, 0, "ort_cpu")
    return plan, apply_plan(base, handle.model, plan, block=8).set_index("node")


def _net(cin: int, cout: int) -> ModelHandle:
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(cin, cout, 3, padding=1), torch.nn.ReLU(),
                            torch.nn.Conv2d(cout, cout, 3, padding=1), torch.nn.ReLU()).eval()
    return ModelHandle(torch_to_onnx(m, [torch.randn(1, cin, 16, 16)]), f"net{cin}_{cout}", meta={"bits": 32})


def test_blocked_conv_reading_a_narrow_input_is_a_stem_class() -> None:
    handle = _net(3, 16)
    plan, rows = _rows(handle)
    convs = [n for n in handle.model.graph.node if n.op_type == "Conv"]
    blocked = {k.node for k in plan if k.domain == NCHWC_DOMAIN}
    assert convs[0].name in blocked and convs[1].name in blocked  # both on the NCHWc layout here
    assert rows.loc[convs[0].name, "op_class"] == "conv_in"  # 3 input channels < the block of 8
    assert rows.loc[convs[1].name, "op_class"] == "conv"  # 16 input channels: the ordinary blocked kernel


def test_integer_convs_pay_for_whole_output_panels() -> None:
    q = quantized(_net(4, 24), "int8")
    _, rows = _rows(q)
    int8 = rows[rows["op_class"].str.startswith("conv_int")]
    assert len(int8) == 2
    padded = -(-24 // INT8_PANEL) * INT8_PANEL / 24
    assert (int8["mac_pad"] - padded).abs().max() < 1e-9  # 24 output channels computed as 32


def test_nodes_no_kernel_runs_cost_nothing() -> None:
    w = numpy_helper.from_array(np.random.default_rng(0).random((8, 3, 3, 3), dtype=np.float32), "w")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])
    nodes = [helper.make_node("Identity", ["w"], ["w_id"], name="weight_identity"),  # as exporters write them
             helper.make_node("Conv", ["x", "w_id"], ["y"], name="conv", pads=[1, 1, 1, 1])]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], [w]),
                              opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    plan, rows = _rows(ModelHandle(model, "identity_conv", meta={"bits": 32}))
    assert "weight_identity" not in {k.node for k in plan}  # ORT folds it into the weight
    assert rows.loc["weight_identity", "op_class"] == "shape" and rows.loc["weight_identity", "fused"]
    assert not rows.loc["conv", "fused"]


def test_blocked_convs_with_fewer_output_blocks_pay_more_input_broadcasts() -> None:
    narrow, wide = _net(8, 8), _net(8, 32)  # second conv: 8 -> 8 (one NCHWc block) vs 32 -> 32 (four)
    per_mac = []
    for handle in (narrow, wide):
        _, rows = _rows(handle)
        conv = [n.name for n in handle.model.graph.node if n.op_type == "Conv"][1]
        assert rows.loc[conv, "op_class"] == "conv"
        per_mac.append(rows.loc[conv, "bcast_ops"] / (2 * rows.loc[conv, "macs"] * rows.loc[conv, "mac_pad"]))
    assert per_mac == [1.0, 0.25]  # every input broadcast serves 1 block vs 4 blocks
