"""Per-node cost summary of an ONNX model: MACs, FLOPs, parameters, weight bytes, activation sizes.

Shapes come from ONNX shape inference (``onnx.shape_inference.infer_shapes`` with data propagation)
run on a weight-stripped copy of the graph, with the symbolic batch dimension set to 1 (DESIGN.md
"Batch dimension"). Counting rules:

* MACs: Conv/ConvTranspose (grouped and depthwise through the weight shape), Gemm, MatMul and the
  quantized forms MatMulInteger, QLinearMatMul, ConvInteger, QLinearConv, MatMulNBits.
  FLOPs = 2 × MACs (+ one add per output for a bias); elementwise and normalisation ops count FLOPs
  per output element; pooling counts its window; data movement (Reshape, Transpose, ...) is free.
* Parameters: elements of float initializers, and of integer initializers that are quantized weights
  (behind DequantizeLinear or in a quantized op's weight slot). Shape/axis constants and scalar
  constants outside MAC ops (epsilons, dynamic-quantization scales) are not counted. A weight reached
  through DequantizeLinear / Transpose / Reshape / Cast counts once, at its *stored* dtype, on the
  node that consumes it; scales and zero points add to weight bytes.
* Sub-graphs of If/Loop/Scan are not descended into.

Existing counters (onnx-tool, thop, fvcore) either need torch modules or are not dependencies here and
do not report weights at their quantized storage dtype, hence this module.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import onnx
import pandas as pd
from onnx import helper

from optim.graph.names import node_key
from optim.handle import ModelHandle

Shape = tuple[int, ...]
_PASS_THROUGH = {"DequantizeLinear", "Transpose", "Reshape", "Cast", "Identity", "Squeeze", "Unsqueeze",
                 "Flatten", "QuantizeLinear"}
_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16,
                onnx.TensorProto.DOUBLE}
# quantized ops: (weight input slots, quantization-parameter slots)
_QUANT_SLOTS = {
    "QLinearConv": ({3, 8}, {1, 2, 4, 5, 6, 7}), "QLinearMatMul": ({0, 3}, {1, 2, 4, 5, 6, 7}),
    "MatMulInteger": ({0, 1}, {2, 3}), "ConvInteger": ({1}, {2, 3}), "MatMulNBits": ({1, 5}, {2, 3, 4}),
}
_MAC_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul", *_QUANT_SLOTS}
_ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Relu", "LeakyRelu", "PRelu", "Sigmoid", "Tanh", "Clip", "Pow",
                "Sqrt", "Exp", "Log", "Erf", "Abs", "Neg", "Max", "Min", "Sum", "HardSigmoid", "HardSwish",
                "Elu", "Selu", "Gelu", "Mish", "Softplus", "Reciprocal", "Where", "Equal", "Less", "Greater",
                "QuantizeLinear", "DequantizeLinear", "Round", "Floor", "Ceil"}
_PER_ELEMENT = {"BatchNormalization": 2, "InstanceNormalization": 5, "LayerNormalization": 5,
                "Softmax": 3, "LogSoftmax": 3, "GroupNormalization": 5}
COLUMNS = ["node", "op_type", "macs", "flops", "params", "weight_bytes", "act_in_elems", "act_out_elems",
           "out_shape", "weight_dtype"]


@dataclass(frozen=True, eq=False)
class ModelSummary:
    inputs: list[tuple[str, tuple[int | str, ...], str]]
    outputs: list[tuple[str, tuple[int | str, ...], str]]
    opset: int
    params: int
    size_bytes: int
    macs: int
    flops: int
    op_histogram: dict[str, int]
    layers: pd.DataFrame


def _dtype_name(elem_type: int) -> str:
    try:
        return str(np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)))
    except (KeyError, TypeError, ValueError):
        return onnx.TensorProto.DataType.Name(elem_type).lower()


def _elem_bytes(elem_type: int, n: int) -> int:
    if elem_type in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4):
        return (n + 1) // 2
    try:
        return n * np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)).itemsize
    except (KeyError, TypeError, ValueError):
        return n


def _io(vis) -> list[tuple[str, tuple[int | str, ...], str]]:
    out = []
    for vi in vis:
        tt = vi.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tt.shape.dim)
        out.append((vi.name, dims, _dtype_name(tt.elem_type)))
    return out


def _inferred_shapes(model: onnx.ModelProto) -> dict[str, Shape]:
    """Static shapes of every value (batch → 1), from shape inference on a weight-stripped copy."""
    stripped = onnx.ModelProto()
    stripped.CopyFrom(model)
    for t in stripped.graph.initializer:  # inference needs only dims, except small int shape constants
        if t.data_type in _FLOAT_TYPES and np.prod(t.dims) > 64:
            t.ClearField("raw_data")
            t.ClearField("float_data")
            t.ClearField("int32_data")
    inits = {t.name for t in stripped.graph.initializer}
    batch = {vi.type.tensor_type.shape.dim[0].dim_param for vi in stripped.graph.input
             if vi.name not in inits and vi.type.tensor_type.shape.dim}
    for vi in [*stripped.graph.input, *stripped.graph.output, *stripped.graph.value_info]:
        for d in vi.type.tensor_type.shape.dim:
            if (d.dim_param and d.dim_param in batch) or not (d.HasField("dim_value") or d.dim_param):
                d.Clear()
                d.dim_value = 1
    shapes: dict[str, Shape] = {}
    # ONNX shape inference stops at contrib ops it does not know (MatMulNBits): declare their output
    # shapes and infer again, once per newly resolved op, so chains of them resolve too.
    for _ in range(1 + sum(n.op_type == "MatMulNBits" for n in stripped.graph.node)):
        try:
            inferred = onnx.shape_inference.infer_shapes(stripped, data_prop=True)
        except Exception:  # noqa: BLE001 - fall back to whatever shapes the model declares
            inferred = stripped
        g = inferred.graph
        for vi in [*g.input, *g.value_info, *g.output]:
            tt = vi.type.tensor_type
            if tt.HasField("shape"):
                shapes[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else 1 for d in tt.shape.dim)
        if not _declare_nbits_outputs(stripped, shapes):
            break
    for t in model.graph.initializer:
        shapes[t.name] = tuple(int(d) for d in t.dims)
    return shapes


def _declare_nbits_outputs(model: onnx.ModelProto, shapes: dict[str, Shape]) -> bool:
    """Add value_info for MatMulNBits outputs whose input shape is known; True if any was added."""
    added = False
    for node in model.graph.node:
        if node.op_type != "MatMulNBits" or node.output[0] in shapes or node.input[0] not in shapes:
            continue
        n = int(_attr(node, "N", 0))
        dims = [*shapes[node.input[0]][:-1], n]
        model.graph.value_info.append(onnx.helper.make_tensor_value_info(node.output[0], onnx.TensorProto.FLOAT, dims))
        shapes[node.output[0]] = tuple(dims)
        added = True
    return added


def _elems(shape: Shape | None) -> int:
    return int(np.prod(shape, dtype=np.int64)) if shape is not None else 0


class _Weights:
    """Resolves node inputs to the initializers that store them (through DQ/Transpose/Reshape chains)."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.inits = {t.name: t for t in graph.initializer}
        self.producer = {o: n for n in graph.node for o in n.output}
        self.claimed: set[str] = set()

    def trace(self, name: str) -> tuple[str | None, list[str]]:
        """(stored initializer or None, quantization-parameter initializers met on the way)."""
        qparams: list[str] = []
        for _ in range(16):
            if name in self.inits:
                return name, qparams
            node = self.producer.get(name)
            if node is None or node.op_type not in _PASS_THROUGH or not node.input:
                return None, qparams
            qparams += [i for i in node.input[1:] if i in self.inits and node.op_type.endswith("quantizeLinear")]
            name = node.input[0]
        return None, qparams

    def claim(self, names: list[str]) -> int:
        """Stored bytes of the initializers not counted yet; marks them counted."""
        nbytes = 0
        for n in names:
            if n in self.claimed or n not in self.inits:
                continue
            self.claimed.add(n)
            t = self.inits[n]
            nbytes += _elem_bytes(t.data_type, _elems(tuple(t.dims)))
        return nbytes


