"""More ops for the ONNX → torch converter, found in real models (issue 11's corpus).

Channel-free pass-throughs (comparisons and masks HF exports build, ``Resize``/``Upsample``, ``LRN``,
rounding, ``GatherElements``, ``CumSum``) are plain kernels like those of ``onnx2torch_ops``. Ops with
per-channel constants become torch layers so torch-pruning prunes their channels with the conv before them:
``PRelu`` with a ``(1, C, 1, ...)`` slope → ``nn.PReLU``, ``ConvTranspose`` → ``nn.ConvTranspose{1,2,3}d``,
``InstanceNormalization`` → an ``nn.InstanceNorm1d`` over dim 1 of any rank.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from torch import nn

from optim.errors import MissingInputError
from optim.io.shapes import synthesize_inputs
from optim.passes._prune.onnx2torch_ops import attrs, ints

Kernel = Callable[[onnx.NodeProto, list[Any], int], Any]


def _bin(fn: Callable[[Any, Any], Any]) -> Kernel:
    return lambda node, a, opset: fn(a[0], a[1])


def _un(fn: Callable[[Any], Any]) -> Kernel:
    return lambda node, a, opset: fn(a[0])


def _resize(node: onnx.NodeProto, a: list[Any], opset: int) -> torch.Tensor:
    at = attrs(node)
    x = a[0]
    if node.op_type == "Upsample" or opset < 11:
        scales, sizes = (a[1] if len(a) > 1 else at.get("scales")), None
    else:
        scales = a[2] if len(a) > 2 and a[2] is not None and a[2].numel() else None
        sizes = a[3] if len(a) > 3 and a[3] is not None and a[3].numel() else None
    spatial = x.dim() - 2
    mode = at.get("mode", "nearest")
    coord = at.get("coordinate_transformation_mode", "half_pixel" if opset >= 11 else "asymmetric")
    kw: dict[str, Any] = {}
    if sizes is not None:
        kw["size"] = [int(s) for s in ints(sizes)[2:]]
    else:
        sc = [float(s) for s in (scales.reshape(-1).tolist() if isinstance(scales, torch.Tensor) else scales)]
        kw["scale_factor"] = sc[2:]
        kw["recompute_scale_factor"] = False
    if mode == "nearest":  # integer upsampling: half_pixel rounding picks the same pixels as floor
        out_size = kw.get("size") or [int(d * f) for d, f in zip(x.shape[2:], kw["scale_factor"], strict=True)]
        whole = all(int(o) % int(i) == 0 and int(o) >= int(i) for o, i in zip(out_size, x.shape[2:], strict=True))
        torch_mode = "nearest" if coord == "asymmetric" or whole else "nearest-exact"
    else:
        torch_mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[spatial] if mode == "linear" else "bicubic"
        kw["align_corners"] = coord == "align_corners"
    return F.interpolate(x, mode=torch_mode, **kw)


def _lrn(node: onnx.NodeProto, a: list[Any], opset: int) -> torch.Tensor:
    at = attrs(node)
    return F.local_response_norm(a[0], int(at["size"]), alpha=at.get("alpha", 1e-4), beta=at.get("beta", 0.75),
                                 k=at.get("bias", 1.0))


def _prelu(node: onnx.NodeProto, a: list[Any], opset: int) -> torch.Tensor:
    return torch.where(a[0] >= 0, a[0], a[0] * a[1])


def _gather_elements(node: onnx.NodeProto, a: list[Any], opset: int) -> torch.Tensor:
    axis = attrs(node).get("axis", 0)
    idx = a[1].long()
    idx = torch.where(idx < 0, idx + a[0].shape[axis], idx)
    return torch.gather(a[0], axis, idx)


def _cumsum(node: onnx.NodeProto, a: list[Any], opset: int) -> torch.Tensor:
    at = attrs(node)
    axis = int(a[1].reshape(-1)[0])
    x = a[0].flip(axis) if at.get("reverse", 0) else a[0]
    out = torch.cumsum(x, axis)
    if at.get("exclusive", 0):
        out = out - x
    out = out.flip(axis) if at.get("reverse", 0) else out
    return out.to(a[0].dtype)


def _mod(node: onnx.NodeProto, a: list[Any], opset: int) -> torch.Tensor:
    return torch.fmod(a[0], a[1]) if attrs(node).get("fmod", 0) else torch.remainder(a[0], a[1])


EXTRA_KERNELS: dict[str, Kernel] = {
    "And": _bin(torch.logical_and), "Or": _bin(torch.logical_or), "Xor": _bin(torch.logical_xor),
    "GreaterOrEqual": _bin(torch.ge), "LessOrEqual": _bin(torch.le),
    "IsNaN": _un(torch.isnan), "IsInf": _un(torch.isinf), "Sign": _un(torch.sign),
    "Floor": _un(torch.floor), "Ceil": _un(torch.ceil), "Round": _un(torch.round),
    "Softplus": _un(F.softplus), "Softsign": _un(F.softsign), "Sin": _un(torch.sin), "Cos": _un(torch.cos),
    "Elu": lambda n, a, o: F.elu(a[0], attrs(n).get("alpha", 1.0)),
    "Resize": _resize, "Upsample": _resize, "LRN": _lrn, "PRelu": _prelu,
    "GatherElements": _gather_elements, "CumSum": _cumsum, "Mod": _mod,
}


class InstanceNorm(nn.InstanceNorm1d):
    """InstanceNormalization over dim 1 of a tensor of any rank (ONNX semantics), with affine scale/bias."""

    def _check_input_dim(self, x: torch.Tensor) -> None:  # noqa: D401 - torch hook
        return None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.instance_norm(x, weight=self.weight, bias=self.bias, eps=self.eps)


def extra_layer(node: onnx.NodeProto, const: Callable[[str], torch.Tensor | None]) -> nn.Module | None:
    """A torch layer for ``node`` when its per-channel parameters are constants (None: use a kernel)."""
    at = attrs(node)
    if node.op_type == "PRelu":
        slope = const(node.input[1])
        dims = [] if slope is None else list(slope.shape)
        while dims and dims[0] == 1 and len(dims) > 1:
            dims = dims[1:]
        if slope is None or len(dims) < 2 or any(d != 1 for d in dims[1:]):
            return None  # a scalar or last-axis slope: the kernel broadcasts it as ONNX does
        layer = nn.PReLU(dims[0])
        layer.weight.data.copy_(slope.float().reshape(-1))
        return layer
    if node.op_type == "InstanceNormalization":
        scale, bias = const(node.input[1]), const(node.input[2])
        if scale is None or bias is None:
            return None
        layer = InstanceNorm(scale.numel(), eps=at.get("epsilon", 1e-5), affine=True)
        layer.weight.data.copy_(scale.float())
        layer.bias.data.copy_(bias.float())
        return layer
    if node.op_type == "ConvTranspose":
        return _conv_transpose(node, at, const)
    return None


def _conv_transpose(node: onnx.NodeProto, at: dict[str, Any], const: Callable[[str], torch.Tensor | None]
                    ) -> nn.Module | None:
    w = const(node.input[1])
    if w is None or at.get("auto_pad", "NOTSET") not in ("NOTSET", "") or "output_shape" in at:
        return None
    nd = w.dim() - 2
    pads = at.get("pads", [0] * 2 * nd)
    if pads[:nd] != pads[nd:]:
        return None
    groups = at.get("group", 1)
    b = const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    cls = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}[nd]
    layer = cls(w.shape[0], w.shape[1] * groups, tuple(w.shape[2:]), stride=at.get("strides", [1] * nd),
                padding=tuple(pads[:nd]), output_padding=at.get("output_padding", [0] * nd), groups=groups,
                dilation=at.get("dilations", [1] * nd), bias=b is not None)
    layer.weight.data.copy_(w.float())
    if b is not None:
        layer.bias.data.copy_(b.float())
    return layer


EXTRA_LAYER_OPS = frozenset({"PRelu", "InstanceNormalization", "ConvTranspose"})


def _conv_transpose_fn(node: onnx.NodeProto, a: list[Any], opset: int) -> torch.Tensor:
    """ConvTranspose whose weight is computed in the graph (or with asymmetric pads): a plain function."""
    at = attrs(node)
    nd = a[1].dim() - 2
    fn = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[nd]
    y = fn(a[0], a[1], a[2] if len(a) > 2 else None, at.get("strides", [1] * nd), 0,
           at.get("output_padding", [0] * nd), at.get("group", 1), at.get("dilations", [1] * nd))
    pads = at.get("pads", [0] * 2 * nd)
    index = [slice(None), slice(None)] + [slice(pads[i], y.shape[2 + i] - pads[nd + i]) for i in range(nd)]
    return y[tuple(index)]


def _instance_norm_fn(node: onnx.NodeProto, a: list[Any], opset: int) -> torch.Tensor:
    return F.instance_norm(a[0], weight=a[1], bias=a[2], eps=attrs(node).get("epsilon", 1e-5))


EXTRA_KERNELS.update({"ConvTranspose": _conv_transpose_fn, "InstanceNormalization": _instance_norm_fn})


_NP = {1: np.float32, 6: np.int32, 7: np.int64, 9: np.bool_, 10: np.float16, 11: np.float64}


def example_inputs(model: onnx.ModelProto, batch: int = 1, seed: int = 0) -> list[torch.Tensor]:
    """Inputs for the graph's (non-initializer) inputs as ``synthesize_inputs`` makes them (token ids within the
    vocabulary, masks of ones); where it cannot, random floats / zeros with symbolic dims = ``batch``/1."""
    try:
        return [torch.from_numpy(np.ascontiguousarray(v)) for v in synthesize_inputs(model, batch, seed).values()]
    except MissingInputError:
        pass
    inits = {t.name for t in model.graph.initializer}
    rng = np.random.default_rng(seed)
    out = []
    for vi in (v for v in model.graph.input if v.name not in inits):
        tt = vi.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else (batch if k == 0 else 1)
                for k, d in enumerate(tt.shape.dim)]
        dtype = _NP.get(tt.elem_type, np.float32)
        arr = rng.standard_normal(dims) if np.issubdtype(dtype, np.floating) else np.zeros(dims)
        out.append(torch.from_numpy(np.asarray(arr, dtype=dtype)))
    return out
