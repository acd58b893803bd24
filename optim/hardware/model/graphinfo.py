"""What the estimator needs from the ONNX graph beyond the summary's per-node counts.

- ``op_class`` per node: conv, dwconv (groups == input channels), gemm, elementwise or shape (pure
  metadata/view ops that deployment runtimes make free);
- ``fused`` per node: activations, BatchNorm, residual Adds and Q/DQ nodes that runtimes fuse into the
  producing conv/gemm (TensorRT, TFLite, ONNX Runtime at ORT_ENABLE_ALL all do this);
- the variant's precision when the handle does not say (``meta["bits"]`` missing), read from the ops.
"""

from __future__ import annotations

import onnx
import pandas as pd

from optim.hardware.model.ortcpu import nchwc_plan, tensor_elems

CONV_OPS = {"Conv", "ConvTranspose", "QLinearConv", "ConvInteger"}
GEMM_OPS = {"Gemm", "MatMul", "MatMulInteger", "QLinearMatMul", "MatMulNBits", "FusedMatMul"}
SHAPE_OPS = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Shape", "Constant", "Dropout",
             "ConstantOfShape", "Size"}
FUSABLE_OPS = {"Relu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "LeakyRelu", "BatchNormalization",
               "Add", "Mul", "QuantizeLinear", "DequantizeLinear", "Tanh", "Gelu", "Erf", "Div"}
QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}
QUANTIZED_KERNEL_OPS = {"Conv", "Gemm", "MatMul", "Add", "Mul", "MaxPool", "AveragePool", "GlobalAveragePool",
                        "Concat", "Relu", "Clip", "Sigmoid", "LeakyRelu", "Reshape", "Flatten", "Transpose",
                        "Squeeze", "Unsqueeze", "Resize", "QuantizeLinear", "DequantizeLinear"}
# ONNX Runtime CPU (ORT_ENABLE_ALL): Conv/Gemm + activation (FusedConv, FusedGemm), Conv + BN, NCHWc
# Conv + Add (sum); a MatMul's bias Add or a LayerNorm stays a separate kernel.
ORT_CPU_FUSABLE = {"Conv": {"Relu", "Clip", "Sigmoid", "HardSigmoid", "LeakyRelu", "Tanh", "BatchNormalization",
                            "Add"},
                   "Gemm": {"Relu", "Clip", "Sigmoid", "HardSigmoid", "LeakyRelu", "Tanh"}}


def _conv_is_depthwise(node: onnx.NodeProto) -> bool:
    groups = next((a.i for a in node.attribute if a.name == "group"), 1)
    return groups > 1


def op_classes(model: onnx.ModelProto) -> dict[str, str]:
    """Node name → op class."""
    out: dict[str, str] = {}
    for node in model.graph.node:
        if node.op_type in CONV_OPS:
            out[node.name] = "dwconv" if _conv_is_depthwise(node) else "conv"
        elif node.op_type in GEMM_OPS:
            out[node.name] = "gemm"
        elif node.op_type in SHAPE_OPS:
            out[node.name] = "shape"
        else:
            out[node.name] = "elementwise"
    return out


def fused_nodes(model: onnx.ModelProto, style: str = "aggressive") -> set[str]:
    """Names of nodes a fusing runtime folds into the conv/gemm that produces their input.

    ``aggressive`` (TensorRT, TFLite, NPU compilers): a fusable op (activation, BN, bias/residual Add,
    Mul, ...) whose input comes from a conv/gemm or from a node already fused into one (chains such as
    Conv → BN → Add → Relu). ``ort_cpu``: only what ONNX Runtime's CPU fusions do
    (:data:`ORT_CPU_FUSABLE`). Q/DQ nodes are always absorbed by the quantised kernels. Walks the graph
    in its (topological) order.
    """
    inits = {i.name for i in model.graph.initializer}
    producer: dict[str, onnx.NodeProto] = {o: n for n in model.graph.node for o in n.output}
    consumers: dict[str, int] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers[i] = consumers.get(i, 0) + 1
    fused: set[str] = set()
    root: dict[str, str] = {}  # fused node -> op type of the conv/gemm it joined
    boundary = boundary_qdq(model) if style == "ort_cpu" else set()
    for node in model.graph.node:
        if node.op_type in QDQ_OPS:
            if node.name not in boundary:
                fused.add(node.name)
            continue
        if node.op_type not in FUSABLE_OPS:
            continue
        for inp in node.input:
            if inp in inits or inp not in producer or consumers.get(inp, 0) != 1:
                continue
            src = producer[inp]
            base = src.op_type if src.op_type in CONV_OPS | GEMM_OPS else root.get(src.name)
            if base is None:
                continue
            if style == "ort_cpu" and node.op_type not in ORT_CPU_FUSABLE.get(base, set()):
                continue
            fused.add(node.name)
            root[node.name] = base
            break
    return fused


