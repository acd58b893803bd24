"""ONNX Runtime CPU's blocked NCHWc layout, predicted from the graph: which convs take it, the channel
padding they pay, and the layout reorders it inserts.

At ORT_ENABLE_ALL on x86 ONNX Runtime rewrites convs into the blocked ``NCHWc`` layout (channel blocks
of 16 floats with AVX-512, 8 with AVX2). Rules measured on this stack (onnxruntime 1.31; see
``tests/hardware/test_hardware_ortcpu.py`` and the per-kernel profiles in calibration):

- a dense conv takes the blocked path when its input channels are below the block (it then reads the
  plain NCHW input directly, so a blocked input is reordered back first) or a multiple of 4; otherwise (22, 45, 89, ... channels — what structured
  pruning produces) it stays on the generic NCHW im2col + GEMM path, several times slower per MAC;
- a depthwise conv takes it when its channel count is a multiple of 4;
- blocked convs compute on channel counts padded up to the block (``mac_pad``);
- activations, BatchNorm, pools and Add/Sum/Mul whose inputs are all blocked stay blocked; a blocked
  tensor read by any other op (or returned) costs a ``ReorderOutput`` kernel, a plain tensor read by a
  blocked conv with at least ``block`` input channels a ``ReorderInput`` kernel.

No library predicts ORT's graph rewrites without running them, and the estimator must price a graph on
targets it cannot run, hence this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx

PASSTHROUGH_OPS = {"Relu", "Clip", "Sigmoid", "Tanh", "LeakyRelu", "HardSigmoid", "BatchNormalization",
                   "MaxPool", "AveragePool", "GlobalMaxPool", "GlobalAveragePool", "Add", "Sum", "Mul"}
ALIGN = 4


@dataclass(frozen=True)
class NchwcPlan:
    """Predicted NCHWc rewrite of one graph: slow-path convs, MAC padding factors, reorder kernels."""

    blocked: set[str] = field(default_factory=set)
    fallback: set[str] = field(default_factory=set)
    pointwise: set[str] = field(default_factory=set)  # 1x1 dense convs (a plain GEMM on the NCHW path)
    mac_pad: dict[str, float] = field(default_factory=dict)
    reorders: list[tuple[str, str, str]] = field(default_factory=list)  # (name, op_type, tensor)


def _pad(c: int, block: int) -> int:
    return -(-c // block) * block


def _conv_decision(node: onnx.NodeProto, dims: dict[str, tuple[int, ...]], block: int) -> tuple[bool, float] | None:
    """(takes the blocked path, MAC padding factor) for a 2-D Conv with an initializer weight, else None
    (a QDQ conv's weight comes from a DequantizeLinear: ORT runs it as an integer kernel)."""
    w = dims.get(node.input[1]) if len(node.input) > 1 else None
    if w is None or len(w) != 4:
        return None
    group = next((a.i for a in node.attribute if a.name == "group"), 1)
    cout, cin = int(w[0]), int(w[1]) * group
    if group > 1:
        if group != cin or cin != cout or cin % ALIGN:
            return False, 1.0
        return True, _pad(cout, block) / cout
    if cin >= block and cin % ALIGN:
        return False, 1.0
    cin_pad = cin if cin < block else _pad(cin, block)
    return True, (_pad(cout, block) / cout) * (cin_pad / cin)


def nchwc_plan(model: onnx.ModelProto, block: int) -> NchwcPlan:
    """Walk the (topologically sorted) graph and predict ORT's NCHWc rewrite for channel ``block``."""
    plan = NchwcPlan()
    if block <= 1:
        return plan
    dims = {i.name: tuple(i.dims) for i in model.graph.initializer}
    consts = set(dims) | {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    blocked_tensors: set[str] = set()
    reordered_in: set[str] = set()
    for node in model.graph.node:
        if node.op_type == "Constant":
            continue
        acts = [i for i in node.input if i and i not in consts]
        decision = _conv_decision(node, dims, block) if node.op_type == "Conv" else None
        if decision is not None:
            ok, pad = decision
            if ok:
                plan.blocked.add(node.name)
                plan.mac_pad[node.name] = pad
                group = next((a.i for a in node.attribute if a.name == "group"), 1)
                cin = int(dims[node.input[1]][1]) * group
                src = node.input[0]
                if cin < block and src in blocked_tensors:  # reads the plain NCHW buffer directly
                    _reorder_out(plan, src)
                elif src not in blocked_tensors and cin >= block and src not in reordered_in:
                    reordered_in.add(src)
                    plan.reorders.append((f"ReorderInput({src})", "ReorderInput", src))
                blocked_tensors.update(node.output[:1])
                continue
            plan.fallback.add(node.name)
            if dims[node.input[1]][2:] == (1, 1):
                plan.pointwise.add(node.name)
        elif node.op_type in PASSTHROUGH_OPS and acts and all(a in blocked_tensors for a in acts):
            blocked_tensors.update(node.output[:1])
            continue
        for a in dict.fromkeys(acts):
            if a in blocked_tensors:
                _reorder_out(plan, a)
    for out in model.graph.output:
        if out.name in blocked_tensors:
            _reorder_out(plan, out.name)
    return plan


def _reorder_out(plan: NchwcPlan, tensor: str) -> None:
    name = f"ReorderOutput({tensor})"
    if all(r[0] != name for r in plan.reorders):
        plan.reorders.append((name, "ReorderOutput", tensor))


def tensor_elems(model: onnx.ModelProto, producer_out: dict[str, float], tensor: str) -> float:
    """Elements of ``tensor`` at batch 1: the producing node's output count, or the graph input's shape."""
    if tensor in producer_out:
        return producer_out[tensor]
    for vi in model.graph.input:
        if vi.name == tensor:
            n = 1.0
            for d in vi.type.tensor_type.shape.dim:
                n *= d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1
            return n
    return 0.0
