"""Functional kernels for the ONNX → torch converter (``onnx2torch.py``), one function per ONNX op.

Each kernel takes ``(node, args, opset)`` where ``args`` are torch tensors (``None`` for a missing
optional input) and returns one tensor or a list of tensors. Layers with weights (Conv, Gemm,
MatMul+Add with a constant weight, BatchNormalization, LayerNormalization) are *not* here: the
converter turns them into ``nn.Module`` layers so that torch-pruning can see and prune them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import onnx
import torch
import torch.nn.functional as F
from onnx import helper, numpy_helper

Kernel = Callable[[onnx.NodeProto, list[Any], int], Any]

_DTYPES = {
    1: torch.float32, 2: torch.uint8, 3: torch.int8, 5: torch.int16, 6: torch.int32, 7: torch.int64,
    9: torch.bool, 10: torch.float16, 11: torch.float64, 16: torch.bfloat16,
}


def attrs(node: onnx.NodeProto) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode()
        elif isinstance(v, onnx.TensorProto):
            v = torch.from_numpy(numpy_helper.to_array(v).copy())
        out[a.name] = v
    return out


def ints(t: torch.Tensor | None) -> list[int] | None:
    return None if t is None else [int(v) for v in t.reshape(-1).tolist()]


def _axes(node: onnx.NodeProto, args: list[Any], opset: int, input_from: int, idx: int = 1) -> list[int] | None:
    """Axes given as attribute (older opsets) or as input ``idx`` (opset >= input_from)."""
    if opset >= input_from:
        return ints(args[idx]) if len(args) > idx else None
    return attrs(node).get("axes")


def _binary(fn: Callable[[Any, Any], Any]) -> Kernel:
    return lambda node, a, opset: fn(a[0], a[1])


def _unary(fn: Callable[[Any], Any]) -> Kernel:
    return lambda node, a, opset: fn(a[0])


def _clip(node: onnx.NodeProto, a: list[Any], opset: int) -> torch.Tensor:
    if opset < 11:
        at = attrs(node)
        lo, hi = at.get("min"), at.get("max")
    else:
        lo = a[1] if len(a) > 1 else None
        hi = a[2] if len(a) > 2 else None
        lo = None if lo is None else float(lo)
        hi = None if hi is None else float(hi)
    if lo == 0.0 and hi is None:
        return torch.relu(a[0])
    return torch.clamp(a[0], lo, hi)


def _softmax(node: onnx.NodeProto, a: list[Any], opset: int, fn: Callable = torch.softmax) -> torch.Tensor:
    x = a[0]
    axis = attrs(node).get("axis", -1 if opset >= 13 else 1)
    axis = axis % x.dim()
    if opset >= 13 or axis == x.dim() - 1:
        return fn(x, axis)
    y = fn(x.reshape(math.prod(x.shape[:axis]), -1), 1)
    return y.reshape(x.shape)


def _gelu(node: onnx.NodeProto, a: list[Any], opset: int) -> torch.Tensor:
    return F.gelu(a[0], approximate=attrs(node).get("approximate", "none"))


def _transpose(node: onnx.NodeProto, a: list[Any], opset: int) -> torch.Tensor:
    perm = attrs(node).get("perm") or list(reversed(range(a[0].dim())))
    return a[0].permute(*perm)


def _flatten(node: onnx.NodeProto, a: list[Any], opset: int) -> torch.Tensor:
    x = a[0]
    axis = attrs(node).get("axis", 1) % (x.dim() + 1) if x.dim() else 0
    if axis == 0:
        return x.reshape(1, -1)
    return x.flatten(axis).flatten(0, axis - 1) if axis < x.dim() else x.flatten(0, -1).unsqueeze(1)


def _squeeze(node: onnx.NodeProto, a: list[Any], opset: int) -> torch.Tensor:
    axes = _axes(node, a, opset, 13)
    x = a[0]
    dims = [d for d in range(x.dim()) if x.shape[d] == 1] if not axes else [ax % x.dim() for ax in axes]
    for ax in sorted(dims, reverse=True):
        x = x.select(ax, 0)  # select, not squeeze: exports as Gather, never as an If on the size
    return x


def _unsqueeze(node: onnx.NodeProto, a: list[Any], opset: int) -> torch.Tensor:
    axes = _axes(node, a, opset, 13) or []
    x = a[0]
    rank = x.dim() + len(axes)
    for ax in sorted(ax % rank for ax in axes):
        x = x.unsqueeze(ax)
    return x


def _concat(node: onnx.NodeProto, a: list[Any], opset: int) -> torch.Tensor:
    parts = [t for t in a if t is not None and not (t.dim() == 1 and t.numel() == 0)]
    return torch.cat(parts, attrs(node)["axis"])


def _split(node: onnx.NodeProto, a: list[Any], opset: int) -> list[torch.Tensor]:
    at = attrs(node)
    x, axis = a[0], at.get("axis", 0)
    sizes = ints(a[1]) if opset >= 13 and len(a) > 1 and a[1] is not None else at.get("split")
    n = len(node.output)
    if not sizes:
        dim = x.shape[axis]
        step = -(-dim // n) if "num_outputs" in at else dim // n
        sizes = [min(step, dim - i * step) for i in range(n)]
    return list(torch.split(x, list(sizes), axis))


def _slice(node: onnx.NodeProto, a: list[Any], opset: int) -> torch.Tensor:
    x = a[0]
    if opset < 10:
        at = attrs(node)
        starts, ends, axes, steps = at["starts"], at["ends"], at.get("axes"), None
    else:
        starts, ends = ints(a[1]), ints(a[2])
        axes = ints(a[3]) if len(a) > 3 else None
        steps = ints(a[4]) if len(a) > 4 else None
    axes = axes or list(range(len(starts)))
    steps = steps or [1] * len(starts)
    for s, e, ax, st in zip(starts, ends, axes, steps, strict=True):
        ax %= x.dim()
        idx = range(x.shape[ax])[slice(s, e, st)] if x.shape[ax] else range(0)
        if st == 1:
            x = x.narrow(ax, idx.start, len(idx)) if len(idx) else x.narrow(ax, 0, 0)
        else:
            x = x.index_select(ax, torch.arange(idx.start, idx.stop, idx.step, device=x.device))
    return x


def _gather(node: onnx.NodeProto, a: list[Any], opset: int) -> torch.Tensor:
    x, idx = a[0], a[1].long()
    axis = attrs(node).get("axis", 0) % x.dim()
    idx = torch.where(idx < 0, idx + x.shape[axis], idx)
    out = x.index_select(axis, idx.reshape(-1))
    return out.reshape((*x.shape[:axis], *idx.shape, *x.shape[axis + 1:]))


def _shape(node: onnx.NodeProto, a: list[Any], opset: int) -> torch.Tensor:
    at = attrs(node)
    s = torch._shape_as_tensor(a[0])
    return s[at.get("start", 0): at.get("end", a[0].dim())]


def _constant(node: onnx.NodeProto, a: list[Any], opset: int) -> torch.Tensor:
    at = attrs(node)
    if "value" in at:
        return at["value"]
    for key, dtype in (("value_float", torch.float32), ("value_floats", torch.float32),
                       ("value_int", torch.int64), ("value_ints", torch.int64)):
        if key in at:
            return torch.tensor(at[key], dtype=dtype)
    raise NotImplementedError(f"Constant node {node.name!r} with attributes {sorted(at)}")


def _constant_of_shape(node: onnx.NodeProto, a: list[Any], opset: int) -> torch.Tensor:
    value = attrs(node).get("value", torch.zeros(1))
    return torch.full(ints(a[0]), value.reshape(-1)[0].item(), dtype=value.dtype)


def traced_sizes(shape_t: torch.Tensor, values: list[int]) -> list[Any]:
    """Sizes for reshape/expand: 0-dim tensors while tracing an export (so a symbolic batch stays
    symbolic in the exported graph), plain ints otherwise."""
    if not torch.jit.is_tracing():
        return values
    parts = list(shape_t.reshape(-1).unbind(0))
    return [v if v == -1 else p for v, p in zip(values, parts, strict=True)]


def _expand(node: onnx.NodeProto, a: list[Any], opset: int) -> torch.Tensor:
    x, target = a[0], ints(a[1])
    shape = torch.broadcast_shapes(tuple(x.shape), tuple(target))
    if len(target) != len(shape) or not torch.jit.is_tracing():
        return x.expand(shape)
    x = x.reshape((1,) * (len(shape) - x.dim()) + tuple(x.shape))
    sizes = traced_sizes(a[1], target)
    # ONNX broadcasting is two-way: a target 1 against a longer dim keeps that dim (-1 in torch)
    return x.expand(*[-1 if t == 1 and n > 1 else sz for t, n, sz in zip(target, x.shape, sizes, strict=True)])


def _cast(node: onnx.NodeProto, a: list[Any], opset: int) -> torch.Tensor:
    return a[0].to(_DTYPES[attrs(node)["to"]])


def _reduce(fn: str, axes_input_from: int) -> Kernel:
    def kernel(node: onnx.NodeProto, a: list[Any], opset: int) -> torch.Tensor:
        at = attrs(node)
        axes = _axes(node, a, opset, axes_input_from)
        keep = bool(at.get("keepdims", 1))
        x = a[0]
        if not axes:
            if at.get("noop_with_empty_axes", 0):
                return x
            axes = list(range(x.dim()))
        axes = [ax % x.dim() for ax in axes]
        if fn == "max":
            return x.amax(axes, keepdim=keep)
        return getattr(x, fn)(axes, keepdim=keep)

    return kernel


def _global_pool(fn: str) -> Kernel:
    def kernel(node: onnx.NodeProto, a: list[Any], opset: int) -> torch.Tensor:
        dims = list(range(2, a[0].dim()))
        return a[0].mean(dims, keepdim=True) if fn == "mean" else a[0].amax(dims, keepdim=True)

    return kernel


def pad_pairs(pads: Sequence[int]) -> list[int]:
    """ONNX ``[b1, b2, .., e1, e2, ..]`` (first axis first) → F.pad's last-axis-first pairs."""
    n = len(pads) // 2
    out: list[int] = []
    for i in reversed(range(n)):
        out += [int(pads[i]), int(pads[i + n])]
    return out


