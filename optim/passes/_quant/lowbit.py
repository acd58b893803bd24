"""Low-bit weights: INT4 (MatMulNBits where ONNX Runtime executes it) and simulated 2–8-bit weights.

ONNX Runtime runs 4-bit weights only in the contrib op ``MatMulNBits`` (produced by its
``MatMulNBitsQuantizer`` from MatMul nodes with a constant weight). The legacy torch exporter writes
``nn.Linear`` as ``Gemm``, so :func:`gemm_to_matmul` first rewrites constant-weight Gemms into the exact
equivalent ``MatMul`` (+ ``Add`` for the bias) — a small graph rewrite no library offers for this
purpose. Every other weight layer (Conv, …) has no 4-bit kernel: its weights are fake-quantised
(symmetric, per output channel, FP32 scales) and the variant is marked *simulated*; its effective size
counts those weights as packed ``bits`` plus one FP32 scale per channel.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
from onnx import helper, numpy_helper

from optim.passes._quant.core import fake_quantize, packed_bytes, replace_initializers, weight_refs

INT4_BLOCK = 32


def _attrs(node: onnx.NodeProto) -> dict[str, float | int]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def gemm_to_matmul(model: onnx.ModelProto) -> int:
    """Rewrite ``Gemm(A, W, b)`` with a constant W, ``transA=0``, ``alpha=beta=1`` as MatMul(+Add), in place.

    ``model`` must be a copy the caller owns. Returns the number of Gemms rewritten.
    """
    inits = {t.name: t for t in model.graph.initializer}
    new_nodes: list[onnx.NodeProto] = []
    new_inits: list[onnx.TensorProto] = []
    count = 0
    for node in model.graph.node:
        a = _attrs(node) if node.op_type == "Gemm" else {}
        ok = (
            node.op_type == "Gemm"
            and node.input[1] in inits
            and a.get("transA", 0) == 0
            and float(a.get("alpha", 1.0)) == 1.0
            and float(a.get("beta", 1.0)) == 1.0
        )
        if not ok:
            new_nodes.append(node)
            continue
        w = numpy_helper.to_array(inits[node.input[1]])
        w_name = node.input[1]
        if a.get("transB", 0):
            w_name = f"{node.input[1]}_kxn_{count}"
            new_inits.append(numpy_helper.from_array(np.ascontiguousarray(w.T), w_name))
        has_bias = len(node.input) > 2 and node.input[2] != ""
        mm_out = f"{node.output[0]}_matmul" if has_bias else node.output[0]
        new_nodes.append(helper.make_node("MatMul", [node.input[0], w_name], [mm_out], name=node.name or f"gemm{count}"))
        if has_bias:
            new_nodes.append(helper.make_node("Add", [mm_out, node.input[2]], [node.output[0]], name=f"{node.name}_bias"))
        count += 1
    if count:
        del model.graph.node[:]
        model.graph.node.extend(new_nodes)
        model.graph.initializer.extend(new_inits)
        _drop_unused_initializers(model)
    return count


def _drop_unused_initializers(model: onnx.ModelProto) -> None:
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    keep = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)


def matmul_nbits(model: onnx.ModelProto, bits: int = 4, block_size: int = INT4_BLOCK) -> onnx.ModelProto:
    """MatMul nodes with constant weights → ``MatMulNBits`` (block-wise symmetric ``bits``-bit weights)."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    logging.getLogger("onnxruntime.quantization").setLevel(logging.ERROR)
    src = onnx.ModelProto()
    src.CopyFrom(model)
    quant = MatMulNBitsQuantizer(src, bits=bits, block_size=block_size, is_symmetric=True)
    quant.process()
    return quant.model.model


def simulate_weights(model: onnx.ModelProto, bits: int) -> tuple[int, int]:
    """Fake-quantise every float Conv/Gemm/MatMul weight of ``model`` in place (caller's copy).

    Returns ``(stored_bytes, packed_bytes)`` of the weights touched: what they take now (FP32) and
    what they would take packed at ``bits`` with one FP32 scale per output channel.
    """
    inits = {t.name: t for t in model.graph.initializer}
    arrays: dict[str, np.ndarray] = {}
    stored = packed = 0
    for ref in weight_refs(model):
        w = numpy_helper.to_array(inits[ref.name])
        deq, scale = fake_quantize(w, bits, per_channel_axis=ref.out_axis)
        arrays[ref.name] = deq
        stored += w.nbytes
        packed += packed_bytes(w.size, bits, scale.size)
    replace_initializers(model, arrays)
    return stored, packed


def count_matmul_nbits(model: onnx.ModelProto) -> int:
    return sum(1 for n in model.graph.node if n.op_type == "MatMulNBits")
