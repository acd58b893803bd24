"""ONNX graph → ``torch.nn.Module`` for a documented op set (the workshop for structured pruning).

Why our own converter: the maintained ``onnx2torch`` (1.5.15) imports torchvision, which this project
does not depend on, and has no ReduceMean-18 (axes-as-input) converter, so it cannot load graphs the
current exporters write. This module is deliberately small: ``forward`` walks the ONNX nodes in
topological order; layers with weights become real ``nn.Module`` layers so that torch-pruning's
dependency graph sees (and prunes) them:

* ``Conv`` (1-D/2-D/3-D; groups, strides, dilations, symmetric pads as ``padding``, asymmetric pads
  and ``auto_pad`` via ``F.pad``) → ``nn.Conv{1,2,3}d``
* ``Gemm`` with a constant ``B`` (``transB``, ``alpha``/``beta`` folded) and ``MatMul`` with a
  constant 2-D weight, fused with a following ``Add`` of a constant bias → ``nn.Linear``
* ``BatchNormalization`` → a ``nn.BatchNorm2d`` that accepts any rank; ``LayerNormalization`` over
  the last axis → ``nn.LayerNorm``
* ``LSTM`` / ``GRU`` / ``RNN`` → ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` (``recurrent.py``), never pruned

Everything else in :data:`SUPPORTED_OPS` runs as a torch function (``onnx2torch_ops.KERNELS``):
element-wise math (Add Sub Mul Div Pow Sqrt Reciprocal Neg Exp Log Abs Erf Max Min Sum Equal Less
Greater Not Where), activations (Relu Clip Sigmoid Tanh Gelu LeakyRelu HardSigmoid HardSwish Softmax
LogSoftmax), shape ops (Reshape incl. 0/-1, Flatten, Transpose, Squeeze/Unsqueeze in attribute and
input form, Concat, Split, Slice, Gather, Shape, Constant, ConstantOfShape, Expand, Cast, Range,
Identity, Dropout, Pad), reductions (ReduceMean/ReduceSum/ReduceMax in attribute and opset-18
axes-as-input form), pools (GlobalAveragePool GlobalMaxPool AveragePool MaxPool) and activation ×
activation MatMul.

``Reshape`` with a *constant* target shape remembers the shapes it saw at conversion time; after
channel pruning changes its input it recomputes the target by mapping blocks of input dims onto
output dims (e.g. ``(1, C, H, W) → (1, C·H·W)`` becomes ``(-1, C'·H·W)``). Data-derived shapes
(Shape → Gather → Concat) adapt by themselves.
"""

from __future__ import annotations

import math
from typing import Any

import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import nn

from optim.errors import PassUnavailableError
from optim.passes._prune.onnx2torch_extra import (  # noqa: F401  (example_inputs re-exported)
    EXTRA_KERNELS,
    EXTRA_LAYER_OPS,
    example_inputs,
    extra_layer,
)
from optim.passes._prune.onnx2torch_ops import (
    KERNELS,
    attrs,
    auto_pads,
    functional_layer,
    ints,
    pad_pairs,
    traced_sizes,
)
from optim.passes._prune.recurrent import RECURRENT_OPS, Recurrent, recurrent_layer, state_inputs

LAYER_OPS = frozenset({"Conv", "Gemm", "BatchNormalization", "LayerNormalization", "Reshape"})
ALL_KERNELS = {**KERNELS, **EXTRA_KERNELS}
SUPPORTED_OPS: frozenset[str] = frozenset(ALL_KERNELS) | LAYER_OPS | EXTRA_LAYER_OPS | RECURRENT_OPS
_ELEMENTWISE_MULTI = frozenset({"Add", "Sub", "Mul", "Div", "Pow", "Where", "Max", "Min", "Sum", "Equal",
                                "Less", "Greater", "PRelu"})
_INDEXING = frozenset({"Gather", "Slice", "Split", "Expand", "MatMul", "Gemm", "LayerNormalization", "Conv",
                       "BatchNormalization", "GatherElements", "ConvTranspose", "InstanceNormalization"})


