"""Sizes are bounded before allocation: folding, synthetic inputs, data files (each with a message)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from optim.io.fold import fold_constants, predicted_bytes


def _blowup(op: str, big: bool) -> onnx.ModelProto:
    n = 100_000 if big else 4
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    inits: list[TensorProto] = []
    if op == "ConstantOfShape":
        inits.append(numpy_helper.from_array(np.array([n, n], np.int64), "s"))
        node = helper.make_node("ConstantOfShape", ["s"], ["c"], value=numpy_helper.from_array(np.ones(1, np.float32)))
    elif op == "Expand":
        inits += [numpy_helper.from_array(np.ones((1, 1), np.float32), "a"),
                  numpy_helper.from_array(np.array([n, n], np.int64), "s")]
        node = helper.make_node("Expand", ["a", "s"], ["c"])
    elif op == "Range":
        inits += [numpy_helper.from_array(np.array(0.0, np.float32), "a"),
                  numpy_helper.from_array(np.array(float(n * n), np.float32), "b"),
                  numpy_helper.from_array(np.array(1.0, np.float32), "d")]
        node = helper.make_node("Range", ["a", "b", "d"], ["c"])
    else:  # Tile
        inits += [numpy_helper.from_array(np.ones((1, 1), np.float32), "a"),
                  numpy_helper.from_array(np.array([n, n], np.int64), "r")]
        node = helper.make_node("Tile", ["a", "r"], ["c"])
    red = helper.make_node("ReduceSum", ["c"], ["r0"], keepdims=0)
    add = helper.make_node("Add", ["x", "r0"], ["y"])
    g = helper.make_graph([node, red, add], "g", [x], [y], initializer=inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("op", ["ConstantOfShape", "Expand", "Range", "Tile"])
def test_fold_sizes_a_blowup_before_evaluating_it(op: str) -> None:
    model = _blowup(op, big=True)
    assert len(model.SerializeToString()) < 400
    tracemalloc.start()
    fold_constants(model)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 64 * 2**20, peak
    assert op in [n.op_type for n in model.graph.node]  # left as a node, not evaluated


@pytest.mark.parametrize("op", ["ConstantOfShape", "Expand", "Range", "Tile"])
def test_fold_still_folds_the_small_case(op: str) -> None:
    model = _blowup(op, big=False)
    fold_constants(model)
    assert op not in [n.op_type for n in model.graph.node]


def test_predicted_bytes_reads_shape_values() -> None:
    node = helper.make_node("ConstantOfShape", ["s"], ["c"])
    assert predicted_bytes(node, {"s": np.array([1000, 1000], np.int64)}, 17) == 4 * 10**6


def _image_model(side: int) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, side, side])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, side, side])
    return helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]),
                             opset_imports=[helper.make_opsetid("", 17)])


def test_synthetic_dataset_for_a_big_input_shrinks_instead_of_taking_gigabytes() -> None:
    from optim.handle import ModelHandle
    from optim.io.model_data import SYNTHETIC_BUDGET_BYTES, synthetic_dataset

    ds = synthetic_dataset(ModelHandle(model=_image_model(2048), name="big"), 128)
    assert 1 <= len(ds) < 128 and ds.x.nbytes <= SYNTHETIC_BUDGET_BYTES


def test_synthesize_inputs_refuses_a_feed_past_the_limit_before_allocating() -> None:
    from optim.errors import MissingInputError
    from optim.io.shapes import synthesize_inputs

    with pytest.raises(MissingInputError, match="GiB of synthetic data"):
        synthesize_inputs(_image_model(100_000), batch=1)


def _chain(n: int) -> bytes:
    nodes = [helper.make_node("Relu", [f"t{i}"], [f"t{i + 1}"]) for i in range(n)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("t0", TensorProto.FLOAT, [1])],
                          [helper.make_tensor_value_info(f"t{n}", TensorProto.FLOAT, [1])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def _wide_sum(n: int) -> bytes:
    g = helper.make_graph([helper.make_node("Sum", ["x"] * n, ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def _nested_if(depth: int) -> bytes:
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    body = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "leaf", [], [out])
    leaf = body
    for i in range(depth):
        node = helper.make_node("If", ["c"], ["y"], then_branch=body, else_branch=leaf)
        body = helper.make_graph([node], f"b{i}", [], [out])
    g = helper.make_graph(list(body.node), "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1]),
                                                 helper.make_tensor_value_info("c", TensorProto.BOOL, [])], [out])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


@pytest.mark.parametrize("data,match", [(_chain(60_000), "nodes"), (_wide_sum(50_000), "inputs"),
                                        (_nested_if(20), "deep")], ids=["chain", "wide-sum", "nested-if"])
def test_load_refuses_graphs_past_structural_bounds_quickly(data: bytes, match: str) -> None:
    import time

    from optim.errors import MalformedModelError
    from optim.io.load import load

    t0 = time.monotonic()
    with pytest.raises(MalformedModelError, match=match):
        load(data, "m.onnx")
    assert time.monotonic() - t0 < 10