def _node_weights(node: onnx.NodeProto, w: _Weights) -> tuple[int, int, str]:
    """(params, weight bytes, stored dtype of the first weight) claimed by ``node``."""
    weight_slots, qparam_slots = _QUANT_SLOTS.get(node.op_type, (None, set()))
    params = nbytes = 0
    dtype = ""
    for idx, name in enumerate(node.input):
        if not name:
            continue
        stored, qparams = w.trace(name)
        if stored is None:
            continue
        t = w.inits[stored]
        is_qparam = idx in qparam_slots
        count = _elems(tuple(t.dims))
        is_weight = (idx in weight_slots) if weight_slots is not None else (
            (t.data_type in _FLOAT_TYPES or bool(qparams)) and (count > 1 or node.op_type in _MAC_OPS))
        if not (is_weight or is_qparam) or stored in w.claimed:
            continue
        nbytes += w.claim([stored, *qparams])
        if is_weight:
            if node.op_type == "MatMulNBits" and idx == 1:
                attrs = {a.name: a.i for a in node.attribute}
                params += attrs.get("K", 0) * attrs.get("N", 0)
            else:
                params += count
            dtype = dtype or _dtype_name(t.data_type)
    return params, nbytes, dtype


def _attr(node: onnx.NodeProto, name: str, default: object = None) -> object:
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _macs(node: onnx.NodeProto, shapes: dict[str, Shape]) -> int:
    op = node.op_type
    out = shapes.get(node.output[0]) if node.output else None
    inp = [shapes.get(i) if i else None for i in node.input]
    if op in ("Conv", "ConvInteger", "QLinearConv"):
        w = inp[3 if op == "QLinearConv" else 1]
        return _elems(out) * _elems(w[1:]) if out and w else 0
    if op == "ConvTranspose":
        return _elems(inp[0]) * _elems(inp[1][1:]) if inp[0] and inp[1] else 0
    if op == "Gemm":
        if not (inp[0] and len(inp[0]) == 2 and out):
            return 0
        return _elems(out) * inp[0][0 if _attr(node, "transA", 0) else 1]
    if op in ("MatMul", "MatMulInteger", "QLinearMatMul"):
        a = inp[0]
        return _elems(out) * a[-1] if a and out is not None else 0
    if op == "MatMulNBits":  # a contrib op ONNX shape inference does not know: out = A[..., :K] → N
        k, n = int(_attr(node, "K", 0)), int(_attr(node, "N", 0))
        if out is None and inp[0] is not None:
            return _elems(inp[0][:-1]) * n * k
        return _elems(out) * k if out is not None else 0
    return 0