def auto_pads(auto_pad: str, x: torch.Tensor, kernel: Sequence[int], strides: Sequence[int],
              dilations: Sequence[int]) -> list[int]:
    """Explicit ONNX pads for ``auto_pad`` SAME_UPPER / SAME_LOWER / VALID given the input size."""
    if auto_pad in ("", "NOTSET", "VALID"):
        return [0] * (2 * len(kernel))
    begins, ends = [], []
    for size, k, s, d in zip((int(v) for v in x.shape[2:]), kernel, strides, dilations, strict=True):
        total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
        small, big = total // 2, total - total // 2
        begins.append(big if auto_pad == "SAME_LOWER" else small)
        ends.append(small if auto_pad == "SAME_LOWER" else big)
    return begins + ends


def _pool(kind: str) -> Kernel:
    def kernel(node: onnx.NodeProto, a: list[Any], opset: int) -> torch.Tensor:
        at, x = attrs(node), a[0]
        k = at["kernel_shape"]
        nd = len(k)
        strides = at.get("strides", [1] * nd)
        dil = at.get("dilations", [1] * nd)
        pads = at.get("pads") or auto_pads(at.get("auto_pad", "NOTSET"), x, k, strides, dil)
        ceil = bool(at.get("ceil_mode", 0))
        sym = pads[:nd] == pads[nd:] and all(2 * p <= kk for p, kk in zip(pads[:nd], k, strict=True))
        pad_arg: Any = pads[:nd]
        if not sym:
            fill = -math.inf if kind == "max" else 0.0
            x = F.pad(x, pad_pairs(pads), value=fill)
            pad_arg = 0
        if kind == "max":
            fn = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[nd]
            return fn(x, k, strides, pad_arg, dil, ceil_mode=ceil)
        fn = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[nd]
        include = bool(at.get("count_include_pad", 0)) or not sym
        return fn(x, k, strides, pad_arg, ceil_mode=ceil, count_include_pad=include)

    return kernel


