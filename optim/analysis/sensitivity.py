"""Per-layer sensitivity: how much does the model lose when only one layer is compressed?

For every weight layer (Conv, Gemm, MatMul with a constant weight) and every level we perturb that
layer alone, directly on the ONNX initializer, and measure the model on an evaluation subset:

* ``prune`` at 25/50/75 %: the output channels with the smallest L1 norm are zeroed (weights and
  bias) — functionally what structured pruning of that one layer does before any recalibration;
* ``quant`` at 8/4/2 bits: the weight is fake-quantised symmetrically per output channel, the same
  quantiser the ``quantize`` pass uses for simulated bit-widths.

The drop is in accuracy points when the data has labels, otherwise in top-1 agreement with the
unmodified model — or, when its outputs are not class scores (boxes, maps, embeddings), in points of the
worst output's cosine with the unmodified model's; the relative output error is always recorded. Own module: the perturbations are
a few lines of numpy on initializers, and no maintained library runs them over ONNX graphs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
import pandas as pd
from onnx import numpy_helper

from optim.errors import CancelledError, PassUnavailableError
from optim.handle import ModelHandle
from optim.passes._quant.core import fake_quantize, weight_refs

PRUNE_LEVELS = (0.25, 0.5, 0.75)
QUANT_BITS = (8, 4, 2)


@dataclass(frozen=True)
class WeightLayer:
    node: str
    op_type: str
    weight: str  # initializer name
    out_axis: int  # axis of output channels in the stored weight
    bias: str | None
    shape: tuple[int, ...]

    @property
    def params(self) -> int:
        return int(np.prod(self.shape))


def weight_layers(model: onnx.ModelProto, min_params: int = 16) -> list[WeightLayer]:
    """Float Conv / Gemm / MatMul weights stored as initializers (``quant_core.weight_refs``), with bias."""
    inits = {t.name: t for t in model.graph.initializer}
    nodes = {n.name: n for n in model.graph.node}
    out: list[WeightLayer] = []
    for ref in weight_refs(model):
        shape = tuple(int(d) for d in inits[ref.name].dims)
        if int(np.prod(shape)) < min_params:
            continue
        n = nodes.get(ref.node)
        bias = n.input[2] if n is not None and len(n.input) > 2 and n.input[2] in inits else None
        out.append(WeightLayer(ref.node, ref.op_type, ref.name, ref.out_axis, bias, shape))
    return out


def zero_channels(w: np.ndarray, axis: int, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Zero the ``fraction`` of slices along ``axis`` with the smallest L1 norm: (new weight, kept mask)."""
    moved = np.moveaxis(w, axis, 0)
    norms = np.abs(moved.reshape(moved.shape[0], -1)).sum(1)
    n_drop = int(round(fraction * len(norms)))
    keep = np.ones(len(norms), dtype=bool)
    keep[np.argsort(norms, kind="stable")[:n_drop]] = False
    moved = moved * keep.reshape(-1, *([1] * (moved.ndim - 1)))
    return np.moveaxis(moved, 0, axis).astype(w.dtype), keep


def perturb(model: onnx.ModelProto, layer: WeightLayer, kind: str, level: float) -> onnx.ModelProto:
    """A copy of ``model`` with ``layer`` alone pruned (``kind='prune'``) or quantised (``'quant'``)."""
    new = onnx.ModelProto()
    new.CopyFrom(model)
    inits = {t.name: t for t in new.graph.initializer}
    w = numpy_helper.to_array(inits[layer.weight])
    if kind == "prune":
        w2, keep = zero_channels(w, layer.out_axis, level)
        if layer.bias is not None:
            b = numpy_helper.to_array(inits[layer.bias])
            if b.shape == keep.shape:
                inits[layer.bias].CopyFrom(numpy_helper.from_array((b * keep).astype(b.dtype), layer.bias))
    elif kind == "quant":
        w2, _ = fake_quantize(w, int(level), per_channel_axis=layer.out_axis)
    else:
        raise ValueError(f"kind must be 'prune' or 'quant', got {kind!r}")
    inits[layer.weight].CopyFrom(numpy_helper.from_array(w2.astype(w.dtype), layer.weight))
    return new


