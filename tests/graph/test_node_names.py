"""Unnamed graph nodes get one stable name, so every per-node table (and the host estimate) can find them."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from optim.graph.names import name_nodes, node_key
from optim.graph.summary import summarize
from optim.handle import ModelHandle
from optim.hardware.model.estimator import estimate_with_device
from optim.hardware.model.host_device import host_device
from optim.io.load import load


def _depthwise_chain(n: int = 3, c: int = 16, hw: int = 8) -> onnx.ModelProto:
    """``n`` depthwise 3x3 convs whose nodes carry no names (as many exported graphs do)."""
    rng = np.random.default_rng(0)
    nodes, inits = [], []
    for i in range(n):
        inits.append(numpy_helper.from_array(rng.standard_normal((c, 1, 3, 3)).astype(np.float32), f"w{i}"))
        nodes.append(helper.make_node("Conv", [f"t{i}", f"w{i}"], [f"t{i + 1}"], group=c, pads=[1, 1, 1, 1],
                                      kernel_shape=[3, 3]))
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("t0", TensorProto.FLOAT, [1, c, hw, hw])],
                              [helper.make_tensor_value_info(f"t{n}", TensorProto.FLOAT, [1, c, hw, hw])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_name_nodes_fills_only_empty_names_and_avoids_taken_ones() -> None:
    model = _depthwise_chain()
    model.graph.node[2].name = "Conv_0"  # a user name equal to the key the first node would get
    assert name_nodes(model) == 2
    names = [n.name for n in model.graph.node]
    assert names[2] == "Conv_0" and len(set(names)) == 3
    assert names[1] == node_key(model.graph.node[1], 1) == "Conv_1"
    assert name_nodes(model) == 0  # idempotent


def test_handle_names_nodes_and_the_summary_keys_them_by_that_name() -> None:
    handle = ModelHandle(_depthwise_chain(), "chain")
    names = [n.name for n in handle.model.graph.node]
    assert all(names)
    assert list(summarize(handle).layers["node"]) == names


def test_loaded_unnamed_graph_is_named() -> None:
    handle = load(_depthwise_chain().SerializeToString(), "unnamed.onnx")
    assert all(n.name for n in handle.model.graph.node)


def test_host_estimate_prices_the_convs_of_an_unnamed_graph() -> None:
    # before: ORT's kernels could not be traced to unnamed nodes, so every conv was priced 0 ms and
    # classed as a plain conv, its time left to a stray zero-op row
    layers = estimate_with_device(ModelHandle(_depthwise_chain(), "chain"), host_device(None)).layers
    convs = layers[layers["op_type"] == "Conv"]
    assert len(convs) == 3
    assert (convs["op_class"].str.startswith("dwconv")).all()
    assert (convs["ms"] > 0).all()
    assert (layers.loc[layers["op_class"] == "reorder", "ops"] > 0).all()  # no zero-op stand-in rows