def _pad(node: onnx.NodeProto, a: list[Any], opset: int) -> torch.Tensor:
    at = attrs(node)
    if opset < 11:
        pads, value = at["pads"], at.get("value", 0.0)
    else:
        pads = ints(a[1])
        value = float(a[2]) if len(a) > 2 and a[2] is not None and a[2].numel() else 0.0
    mode = {"constant": "constant", "reflect": "reflect", "edge": "replicate"}[at.get("mode", "constant")]
    pairs = pad_pairs(pads)
    while mode != "constant" and len(pairs) > 2 and pairs[-2:] == [0, 0]:  # torch pads only the last dims
        pairs = pairs[:-2]
    return F.pad(a[0], pairs, mode=mode, value=value if mode == "constant" else None)


def _where(node: onnx.NodeProto, a: list[Any], opset: int) -> torch.Tensor:
    return torch.where(a[0].bool(), a[1], a[2])


def _range(node: onnx.NodeProto, a: list[Any], opset: int) -> torch.Tensor:
    return torch.arange(a[0].item(), a[1].item(), a[2].item(), dtype=a[0].dtype)


def _variadic(fn: Callable[[Any, Any], Any]) -> Kernel:
    def kernel(node: onnx.NodeProto, a: list[Any], opset: int) -> torch.Tensor:
        out = a[0]
        for t in a[1:]:
            out = fn(out, t)
        return out

    return kernel