class UnsupportedOpsError(PassUnavailableError):
    """The graph uses ops the converter does not implement; ``ops`` lists them."""

    def __init__(self, ops: list[str]) -> None:
        self.ops = list(ops)
        super().__init__(
            f"Structured pruning is unavailable for this model: unsupported ops {', '.join(self.ops)}. "
            "Try unstructured pruning or quantization instead, which work on any ONNX graph."
        )


def _op_name(node: onnx.NodeProto) -> str:
    return node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"


def unsupported_ops(model: onnx.ModelProto) -> list[str]:
    """Sorted op types of ``model``'s main graph that :func:`to_torch` cannot convert."""
    return sorted({_op_name(n) for n in model.graph.node if _op_name(n) not in SUPPORTED_OPS})


class _BatchNorm(nn.BatchNorm2d):
    """BatchNorm over dim 1 of a tensor of any rank (ONNX BatchNormalization semantics)."""

    def _check_input_dim(self, x: torch.Tensor) -> None:  # noqa: D401 - torch hook
        return None


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)


def _topo_sort(nodes: list[onnx.NodeProto], available: set[str]) -> list[onnx.NodeProto]:
    done, order, pending = set(available) | {""}, [], list(nodes)
    while pending:
        rest = [n for n in pending if not all(i in done for i in n.input)]
        ready = [n for n in pending if all(i in done for i in n.input)]
        if not ready:
            raise PassUnavailableError("The ONNX graph is not a DAG over its inputs (missing producers); "
                                       "check it with onnx.checker, or use unstructured pruning instead.")
        for n in ready:
            order.append(n)
            done.update(n.output)
        pending = rest
    return order


def reshape_blocks(a: tuple[int, ...], b: tuple[int, ...]) -> list[tuple[list[int], list[int]]]:
    """Group dims of shape ``a`` and ``b`` (same element count) into blocks with equal products."""
    blocks: list[tuple[list[int], list[int]]] = []
    i = j = 0
    while i < len(a) and j < len(b):
        ia, jb = [i], [j]
        pa, pb = a[i], b[j]
        i, j = i + 1, j + 1
        while pa != pb:
            if (pa < pb and i < len(a)) or j >= len(b):
                pa, ia, i = pa * a[i], [*ia, i], i + 1
            else:
                pb, jb, j = pb * b[j], [*jb, j], j + 1
        blocks.append((ia, jb))
    if blocks:
        blocks[-1][0].extend(range(i, len(a)))
        blocks[-1][1].extend(range(j, len(b)))
    return blocks


def remap_reshape(ref_in: tuple[int, ...], ref_out: tuple[int, ...], new_in: tuple[int, ...]) -> list[int]:
    """Target shape for ``new_in`` that splits/merges dims like ``ref_in → ref_out`` did; one dim is -1."""
    out = list(ref_out)
    blocks = reshape_blocks(ref_in, ref_out)
    for ia, jb in blocks:
        old = math.prod(ref_in[k] for k in ia)
        new = math.prod(new_in[k] for k in ia)
        if old == new:
            continue
        big = [k for k in jb if ref_out[k] != 1] or jb
        k = next((k for k in big if (ref_out[k] * new) % old == 0), big[0])
        out[k] = ref_out[k] * new // old
    if blocks:
        out[next((k for k in blocks[0][1] if ref_out[k] != 1), blocks[0][1][0])] = -1
    return out


