"""Unstructured (magnitude) pruning: zero the smallest weights, per layer or globally.

Works directly on the ONNX initializers with NumPy, so it applies to any graph we can load (no torch
conversion needed). Zeros do not make dense kernels faster — ONNX Runtime's CPU Conv/Gemm do the same
work on a zero as on any other number — and the file keeps its size; the gain is in how well the file
compresses (``compressed_bytes``, zlib level 9), which matters for downloads and storage, and in what
a sparse-aware runtime could exploit. The pass says so in its ``note``.

``torch.nn.utils.prune`` does the same ranking on torch modules; we avoid the ONNX→torch round trip
because a mask on initializers is a few lines of NumPy and keeps the graph byte-for-byte otherwise.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import onnx
from onnx import numpy_helper

from optim.errors import PassUnavailableError
from optim.handle import ModelHandle
from optim.passes._quant.core import QUANTISED_OPS, WEIGHT_OPS, replace_initializers, weight_refs
from optim.passes.base import PassContext, check_literals, check_range, register

FLOAT_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE)
NOTE = (
    "Unstructured sparsity: weights are zeroed but the tensors stay dense, so the file size and the latency "
    "on dense CPU kernels do not change; only the compressed (zip) size shrinks."
)


@dataclass(frozen=True)
class PruneUnstructuredConfig:
    ratio: float = field(default=0.5, metadata={"help": "Fraction of prunable weights set to zero.", "min": 0.0, "max": 0.99})
    scope: Literal["layer", "global"] = field(
        default="layer",
        metadata={
            "help": "layer: each layer loses `ratio` of its weights. global: the smallest weights of the whole "
            "model go first (layers with small weights lose more).",
            "choices": ["layer", "global"],
        },
    )
    include_classifier: bool = field(
        default=False, metadata={"help": "Also prune the last weight layer (the classifier); usually hurts accuracy."}
    )

    def __post_init__(self) -> None:
        check_range("ratio", self.ratio, 0.0, 0.99)
        check_literals(self)


def compressed_size(model_bytes: bytes) -> int:
    """Bytes after zlib level 9 (what a zip/gzip download of the file would take, within a few bytes)."""
    return len(zlib.compress(model_bytes, 9))


def prunable_weights(model: onnx.ModelProto, include_classifier: bool = False) -> dict[str, np.ndarray]:
    """Conv/Gemm/MatMul weight tensors (not biases) by name; the last layer only if asked. Layers inside
    ``If``/``Loop``/``Scan`` bodies count too, with a graph initializer or one of the body's ``Constant`` nodes as
    weight (each body's last layer is its classifier); :func:`write_weights` puts them back."""
    refs = weight_refs(model)
    inits = {t.name: t for t in model.graph.initializer}
    out = {r.name: numpy_helper.to_array(inits[r.name]) for r in refs[: None if include_classifier or not refs else -1]}
    for body in subgraph_weights(model):
        out.update({k: v for k, v in list(body.items())[: None if include_classifier else -1] if k not in out})
    return out


def _bodies(graph: onnx.GraphProto) -> list[onnx.GraphProto]:
    """Every control-flow body below ``graph``, nested ones too."""
    subs = [a.g if a.type == onnx.AttributeProto.GRAPH else g for n in graph.node for a in n.attribute
            for g in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs))]
    return [b for sub in subs for b in (sub, *_bodies(sub))]


def _float_2d(t: onnx.TensorProto) -> bool:
    return t.data_type in FLOAT_TYPES and len(t.dims) >= 2


def why_no_weights(model: onnx.ModelProto) -> str:
    """Why a graph has no FP32 Conv/Gemm/MatMul weight initializers, in words (for a one-sentence refusal)."""
    ops = {n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}" for n in model.graph.node}
    if subgraph_weights(model):
        return ("its layers sit inside If/Loop/Scan bodies, which ONNX Runtime's quantiser does not reach "
                "(unstructured pruning does)")
    quantised = sorted(o for o in ops if o.split(".")[-1] in QUANTISED_OPS)
    if quantised:
        return f"it is already quantised ({', '.join(quantised[:4])}): start from the FP32 model"
    ml = sorted(o for o in ops if o.startswith("ai.onnx.ml."))
    if ml:
        return (f"its model is held in classic-ML operators ({', '.join(o[len('ai.onnx.ml.'):] for o in ml[:4])}), "
                "whose parameters are attributes, not weight tensors")
    return "it has no weight tensors feeding such layers"