def boundary_qdq(model: onnx.ModelProto) -> set[str]:
    """Q/DQ nodes ONNX Runtime CPU runs as kernels of their own: a QuantizeLinear of a graph input or of a
    float op's output, a DequantizeLinear of an activation read by a float op or returned. Pairs around
    the ops ORT has integer kernels for (:data:`QUANTIZED_KERNEL_OPS`) vanish into those kernels."""
    inits = {i.name for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    outputs = {o.name for o in model.graph.output}
    out: set[str] = set()
    for n in model.graph.node:
        if n.op_type == "QuantizeLinear":
            src = producer.get(n.input[0])
            if src is None or src.op_type not in QUANTIZED_KERNEL_OPS:
                out.add(n.name)
        elif n.op_type == "DequantizeLinear" and n.input[0] not in inits:
            src = producer.get(n.input[0])
            if src is not None and src.op_type in {"Constant", "Identity"}:
                continue
            readers = consumers.get(n.output[0], [])
            if n.output[0] in outputs or any(r.op_type not in QUANTIZED_KERNEL_OPS for r in readers):
                out.add(n.name)
    return out


def int8_compute_nodes(model: onnx.ModelProto) -> set[str]:
    """Conv/Gemm/MatMul nodes that run as integer kernels: QLinear*/…Integer ops, and QDQ-format nodes
    whose weight comes from a DequantizeLinear (ORT fuses the group into QLinearConv / QGemm)."""
    dq_out = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    out: set[str] = set()
    for n in model.graph.node:
        if n.op_type in {"QLinearConv", "ConvInteger", "QLinearMatMul", "MatMulInteger"}:
            out.add(n.name)
        elif n.op_type in CONV_OPS | GEMM_OPS and len(n.input) > 1 and n.input[1] in dq_out:
            out.add(n.name)
    return out


def int8_layout_transposes(model: onnx.ModelProto) -> list[tuple[str, str]]:
    """(name, tensor) of the Transposes ORT CPU adds around the NHWC integer convs: one after each
    boundary QuantizeLinear read (through its DequantizeLinear) by a conv, one before each boundary
    DequantizeLinear of a spatial op's output."""
    int8 = int8_compute_nodes(model)
    if not any(n.op_type in CONV_OPS and n.name in int8 for n in model.graph.node):
        return []
    producer = {o: n for n in model.graph.node for o in n.output}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    spatial = CONV_OPS | {"Add", "Relu", "Clip", "MaxPool", "AveragePool"}
    out = []
    boundary = boundary_qdq(model)
    for n in model.graph.node:
        if n.name not in boundary:
            continue
        if n.op_type == "QuantizeLinear":
            dqs = [r for r in readers.get(n.output[0], []) if r.op_type == "DequantizeLinear"]
            if any(c.op_type in CONV_OPS for d in dqs for c in readers.get(d.output[0], [])):
                out.append((f"Transpose({n.output[0]})", n.output[0]))
        else:
            q = producer.get(n.input[0])
            src = producer.get(q.input[0]) if q is not None and q.op_type == "QuantizeLinear" else None
            if src is not None and src.op_type in spatial:
                out.append((f"Transpose({n.input[0]})", q.input[0]))
    return out


def nchw_fallback_convs(model: onnx.ModelProto, block: int) -> set[str]:
    """Dense/depthwise convs ONNX Runtime leaves off its blocked NCHWc layout on this CPU (see
    :mod:`optim.hardware.model.ortcpu`): a pruned model with 22 or 45 channels can be slower than its
    32/64-channel original."""


    return nchwc_plan(model, block).fallback


def weight_dq_elems(model: onnx.ModelProto) -> dict[str, int]:
    """Node → elements of its inputs that are dequantised *weights* (DequantizeLinear of an initializer).

    The summary counts such an input as an activation; the estimator moves it back to weights (it is
    already in the node's ``params``)."""
    dims = {i.name: list(i.dims) for i in model.graph.initializer}
    dq_out: dict[str, int] = {}
    for n in model.graph.node:
        if n.op_type == "DequantizeLinear" and n.input and n.input[0] in dims:
            size = 1
            for d in dims[n.input[0]]:
                size *= int(d)
            dq_out[n.output[0]] = size
    out: dict[str, int] = {}
    for n in model.graph.node:
        total = sum(dq_out.get(i, 0) for i in n.input)
        if total:
            out[n.name] = total
    return out


def infer_precision_bits(model: onnx.ModelProto) -> int:
    """Best guess of a variant's precision from its ops and weights (for handles without ``bits``)."""
    ops = {n.op_type for n in model.graph.node}
    if "MatMulNBits" in ops:
        return 4
    if ops & {"QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "QuantizeLinear"}:
        return 8
    dtypes = [i.data_type for i in model.graph.initializer if len(i.dims) > 1]
    if dtypes and dtypes.count(onnx.TensorProto.FLOAT16) * 2 > len(dtypes):
        return 16
    return 32


def annotate(layers: pd.DataFrame, model: onnx.ModelProto, fuses: bool, channel_block: int = 0,
             fusion_style: str = "aggressive") -> pd.DataFrame:
    """Add ``op_class`` and ``fused`` columns; with a ``channel_block`` (CPUs with NCHWc kernels) dense
    convs off the blocked layout get their own class ``conv_nchw``."""
    classes = op_classes(model)
    fused = fused_nodes(model, fusion_style) if fuses else set()
    df = layers.copy()
    df["op_class"] = [classes.get(n, "elementwise") for n in df["node"]]
    df.loc[df["op_type"].isin(CONV_OPS), "op_class"] = df.loc[df["op_type"].isin(CONV_OPS), "op_class"].where(
        df.loc[df["op_type"].isin(CONV_OPS), "op_class"].isin(["conv", "dwconv"]), "conv")
    df.loc[df["op_type"].isin(GEMM_OPS), "op_class"] = "gemm"
    df.loc[df["op_type"].isin(SHAPE_OPS), "op_class"] = "shape"
    df["fused"] = [n in fused for n in df["node"]]
    dq = weight_dq_elems(model)
    if dq:
        df["act_in_elems"] = (df["act_in_elems"] - df["node"].map(dq).fillna(0)).clip(lower=0)
    df["mac_pad"] = 1.0
    int8 = int8_compute_nodes(model)
    if int8:
        quant = df["node"].isin(int8) & df["op_class"].isin(["conv", "dwconv", "gemm"])
        df.loc[quant, "op_class"] = df.loc[quant, "op_class"] + "_int8"
    if channel_block > 1:
        df = _apply_nchwc(df, model, channel_block)
    return df


def _apply_nchwc(df: pd.DataFrame, model: onnx.ModelProto, block: int) -> pd.DataFrame:
    """Slow-path convs get classes ``conv_nchw`` (k x k, im2col), ``conv1x1_nchw``, ``dwconv_nchw``; blocked ones their channel padding,
    and every predicted layout reorder becomes a row of class ``reorder`` (it is a kernel of its own)."""


    plan = nchwc_plan(model, block)
    moves = [(name, op, t) for name, op, t in plan.reorders]
    moves += [(name, "Transpose", t) for name, t in int8_layout_transposes(model)]
    slow = df["node"].isin(plan.fallback)
    df.loc[slow & (df["op_class"] == "conv"), "op_class"] = "conv_nchw"
    df.loc[df["node"].isin(plan.pointwise) & (df["op_class"] == "conv_nchw"), "op_class"] = "conv1x1_nchw"
    df.loc[slow & (df["op_class"] == "dwconv"), "op_class"] = "dwconv_nchw"
    df["mac_pad"] = df["node"].map(plan.mac_pad).fillna(1.0)
    if not moves:
        return df
    first_out = {n.output[0]: n.name for n in model.graph.node if n.output}
    out_elems = dict(zip(df["node"], df["act_out_elems"].astype(float), strict=False))
    producer_out = {t: out_elems[n] for t, n in first_out.items() if n in out_elems}
    rows = []
    for name, op_type, tensor in moves:
        elems = tensor_elems(model, producer_out, tensor)
        rows.append({"node": name, "op_type": op_type, "op_class": "reorder", "macs": 0, "flops": 0,
                     "params": 0, "weight_bytes": 0, "act_in_elems": elems, "act_out_elems": elems,
                     "fused": False, "mac_pad": 1.0})
    return pd.concat([df, pd.DataFrame(rows)], ignore_index=True)