def _merge_only(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    """True when ``a → b`` only merges (or keeps) dims — the flatten→linear case pruning can follow."""
    try:
        return all(sum(1 for k in jb if b[k] != 1) <= 1 for _, jb in reshape_blocks(a, b))
    except IndexError:
        return False


class OnnxModule(nn.Module):
    """A torch module that evaluates an ONNX graph; build it with :func:`to_torch`."""

    def __init__(self, model: onnx.ModelProto) -> None:
        super().__init__()
        g = model.graph
        self.opset = _opset(model)
        inits = {t.name for t in g.initializer}
        self.input_names = [i.name for i in g.input if i.name not in inits]
        self.output_names = [o.name for o in g.output]
        self.layers = nn.ModuleDict()
        self._const_attr: dict[str, str] = {}
        consts = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in g.initializer}
        for n in g.node:
            if n.op_type == "Constant" and "value" in attrs(n):
                consts[n.output[0]] = attrs(n)["value"]
            elif n.op_type == "Identity" and n.input[0] in consts:
                consts[n.output[0]] = consts[n.input[0]]
        self._consts = consts
        nodes = _topo_sort(list(g.node), set(self.input_names) | inits)
        consumers: dict[str, int] = {}
        for n in nodes:
            for name in n.input:
                consumers[name] = consumers.get(name, 0) + 1
        self.steps: list[tuple[str, onnx.NodeProto, list[str], list[str]]] = []
        fused: set[int] = set()
        for idx, n in enumerate(nodes):
            if idx in fused:
                continue
            self.steps.append(self._build_step(idx, n, nodes, consumers, fused))
        for name in {i for _, _, ins, _ in self.steps for i in ins if i in consts}:
            key = f"c{len(self._const_attr)}"
            self.register_buffer(key, consts[name])
            self._const_attr[name] = key
        del self._consts
        self._ref_shapes: dict[int, tuple[tuple[int, ...], tuple[int, ...]]] = {}
        self.unsafe_grad_fns: set[Any] | None = None
        self.recurrent_fns: dict[Any, str] = {}  # while tracing: grad_fn of a recurrent layer's input → its name

    # ------------------------------------------------------------------ construction
    def _const(self, name: str) -> torch.Tensor | None:
        return self._consts.get(name) if name else None

    def _build_step(self, idx: int, n: onnx.NodeProto, nodes: list[onnx.NodeProto], consumers: dict[str, int],
                    fused: set[int]) -> tuple[str, onnx.NodeProto, list[str], list[str]]:
        key = f"{n.op_type.lower()}_{idx}"
        at = attrs(n)
        if n.op_type == "Conv" and self._const(n.input[1]) is not None:
            self.layers[key] = self._conv(n, at)
            return ("layer:" + key, n, [n.input[0]], list(n.output))
        if n.op_type == "Gemm" and not at.get("transA", 0) and self._const(n.input[1]) is not None and (
                len(n.input) < 3 or not n.input[2] or self._const(n.input[2]) is not None):
            w = self._const(n.input[1]).float() * at.get("alpha", 1.0)
            w = w if at.get("transB", 0) else w.t()
            c = self._const(n.input[2]) if len(n.input) > 2 else None
            bias = None if c is None else (c.float() * at.get("beta", 1.0)).reshape(-1).expand(w.shape[0])
            self.layers[key] = _linear(w, bias)
            return ("layer:" + key, n, [n.input[0]], list(n.output))
        if n.op_type == "MatMul" and self._const(n.input[1]) is not None and self._const(n.input[1]).dim() == 2 \
                and self._const(n.input[0]) is None:
            w = self._const(n.input[1]).float().t()
            bias, outputs = None, list(n.output)
            nxt = [(k, m) for k, m in enumerate(nodes) if n.output[0] in m.input]
            if consumers.get(n.output[0]) == 1 and len(nxt) == 1 and nxt[0][1].op_type == "Add":
                k, add = nxt[0]
                other = add.input[1] if add.input[0] == n.output[0] else add.input[0]
                c = self._const(other)
                if c is not None and c.numel() == w.shape[0] and c.dim() <= 1:
                    bias, outputs = c.float().reshape(-1), list(add.output)
                    fused.add(k)
            self.layers[key] = _linear(w, bias)
            return ("layer:" + key, n, [n.input[0]], outputs)
        if n.op_type == "BatchNormalization" and all(self._const(i) is not None for i in n.input[1:5]):
            bn = _BatchNorm(self._const(n.input[1]).numel(), eps=at.get("epsilon", 1e-5))
            for attr, name in zip(("weight", "bias", "running_mean", "running_var"), n.input[1:5], strict=True):
                getattr(bn, attr).data.copy_(self._const(name).float())
            self.layers[key] = bn.eval()
            return ("layer:" + key, n, [n.input[0]], list(n.output[:1]))
        scale = self._const(n.input[1]) if n.op_type == "LayerNormalization" else None
        if scale is not None and at.get("axis", -1) == -1 and scale.dim() == 1:
            ln = nn.LayerNorm(scale.numel(), eps=at.get("epsilon", 1e-5))
            ln.weight.data.copy_(scale.float())
            b = self._const(n.input[2]) if len(n.input) > 2 else None
            ln.bias.data.copy_(b.float() if b is not None else torch.zeros_like(ln.bias))
            self.layers[key] = ln
            return ("layer:" + key, n, [n.input[0]], list(n.output[:1]))
        if n.op_type in RECURRENT_OPS:  # kept whole (recurrent.py); refused in one sentence where torch cannot
            self.layers[key] = recurrent_layer(n, self._const)
            return ("layer:" + key, n, state_inputs(n), list(n.output))
        layer = extra_layer(n, self._const) if n.op_type in EXTRA_LAYER_OPS else None
        if layer is not None:
            self.layers[key] = layer
            return ("layer:" + key, n, [n.input[0]], list(n.output[:1]))
        return ("op", n, list(n.input), list(n.output))

    def _conv(self, n: onnx.NodeProto, at: dict[str, Any]) -> nn.Module:
        w = self._const(n.input[1]).float()
        nd = w.dim() - 2
        cls = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[nd]
        groups = at.get("group", 1)
        pads = at.get("pads", [0] * 2 * nd)
        sym = at.get("auto_pad", "NOTSET") in ("NOTSET", "") and pads[:nd] == pads[nd:]
        b = self._const(n.input[2]) if len(n.input) > 2 and n.input[2] else None
        conv = cls(w.shape[1] * groups, w.shape[0], tuple(w.shape[2:]), stride=at.get("strides", [1] * nd),
                   padding=tuple(pads[:nd]) if sym else 0, dilation=at.get("dilations", [1] * nd),
                   groups=groups, bias=b is not None)
        conv.weight.data.copy_(w)
        if b is not None:
            conv.bias.data.copy_(b.float())
        conv.onnx_pads = None if sym else (at.get("auto_pad", "NOTSET"), list(pads))  # type: ignore[assignment]
        return conv

    # ------------------------------------------------------------------ evaluation
    def forward(self, *inputs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        env: dict[str, Any] = dict(zip(self.input_names, inputs, strict=True))
        for name, key in self._const_attr.items():
            env[name] = getattr(self, key)
        release = self._release_plan()
        for idx, (kind, node, ins, outs) in enumerate(self.steps):
            args = [env.get(i) if i else None for i in ins]
            if kind.startswith("layer:"):
                res = self._run_layer(self.layers[kind[6:]], args)
            elif node.op_type == "Reshape":
                res = self._reshape(idx, node, args)
            elif node.op_type in ("Gemm", "LayerNormalization", "BatchNormalization", "Conv"):
                res = functional_layer(node, args)
            else:
                res = ALL_KERNELS[node.op_type](node, args, self.opset)
            res = list(res) if isinstance(res, list | tuple) else [res]
            for name, t in zip(outs, res, strict=False):
                env[name] = t
            if self.unsafe_grad_fns is not None:
                self._mark_unsafe(kind, node, args, res)
            for name in release.get(idx, ()):  # last use: free it (a 224² ResNet-50 kept 3.5 GB alive)
                env.pop(name, None)
        out = tuple(env[o] for o in self.output_names)
        if self.unsafe_grad_fns is not None:
            self.unsafe_grad_fns.update(t.grad_fn for t in out if t.grad_fn is not None)
        return out[0] if len(out) == 1 else out

    def _release_plan(self) -> dict[int, list[str]]:
        """Step index → intermediate values whose last reader is that step (outputs and constants stay)."""
        plan = getattr(self, "_release", None)
        if plan is None:
            keep = set(self.output_names) | set(self._const_attr)
            last: dict[str, int] = {}
            for idx, (_, _, ins, outs) in enumerate(self.steps):
                for name in (*ins, *outs):
                    if name and name not in keep:
                        last[name] = idx
            plan = {i: [n for n, j in last.items() if j == i] for i in set(last.values())}
            self._release = plan
        return plan

    @staticmethod
    def _run_layer(layer: nn.Module, args: list[Any]) -> Any:
        if isinstance(layer, Recurrent):
            return layer(*args)
        x = args[0]
        spec = getattr(layer, "onnx_pads", None)
        if spec is not None:
            auto, pads = spec
            if auto not in ("NOTSET", ""):
                pads = auto_pads(auto, x, layer.kernel_size, layer.stride, layer.dilation)
            x = F.pad(x, pad_pairs(pads))
        return layer(x)

    def _reshape(self, idx: int, node: onnx.NodeProto, args: list[Any]) -> torch.Tensor:
        x, shape_t = args[0], args[1]
        allowzero = attrs(node).get("allowzero", 0)
        raw = ints(shape_t)
        if not allowzero and set(raw) <= {0, -1} and raw.count(-1) <= 1:  # copies and one inferred dim: any shape
            return x.reshape([x.shape[k] if v == 0 else -1 for k, v in enumerate(raw)])
        target = [int(x.shape[k]) if (v == 0 and not allowzero) else v for k, v in enumerate(raw)]
        ref = self._ref_shapes.get(idx)
        if ref is None:
            out = x.reshape(target)
            self._ref_shapes[idx] = (tuple(x.shape), tuple(out.shape))
            return out
        data_derived = node.input[1] not in self._const_attr
        known = math.prod(v for v in target if v != -1)
        fits = known > 0 and x.numel() % known == 0 and (-1 in target or known == x.numel())
        if data_derived and fits:  # shape computed from the data: consistent with x already
            return x.reshape(target) if 0 in target else x.reshape(*traced_sizes(shape_t, target))
        if 0 in ref[0]:
            return x.reshape(target)
        return x.reshape(remap_reshape(ref[0], ref[1], tuple(x.shape)))

    def _mark_unsafe(self, kind: str, node: onnx.NodeProto, args: list[Any], res: list[Any]) -> None:
        """Record grad_fns of outputs whose channel dim pruning cannot follow (see prune_structured)."""
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        grads = any(a.requires_grad for a in tensors)
        op = node.op_type
        unsafe = False
        if kind.startswith("layer:"):
            layer = self.layers[kind[6:]]
            groups = getattr(layer, "groups", 1)
            if isinstance(layer, Recurrent):  # its input channels and its outputs stay whole
                unsafe = True
                self.unsafe_grad_fns.update(a.grad_fn for a in tensors if a.grad_fn is not None)
                self.recurrent_fns.update({a.grad_fn: layer.onnx_name for a in tensors if a.grad_fn is not None})
            elif groups > 1 and not (groups == layer.in_channels == layer.out_channels):
                unsafe = True
                if args[0].grad_fn is not None:
                    self.unsafe_grad_fns.add(args[0].grad_fn)
        elif op in _ELEMENTWISE_MULTI or op == "Concat":
            unsafe = grads and any(not a.requires_grad and (a.numel() > 1 or op == "Concat") for a in tensors)
        elif op in _INDEXING:
            unsafe = grads
        elif op == "Reshape":
            unsafe = grads and not _merge_only(tuple(args[0].shape), tuple(res[0].shape))
        if unsafe:
            self.unsafe_grad_fns.update(t.grad_fn for t in res if isinstance(t, torch.Tensor) and t.grad_fn)


def _linear(w: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    lin = nn.Linear(w.shape[1], w.shape[0], bias=bias is not None)
    lin.weight.data.copy_(w)
    if bias is not None:
        lin.bias.data.copy_(bias)
    return lin


def to_torch(model: onnx.ModelProto) -> OnnxModule:
    """Convert ``model`` to an :class:`OnnxModule` (eval mode); raise :class:`UnsupportedOpsError`."""
    missing = unsupported_ops(model)
    if missing:
        raise UnsupportedOpsError(missing)
    module = OnnxModule(model).eval()
    with torch.no_grad():
        module(*example_inputs(model))  # records the reference shapes of constant-shape Reshapes
    return module