def _score(logits: np.ndarray, ref: np.ndarray, y: np.ndarray | None) -> tuple[float, float, float]:
    """(metric in %, agreement in %, relative error); metric is accuracy with labels else agreement."""
    pred = logits.argmax(1)
    agree = float((pred == ref.argmax(1)).mean()) * 100
    rel = float(np.linalg.norm(logits - ref) / max(np.linalg.norm(ref), 1e-12))
    metric = float((pred == y).mean()) * 100 if y is not None else agree
    return metric, agree, rel


def analyze(handle: ModelHandle, x: np.ndarray, y: np.ndarray | None = None,
            prune_levels: tuple[float, ...] = PRUNE_LEVELS, quant_bits: tuple[int, ...] = QUANT_BITS,
            progress: Callable[[float, str], None] | None = None,
            should_cancel: Callable[[], bool] | None = None, feeds: dict[str, np.ndarray] | None = None,
            constants: dict[str, np.ndarray] | None = None) -> pd.DataFrame:
    """One row per (layer, kind, level): ``layer, op_type, params, kind, level, metric, drop,
    agreement, rel_error``; ``metric_name`` says what ``metric`` is: accuracy with labels, agreement for
    unlabelled class outputs, else the worst output's cosine with the unmodified model's outputs in %
    (boxes, maps, embeddings: ``optim.measure.fidelity.output_fidelity``). ``feeds``/``constants``: named
    multi-input data's further inputs (``Dataset.feeds``, ``Dataset.constants``), fed with ``x``."""
    from optim.measure.core import predict, predict_outputs
    from optim.measure.fidelity import CLASS_KINDS, output_fidelity, output_kinds

    layers = weight_layers(handle.model)
    if not layers:
        raise PassUnavailableError("Sensitivity analysis found no Conv/Gemm/MatMul layer with stored "
                                   "weights in this model.")
    kinds = output_kinds(handle.model)
    if y is None and not all(k in CLASS_KINDS for k in kinds.values()):
        ref_outs = predict_outputs(handle, x, threads=2, feeds=feeds, constants=constants)
        name, baseline = "output cosine", 100.0

        def score(model: onnx.ModelProto) -> tuple[float, float, float]:
            f = output_fidelity(ref_outs, predict_outputs(model, x, threads=2, feeds=feeds, constants=constants), kinds)
            return f.cosine * 100, np.nan, f.rel_error
    else:
        ref = predict(handle, x, threads=2, feeds=feeds, constants=constants)
        name, baseline = ("accuracy" if y is not None else "agreement"), _score(ref, ref, y)[0]

        def score(model: onnx.ModelProto) -> tuple[float, float, float]:
            return _score(predict(model, x, threads=2, feeds=feeds, constants=constants), ref, y)

    settings = [("prune", float(p)) for p in prune_levels] + [("quant", float(b)) for b in quant_bits]
    rows, total = [], len(layers) * len(settings)
    for i, layer in enumerate(layers):
        for j, (kind, level) in enumerate(settings):
            if should_cancel is not None and should_cancel():
                raise CancelledError("Sensitivity analysis cancelled; nothing was stored.")
            metric, agree, rel = score(perturb(handle.model, layer, kind, level))
            rows.append({"layer": layer.node, "op_type": layer.op_type, "params": layer.params, "kind": kind,
                         "level": level, "metric": metric, "drop": baseline - metric, "agreement": agree,
                         "rel_error": rel})
            if progress is not None:
                what = f"pruned {level * 100:g} %" if kind == "prune" else f"{level:g}-bit"
                progress((i * len(settings) + j + 1) / total, f"{layer.node}: {what}")
    df = pd.DataFrame(rows)
    df.attrs["metric_name"] = name
    df.attrs["baseline"] = baseline
    return df


def ranking(df: pd.DataFrame, kind: str = "quant", level: float | None = None) -> pd.DataFrame:
    """Layers ordered from most to least sensitive (by drop, ties by relative error) at one setting."""
    sub = df[df["kind"] == kind]
    if level is None:
        level = sub["level"].min() if kind == "quant" else sub["level"].max()
    sub = sub[sub["level"] == level]
    return sub.sort_values(["drop", "rel_error"], ascending=False).reset_index(drop=True)
