"""INT8 QOperator when a Conv bias initializer is shared with other nodes (exporters deduplicate equal constants:
pruned HF YOLOS read one zero bias in its patch-embedding Conv and in 14 MatMul + Add layers, behind Identity
nodes); ORT's quantiser handed the Conv's int32 bias to a QLinearAdd, which ONNX Runtime refused to open."""

from __future__ import annotations

import numpy as np
import onnx
import ort_runner
import pytest
from onnx import TensorProto, helper, numpy_helper
from quant_helpers import dataset

from optim.handle import ModelHandle
from optim.passes._quant.opset import unshare_biases
from optim.passes.base import PassContext
from optim.passes.quantize import QuantizeConfig, run


def _shared_bias_model() -> onnx.ModelProto:
    """x (N,3,8,8) → Conv(4, bias=z) → (N, 64, 4) tokens → MatMul(4→4) → Add(Identity(z)) → y; z one initializer."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32) * 0.3, "w")
    m = numpy_helper.from_array(rng.standard_normal((4, 4)).astype(np.float32) * 0.5, "m")
    z = numpy_helper.from_array(np.full(4, 0.05, np.float32), "z")
    shape = numpy_helper.from_array(np.array([0, 4, 64], np.int64), "shape")
    nodes = [
        helper.make_node("Identity", ["z"], ["z_alias"], name="dedup"),
        helper.make_node("Conv", ["x", "w", "z"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Reshape", ["c", "shape"], ["flat"], name="flat"),
        helper.make_node("Transpose", ["flat"], ["tokens"], name="tokens", perm=[0, 2, 1]),
        helper.make_node("MatMul", ["tokens", "m"], ["mm"], name="fc"),
        helper.make_node("Add", ["mm", "z_alias"], ["y"], name="fc_bias"),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 64, 4])], [w, m, z, shape])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_unshare_biases_gives_the_conv_its_own_bias_and_keeps_the_other_reader() -> None:
    model = _shared_bias_model()
    out = unshare_biases(model)
    conv = next(n for n in out.graph.node if n.op_type == "Conv")
    assert conv.input[2] != "z" and "z" in {t.name for t in out.graph.initializer}
    init = {t.name: numpy_helper.to_array(t) for t in out.graph.initializer}
    np.testing.assert_array_equal(init[conv.input[2]], init["z"])
    assert [n.input[2] for n in model.graph.node if n.op_type == "Conv"] == ["z"]  # input untouched
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(ort_runner.run_first(out, x), ort_runner.run_first(model, x), atol=1e-6)
    assert unshare_biases(out) is out  # nothing left to unshare: the same model back


@pytest.mark.parametrize("fmt", ["qoperator", "qdq"])
def test_int8_static_builds_when_a_conv_bias_is_shared(fmt: str) -> None:
    handle = ModelHandle(_shared_bias_model(), "shared-bias")
    x = np.random.default_rng(2).standard_normal((32, 3, 8, 8)).astype(np.float32)
    out = run(handle, QuantizeConfig(mode="int8_static", quant_format=fmt), PassContext(calib=dataset(x)))
    ops = {n.op_type for n in out.model.graph.node}
    assert ("QLinearConv" in ops) if fmt == "qoperator" else ("QuantizeLinear" in ops)
    got, want = ort_runner.run_first(out.model, x[:8]), ort_runner.run_first(handle.model, x[:8])
    assert got.shape == want.shape == (8, 64, 4)
    assert np.abs(got - want).max() < 0.1 * np.abs(want).max()
