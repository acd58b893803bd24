"""What ONNX Runtime's CPU provider really runs for a graph: its kernels, read from the optimised graph.

On the machine we run on the estimator does not have to guess ORT's rewrites (fusions, the NCHWc
blocked layout and its reorders, QDQ groups turned into QLinearConv/QGemm, the NHWC transposes around
integer convs, FP16 casts folded away, BiasGelu / FusedMatMul): it asks ORT for the graph it optimises
(``SessionOptions.optimized_model_filepath``, the level latency is measured at) and maps every kernel to
the ONNX node it computes with :func:`optim.measure.layer_profile.map_kernels` (the project's one
kernel→node mapper). :func:`apply_plan` turns that into the estimator's per-node columns: the op class
each node's kernel belongs to, ``fused`` for nodes no kernel runs, and one ``reorder`` row per layout
kernel. Off this machine (catalog targets) or when ORT cannot build the graph, the predicted plan of
:mod:`.graphinfo` / :mod:`.ortcpu` is used instead.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import onnx
import pandas as pd

from optim.graph.names import node_keys
from optim.hardware.model.ortcpu import nchwc_plan, tensor_elems
from optim.measure.layer_profile import LAYOUT_OPS, ORT_PREFIXES, map_kernels
from optim.measure.session import make_session

NCHWC_DOMAIN = "com.microsoft.nchwc"
GEMM_KERNELS = {"Gemm", "FusedGemm", "MatMul", "FusedMatMul"}
INT8_CONV = {"QLinearConv", "NhwcQLinearConv"}
INT8_GEMM = {"QGemm", "QLinearMatMul", "MatMulIntegerToFloat"}
INTEGER_CONV = {"ConvInteger"}
INTEGER_GEMM = {"MatMulInteger", "DynamicQuantizeMatMul"}
NORM_KERNELS = {"LayerNormalization", "SkipLayerNormalization", "SimplifiedLayerNormalization", "Softmax",
                "LogSoftmax", "BatchNormalization", "InstanceNormalization", "GroupNormalization"}
POOL_KERNELS = {"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceSum",
                "ReduceMax", "ReduceMin", "QLinearGlobalAveragePool", "QLinearAveragePool"}
MOVE_KERNELS = {"Transpose", "Concat", "Slice", "Gather", "GatherElements", "Split", "Pad", "Expand", "Tile",
                "Resize", "Upsample", "DepthToSpace", "SpaceToDepth", "Where", "QLinearConcat"}
QUANT_KERNELS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}
SPLIT_BY_OP = ("elementwise", "norm", "pool", "move", "quant", "cast")
SHAPE_KERNELS = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Shape", "Size", "Dropout",
                 "ConstantOfShape"}


@dataclass(frozen=True)
class Kernel:
    """One kernel of the optimised graph: what it is and which ONNX node (or, for layout, tensor) it serves."""

    name: str
    op_type: str
    domain: str
    node: str | None
    tensor: str | None = None
    io: tuple[str, ...] = ()

    @property
    def layout(self) -> bool:
        return self.node is None


def _plain(tensor: str) -> str:
    for p in ORT_PREFIXES:
        tensor = tensor.removeprefix(p)
    return tensor


def plan_from_optimized(model: onnx.ModelProto, optimized: onnx.ModelProto) -> list[Kernel]:
    """Kernels of ``optimized`` (ORT's graph of ``model``), each mapped to the ONNX node it computes; a layout
    kernel (reorder / inserted transpose) gets ``node=None`` and the ONNX tensor it moves."""
    names = set(node_keys(model.graph))
    tensors = {t for n in model.graph.node for t in n.output} | {i.name for i in model.graph.input}
    mapping = map_kernels(model, optimized)
    out = []
    for k in optimized.graph.node:
        if k.op_type in LAYOUT_OPS and k.name not in names:
            ends = [_plain(t) for t in [*k.input[:1], *k.output[:1]]]
            out.append(Kernel(k.name, k.op_type, k.domain, None, next((t for t in ends if t in tensors), None),
                              (*k.input, *k.output)))
            continue
        node = mapping.get(k.name)
        out.append(Kernel(k.name, k.op_type, k.domain, node if node in names else None, None, (*k.input, *k.output)))
    return out


@lru_cache(maxsize=64)
def _plan_cached(blob_hash: str, blob: bytes) -> tuple[Kernel, ...] | None:
    model = onnx.load_from_string(blob)
    try:
        with tempfile.TemporaryDirectory(prefix="optim_plan_") as tmp:
            make_session(model, threads=1, opt_level="all", optimized_path=Path(tmp) / "optimized.onnx")
            optimized = onnx.load(str(Path(tmp) / "optimized.onnx"), load_external_data=False)
    except Exception:  # noqa: BLE001 - ORT cannot build this graph here: the predicted plan is used instead
        return None
    return tuple(plan_from_optimized(model, optimized))


def ort_plan(model: onnx.ModelProto) -> list[Kernel] | None:
    """This machine's kernels for ``model`` (cached per graph), or None when ORT cannot build it."""
    blob = model.SerializeToString()
    plan = _plan_cached(hashlib.sha256(blob).hexdigest(), blob)
    return None if plan is None else list(plan)


def kernel_class(k: Kernel, group: int, k1x1: bool, aligned: bool = True, narrow_in: bool = False) -> str:
    """The estimator's op class of the kernel that runs a node (see :data:`optim.hardware.device.OP_CLASSES`);
    ``narrow_in``: a dense conv with fewer input channels than the NCHWc block (an image stem)."""
    op = k.op_type
    if op in ("Conv", "FusedConv", "NhwcFusedConv"):
        base = "dwconv" if group > 1 else "conv"
        if k.domain == NCHWC_DOMAIN and base == "conv" and narrow_in:
            return "conv_in"  # MLAS's NCHWc kernel that reads a plain NCHW input (stems: 1-3 channels)
        if k.domain == NCHWC_DOMAIN:  # MLAS runs blocked 1x1 convs through a pointwise kernel of their own
            return "conv1x1" if base == "conv" and k1x1 else base
        return "dwconv_nchw" if group > 1 else ("conv1x1_nchw" if k1x1 else "conv_nchw")
    if op in INT8_CONV:  # MLAS's integer conv kernels slow down several-fold off multiples of 4 channels
        return ("dwconv_int8" if group > 1 else "conv_int8") + ("" if aligned else "_odd")
    if op in INT8_GEMM:
        return "gemm_int8"
    if op in INTEGER_CONV:
        return ("dwconv_integer" if group > 1 else "conv_integer") + ("" if aligned else "_odd")
    if op in INTEGER_GEMM:
        return "gemm_integer"
    if op in GEMM_KERNELS:
        return "gemm"
    if op in NORM_KERNELS:
        return "norm"
    if op in POOL_KERNELS:
        return "pool"
    if op in MOVE_KERNELS:
        return "move"
    if op in QUANT_KERNELS:
        return "quant"
    if op == "Cast":
        return "cast"
    if op in SHAPE_KERNELS:
        return "shape"
    return "elementwise"


def row_class(k: Kernel, group: int, k1x1: bool, aligned: bool = True, narrow_in: bool = False) -> str:
    """:func:`kernel_class`, refined by op type for the memory-bound families (``elementwise:Mul``,
    ``quant:DynamicQuantizeLinear``): one family's kernels differ several-fold in cost per byte; a
    refined class without calibration rows falls back to its family (``Device.factors``)."""
    base = kernel_class(k, group, k1x1, aligned, narrow_in)
    return f"{base}:{k.op_type}" if base in SPLIT_BY_OP else base


NOT_CONV = (1, False, True, False)


def _conv_shape(model: onnx.ModelProto, block: int = 8) -> dict[str, tuple[int, bool, bool, bool]]:
    """Conv-like node → (group, 1x1 kernel, in and out channels multiples of 4, dense with fewer input
    channels than the NCHWc ``block``)."""
    dims = {i.name: tuple(i.dims) for i in model.graph.initializer}
    out = {}
    for n in model.graph.node:
        if "Conv" in n.op_type:
            group = next((a.i for a in n.attribute if a.name == "group"), 1)
            w = next((dims[i] for i in n.input[1:2] if i in dims), None)
            if w is None:  # QDQ: the weight comes through a DequantizeLinear of an initializer
                src = {o: m for m in model.graph.node for o in m.output}.get(n.input[1]) if len(n.input) > 1 else None
                w = dims.get(src.input[0]) if src is not None and src.input else None
            four = w is not None and len(w) == 4
            aligned = not four or (int(w[0]) % 4 == 0 and (int(w[1]) * group) % 4 == 0)
            narrow = bool(four and group == 1 and 0 < int(w[1]) < block)
            out[n.name] = (group, bool(four and tuple(w[2:]) == (1, 1)), bool(aligned), narrow)
    return out


def _main_kernels(plan: list[Kernel], convs: dict[str, tuple[int, bool, bool, bool]]) -> dict[str, Kernel]:
    """ONNX node → the kernel that computes it (its heaviest-class kernel when several map to it)."""
    light = ("elementwise", "shape", "quant", "cast", "move", "reorder")
    out: dict[str, Kernel] = {}
    for k in plan:
        if k.node is None:
            continue
        prev = out.get(k.node)
        if prev is None or (kernel_class(prev, *convs.get(k.node, NOT_CONV)) in light
                            and kernel_class(k, *convs.get(k.node, NOT_CONV)) not in light):
            out[k.node] = k
    return out


def row_keys(model: onnx.ModelProto, plan: list[Kernel]) -> dict[str, str]:
    """Kernel name → the estimator row it is priced in: its ONNX node for the kernel that computes the node,
    ``"<op>(<tensor>)"`` for a layout or auxiliary kernel (stable between sessions, unlike ORT's names)."""
    main = _main_kernels(plan, _conv_shape(model))
    keys: dict[str, str] = {}
    for k in plan:
        if k.node is not None and main.get(k.node) is k:
            keys[k.name] = k.node
        else:
            base = f"{k.op_type}({k.tensor or k.node or k.name})"
            key, i = base, 1
            while key in keys.values():
                i += 1
                key = f"{base}#{i}"
            keys[k.name] = key
    return keys


def _tensor_elems(model: onnx.ModelProto, producer_out: dict[str, float], k: Kernel,
                  node_out: dict[str, float]) -> float:
    for t in [k.tensor, *(_plain(x) for x in k.io)]:
        if t:
            n = tensor_elems(model, producer_out, t)
            if n > 0:
                return n
    return node_out.get(k.node or "", 0.0)


GEMV = {"gemm": "gemv", "gemm_int8": "gemv_int8", "gemm_integer": "gemv_integer"}


def _out_features(model: onnx.ModelProto) -> dict[str, int]:
    """Gemm/MatMul-like node with a constant weight → its output features N (through a weight DequantizeLinear)."""
    dims = {i.name: tuple(i.dims) for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    out = {}
    for n in model.graph.node:
        if len(n.input) < 2 or not ({"Gemm", "MatMul"} & {n.op_type, n.op_type.replace("Integer", "")}):
            continue
        w = dims.get(n.input[1])
        src = producer.get(n.input[1])
        if w is None and src is not None and src.op_type == "DequantizeLinear":
            w = dims.get(src.input[0])
        if not w or len(w) != 2:
            continue
        trans_b = next((a.i for a in n.attribute if a.name == "transB"), 0)
        out[n.name] = int(w[0] if n.op_type == "Gemm" and trans_b else w[-1])
    return out


def _split_gemv(df: pd.DataFrame, model: onnx.ModelProto) -> pd.DataFrame:
    """A matrix product of one activation row (batch-1 classifier / MLP layer) is a matrix-vector product:
    MLAS runs it at a fraction of a GEMM's speed per op, so it is its own class (``gemv``, ``gemv_int8``...)."""
    n_out = _out_features(model)
    rows = df["node"].map(n_out)
    one = rows.notna() & (df["act_out_elems"].astype(float) <= rows.fillna(0)) & df["op_class"].isin(list(GEMV))
    df.loc[one, "op_class"] = df.loc[one, "op_class"].map(GEMV)
    return df


def _dims(shape: object) -> list:
    """A summary ``out_shape`` (list, or its JSON text) as a list; [] when unreadable."""
    if isinstance(shape, str):
        try:
            shape = json.loads(shape)
        except ValueError:
            return []
    return list(shape) if isinstance(shape, list | tuple) else []


IM2COL = ("conv_nchw", "conv_int8", "conv_int8_odd", "conv_integer", "conv_integer_odd")


def _im2col_elems(df: pd.DataFrame, convs: dict[str, tuple[int, bool, bool, bool]]) -> list[float]:
    """Elements of the patch matrix a k x k conv off the blocked layout builds (MACs / output channels);
    0 for every other row (1x1 convs run as a plain GEMM on their input)."""
    out = []
    for node, cls, macs, shape in zip(df["node"], df["op_class"], df["macs"], df["out_shape"], strict=True):
        group, k1x1 = convs.get(node, (1, True))[:2]
        dims = _dims(shape)
        cout = int(dims[1]) if len(dims) > 1 and dims[1] else 0
        out.append(float(macs) / cout if cls in IM2COL and not k1x1 and group == 1 and cout else 0.0)
    return out


INT8_PANEL = 16  # MLAS's integer GEMM kernels compute output columns in panels of 16
PANELLED = ("conv_int8", "conv_int8_odd", "conv_integer", "conv_integer_odd", "gemm_int8", "gemv_int8",
            "gemm_integer", "gemv_integer")


def _panel_pad(df: pd.DataFrame, model: onnx.ModelProto) -> list[float]:
    """MAC padding of the integer convs and GEMMs: their N (output channels / features) rounded up to
    :data:`INT8_PANEL` — a 24-channel INT8 conv costs what a 32-channel one does; 1.0 for every other row."""
    n_out = _out_features(model)
    out = []
    for node, cls, shape in zip(df["node"], df["op_class"], df["out_shape"], strict=True):
        dims = _dims(shape)
        n = n_out.get(node) if cls.startswith(("gemm", "gemv")) else (int(dims[1]) if len(dims) > 1 and dims[1] else 0)
        out.append(-(-n // INT8_PANEL) * INT8_PANEL / n if cls in PANELLED and n else 1.0)
    return out


CHANNELS_LAST = ("conv_int8", "dwconv_int8", "conv_int8_odd", "dwconv_int8_odd", "conv_integer", "dwconv_integer",
                 "conv_integer_odd", "dwconv_integer_odd")  # MLAS computes integer convs on NHWC pixels


def _calls_and_rows(df: pd.DataFrame, convs: dict[str, tuple[int, bool, bool, bool]]) -> tuple[list, list]:
    """Kernel calls per row (a depthwise conv off the blocked layout runs one small conv per channel; 1 for
    every other row) and output rows the kernel loops over: elements / last dimension of a >= 3-d output,
    and for the integer convs, which run channels-last, their output pixels (elements / channels)."""
    calls, rows = [], []
    for node, cls, elems, shape in zip(df["node"], df["op_class"], df["act_out_elems"], df["out_shape"], strict=True):
        calls.append(float(convs.get(node, NOT_CONV)[0]) if cls == "dwconv_nchw" else 1.0)
        dims = _dims(shape)
        axis = 1 if cls in CHANNELS_LAST else -1
        width = int(dims[axis]) if len(dims) >= 3 and dims[axis] else 0
        rows.append(float(elems) / width if width else 0.0)
    return calls, rows


FILTER_BLOCKS = 4  # MLAS's NCHWc conv kernels compute up to 4 output-channel blocks per input broadcast
BROADCAST = ("conv", "conv1x1", "conv_in")


def _bcast_ops(df: pd.DataFrame, block: int) -> list[float]:
    """Input broadcasts of a blocked conv, in ops: ``2·MACs / F`` with F the output-channel blocks computed per
    pass (B blocks in ceil(B/4) passes): an 8-channel conv (one block) broadcasts every input for one block
    only, a 32-channel one for four; 0 for every other row."""
    out = []
    for cls, macs, pad, shape in zip(df["op_class"], df["macs"], df["mac_pad"], df["out_shape"], strict=True):
        dims = _dims(shape)
        cout = int(dims[1]) if len(dims) > 1 and dims[1] else 0
        blocks = -(-cout // max(block, 1))
        per_pass = blocks / -(-blocks // FILTER_BLOCKS) if blocks else 0.0
        out.append(2.0 * float(macs) * float(pad) / per_pass if cls in BROADCAST and per_pass else 0.0)
    return out


def apply_plan(df: pd.DataFrame, model: onnx.ModelProto, plan: list[Kernel], block: int) -> pd.DataFrame:
    """Per-node rows (summary + ``op_class``/``fused``/``mac_pad`` from :func:`.graphinfo.annotate`) re-classed by
    the kernels ORT runs: a node's computing kernel sets its class, nodes without a kernel become ``fused``,
    every other kernel (layout reorders, inserted transposes, a standalone QuantizeLinear, casts) becomes a
    row of its own keyed as in :func:`row_keys`, sized by the ONNX tensor it reads or writes."""
    convs = _conv_shape(model, max(block, 1))
    main = _main_kernels(plan, convs)
    keys = row_keys(model, plan)
    df = df.copy()
    df["fused"] = ~df["node"].isin(main)  # no kernel runs it (a folded Identity/Reshape too): it costs nothing
    df["op_class"] = [row_class(main[n], *convs.get(n, NOT_CONV)) if n in main else c
                      for n, c in zip(df["node"], df["op_class"], strict=True)]
    df = _split_gemv(df, model)
    df["im2col_elems"] = _im2col_elems(df, convs)
    df["calls"], df["out_rows"] = _calls_and_rows(df, convs)
    pads = nchwc_plan(model, block).mac_pad if block > 1 else {}
    df["mac_pad"] = [pads.get(n, 1.0) if n in main and main[n].domain == NCHWC_DOMAIN else p
                     for n, p in zip(df["node"], _panel_pad(df, model), strict=True)]
    df["bcast_ops"] = _bcast_ops(df, block)
    extra = [k for k in plan if keys[k.name] != k.node]
    if not extra:
        return df
    first_out = {n.output[0]: n.name for n in model.graph.node if n.output}
    node_out = dict(zip(df["node"], df["act_out_elems"].astype(float), strict=False))
    producer_out = {t: node_out[n] for t, n in first_out.items() if n in node_out}
    rows = []
    for k in extra:
        elems = _tensor_elems(model, producer_out, k, node_out)
        cls = "reorder" if k.layout else row_class(k, 1, False, True)
        rows.append({"node": keys[k.name], "op_type": k.op_type, "op_class": cls, "macs": 0, "flops": elems,
                     "params": 0, "weight_bytes": 0, "act_in_elems": elems, "act_out_elems": elems, "fused": False,
                     "mac_pad": 1.0, "calls": 1.0, "out_rows": 0.0, "bcast_ops": 0.0})
    return pd.concat([df, pd.DataFrame(rows)], ignore_index=True)