def _flops(node: onnx.NodeProto, macs: int, shapes: dict[str, Shape]) -> int:
    op = node.op_type
    out_elems = _elems(shapes.get(node.output[0])) if node.output else 0
    if macs:
        has_bias = {"Conv": 2, "ConvTranspose": 2, "Gemm": 2, "QLinearConv": 8, "MatMulNBits": 5}.get(op)
        bias = has_bias is not None and len(node.input) > has_bias and bool(node.input[has_bias])
        return 2 * macs + (out_elems if bias else 0)
    if op in _ELEMENTWISE:
        return out_elems
    if op in _PER_ELEMENT:
        return _PER_ELEMENT[op] * out_elems
    if op in ("MaxPool", "AveragePool", "LpPool"):
        return out_elems * _elems(tuple(_attr(node, "kernel_shape", []) or []))
    if op in ("GlobalAveragePool", "GlobalMaxPool") or op.startswith("Reduce"):
        return _elems(shapes.get(node.input[0]))
    return 0


def summarize(handle: ModelHandle) -> ModelSummary:
    """Per-node and total MACs/FLOPs/params/bytes of ``handle.model`` at batch 1."""
    model = handle.model
    graph = model.graph
    shapes = _inferred_shapes(model)
    weights = _Weights(graph)
    inits = set(weights.inits)
    rows: list[dict[str, object]] = []
    deferred = []
    for i, node in enumerate(graph.node):  # compute nodes claim weights first, then pass-through nodes take the rest
        if node.op_type in _PASS_THROUGH:
            deferred.append(i)
            rows.append({})
        else:
            rows.append(_row(node, node_key(node, i), shapes, weights, inits))
    for i in deferred:
        rows[i] = _row(graph.node[i], node_key(graph.node[i], i), shapes, weights, inits)
    layers = pd.DataFrame(rows, columns=COLUMNS)
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    return ModelSummary(
        inputs=_io([vi for vi in graph.input if vi.name not in inits]),
        outputs=_io(graph.output),
        opset=opset,
        params=int(layers["params"].sum()),
        size_bytes=handle.size_bytes,
        macs=int(layers["macs"].sum()),
        flops=int(layers["flops"].sum()),
        op_histogram=dict(Counter(n.op_type for n in graph.node)),
        layers=layers,
    )


def _row(node: onnx.NodeProto, key: str, shapes: dict[str, Shape], weights: _Weights, inits: set[str]
         ) -> dict[str, object]:
    macs = _macs(node, shapes)
    params, nbytes, dtype = _node_weights(node, weights)
    out_shape = shapes.get(node.output[0]) if node.output else None
    return {
        "node": key,
        "op_type": node.op_type,
        "macs": macs,
        "flops": _flops(node, macs, shapes),
        "params": params,
        "weight_bytes": nbytes,
        "act_in_elems": sum(_elems(shapes.get(i)) for i in node.input if i and i not in inits),
        "act_out_elems": sum(_elems(shapes.get(o)) for o in node.output if o),
        "out_shape": str(list(out_shape)) if out_shape is not None else "",
        "weight_dtype": dtype,
    }