def subgraph_weights(model: onnx.ModelProto) -> list[dict[str, np.ndarray]]:
    """Per control-flow body, the weights of its Conv/Gemm/MatMul nodes: graph initializers or its own constants."""
    inits = {t.name: t for t in model.graph.initializer if _float_2d(t)}
    bodies = []
    for body in _bodies(model.graph):
        local = {t.name for t in body.initializer}
        consts = {n.output[0]: a.t for n in body.node if n.op_type == "Constant" for a in n.attribute
                  if a.name == "value" and _float_2d(a.t)}
        found: dict[str, np.ndarray] = {}
        for n in body.node:
            w = n.input[1] if n.op_type in WEIGHT_OPS and len(n.input) > 1 else ""
            t = consts.get(w) if w in consts else (inits.get(w) if w not in local else None)
            if t is not None and w not in found:
                found[w] = numpy_helper.to_array(t)
        if found:
            bodies.append(found)
    return bodies


def write_weights(model: onnx.ModelProto, arrays: dict[str, np.ndarray]) -> None:
    """Overwrite named initializers and body ``Constant`` values (keeping each stored dtype)."""
    replace_initializers(model, arrays)
    for body in _bodies(model.graph):
        for n in body.node:
            if n.op_type == "Constant" and n.output[0] in arrays:
                for a in n.attribute:
                    if a.name == "value":
                        dtype = onnx.helper.tensor_dtype_to_np_dtype(a.t.data_type)
                        a.t.CopyFrom(numpy_helper.from_array(np.asarray(arrays[n.output[0]]).astype(dtype)))


def magnitude_masks(weights: dict[str, np.ndarray], ratio: float, scope: str) -> dict[str, np.ndarray]:
    """Boolean keep-masks zeroing exactly ``round(ratio · n)`` smallest-|w| entries (per layer or overall)."""
    if scope == "layer":
        return {k: _keep_mask(np.abs(w).ravel(), ratio).reshape(w.shape) for k, w in weights.items()}
    flat = np.concatenate([np.abs(w).ravel() for w in weights.values()]) if weights else np.zeros(0)
    keep = _keep_mask(flat, ratio)
    masks, pos = {}, 0
    for k, w in weights.items():
        masks[k] = keep[pos : pos + w.size].reshape(w.shape)
        pos += w.size
    return masks


def _keep_mask(mag: np.ndarray, ratio: float) -> np.ndarray:
    k = int(round(ratio * mag.size))
    keep = np.ones(mag.size, dtype=bool)
    if k > 0:
        keep[np.argpartition(mag, k - 1)[:k]] = False
    return keep


@register(
    "prune_unstructured",
    PruneUnstructuredConfig,
    "Unstructured pruning",
    "Zero the smallest-magnitude weights (per layer or global). Smaller when compressed; not faster on dense kernels.",
)
def run(handle: ModelHandle, config: PruneUnstructuredConfig, ctx: PassContext | None = None) -> ModelHandle:
    ctx = ctx or PassContext()
    model = handle.copy_model()
    weights = prunable_weights(model, config.include_classifier)
    if not weights:
        why = ("the only weight layer is the classifier: enable include_classifier" if prunable_weights(model, True)
               else why_no_weights(model))
        raise PassUnavailableError(f"No prunable FP32 Conv/Gemm/MatMul weights: {why}.")
    ctx.report(0.1, f"unstructured pruning {config.ratio:.0%} ({config.scope})")
    masks = magnitude_masks(weights, config.ratio, config.scope)
    pruned = {k: np.where(masks[k], w, 0).astype(w.dtype) for k, w in weights.items()}
    write_weights(model, pruned)
    ctx.check_cancel()
    total = sum(w.size for w in pruned.values())
    zeros = sum(int((w == 0).sum()) for w in pruned.values())
    layer_sparsity = {k: float((w == 0).mean()) for k, w in pruned.items()}
    ctx.report(0.8, "compressing")
    compressed = compressed_size(model.SerializeToString())
    ctx.report(1.0, "unstructured pruning: done")
    return handle.derive(
        model,
        f"prune_unstructured {config.ratio:g} {config.scope}",
        prune_ratio=config.ratio,
        prune_kind="unstructured",
        prune_scope=config.scope,
        sparsity=zeros / total,
        layer_sparsity=layer_sparsity,
        compressed_bytes=compressed,
        compressed_bytes_before=compressed_size(handle.model_bytes),
        note=NOTE,
    )