def _leaky(node: onnx.NodeProto, a: list[Any], opset: int) -> torch.Tensor:
    return F.leaky_relu(a[0], attrs(node).get("alpha", 0.01))


def _hard_sigmoid(node: onnx.NodeProto, a: list[Any], opset: int) -> torch.Tensor:
    at = attrs(node)
    return torch.clamp(a[0] * at.get("alpha", 0.2) + at.get("beta", 0.5), 0.0, 1.0)


def _div(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if not x.is_floating_point() and not y.is_floating_point():
        return torch.div(x, y, rounding_mode="trunc")
    return x / y


KERNELS: dict[str, Kernel] = {
    "Add": _binary(torch.add), "Sub": _binary(torch.sub), "Mul": _binary(torch.mul), "Div": _binary(_div),
    "Pow": _binary(torch.pow), "MatMul": _binary(torch.matmul), "Equal": _binary(torch.eq),
    "Less": _binary(torch.lt), "Greater": _binary(torch.gt), "Max": _variadic(torch.maximum),
    "Min": _variadic(torch.minimum), "Sum": _variadic(torch.add),
    "Relu": _unary(torch.relu), "Sigmoid": _unary(torch.sigmoid), "Tanh": _unary(torch.tanh),
    "Erf": _unary(torch.erf), "Sqrt": _unary(torch.sqrt), "Reciprocal": _unary(torch.reciprocal),
    "Neg": _unary(torch.neg), "Exp": _unary(torch.exp), "Log": _unary(torch.log), "Abs": _unary(torch.abs),
    "Not": _unary(torch.logical_not), "HardSwish": _unary(F.hardswish),
    "Identity": _unary(lambda x: x), "Dropout": _unary(lambda x: x),
    "Clip": _clip, "Softmax": _softmax, "LogSoftmax": lambda n, a, o: _softmax(n, a, o, torch.log_softmax),
    "Gelu": _gelu, "LeakyRelu": _leaky, "HardSigmoid": _hard_sigmoid,
    "Transpose": _transpose, "Flatten": _flatten, "Squeeze": _squeeze, "Unsqueeze": _unsqueeze,
    "Concat": _concat, "Split": _split, "Slice": _slice, "Gather": _gather, "Shape": _shape,
    "Constant": _constant, "ConstantOfShape": _constant_of_shape, "Expand": _expand, "Cast": _cast,
    "ReduceMean": _reduce("mean", 18), "ReduceSum": _reduce("sum", 13), "ReduceMax": _reduce("max", 18),
    "GlobalAveragePool": _global_pool("mean"), "GlobalMaxPool": _global_pool("max"),
    "AveragePool": _pool("avg"), "MaxPool": _pool("max"), "Pad": _pad, "Where": _where, "Range": _range,
}


def functional_layer(node: onnx.NodeProto, a: list[Any]) -> torch.Tensor:
    """Gemm / LayerNormalization / BatchNormalization whose parameters are not constants."""
    at = attrs(node)
    if node.op_type == "Conv":  # weight computed in the graph: a plain function, invisible to pruning
        nd = a[1].dim() - 2
        pads = at.get("pads") or auto_pads(at.get("auto_pad", "NOTSET"), a[0], a[1].shape[2:],
                                          at.get("strides", [1] * nd), at.get("dilations", [1] * nd))
        fn = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[nd]
        return fn(F.pad(a[0], pad_pairs(pads)), a[1], a[2] if len(a) > 2 else None, at.get("strides", 1), 0,
                  at.get("dilations", 1), at.get("group", 1))
    if node.op_type == "Gemm":
        x = a[0].t() if at.get("transA", 0) else a[0]
        w = a[1].t() if at.get("transB", 0) else a[1]
        y = at.get("alpha", 1.0) * (x @ w)
        return y + at.get("beta", 1.0) * a[2] if len(a) > 2 and a[2] is not None else y
    if node.op_type == "BatchNormalization":
        return F.batch_norm(a[0], a[3], a[4], a[1], a[2], False, 0.0, at.get("epsilon", 1e-5))
    axis = at.get("axis", -1) % a[0].dim()
    shape = tuple(a[0].shape[axis:])
    b = a[2].expand(shape) if len(a) > 2 and a[2] is not None else None
    return F.layer_norm(a[0], shape, a[1].expand(shape), b, at.get("epsilon", 1e-5))
