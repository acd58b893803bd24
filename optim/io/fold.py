"""Fold constant sub-graphs of an ONNX model into initializers (used by :mod:`optim.io.load`).

Some exporters produce weights with nodes (``Constant`` → ``Transpose`` → ``Reshape`` → ``Conv``)
instead of storing them as initializers; then a parameter count over initializers misses them. We
turn ``Constant`` nodes into initializers and evaluate every default-domain node whose inputs are all
constants with onnx's reference evaluator (``onnx.reference``), node by node.

Choices, on purpose:
* ``DequantizeLinear`` is *not* folded: it marks a weight stored in low precision (int8/int4); folding
  would store it as float32 (4× larger) and hide the quantization that summary and size report at the
  stored dtype. Chains *before* it (e.g. ``Constant(int8) → Transpose → DequantizeLinear``) are folded.
* Random generators, nodes with sub-graphs, custom domains and nodes feeding a graph output stay.
* A fold is sized *before* it is evaluated (ONNX shape inference with the small integer inputs' values,
  :func:`predicted_bytes`) and skipped when it would grow past 16 MB and ``max_growth`` times its inputs,
  or past 1 GiB at all (``ConstantOfShape``/``Expand``/``Range``/``Tile`` could otherwise take gigabytes
  from a few bytes); ops that inference cannot size are folded only when they cannot grow.

onnxruntime's optimizer folds too, but only inside a session (its optimized-model dump also fuses and
renames nodes); onnx itself ships no constant folder, hence this small module.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference
from onnx.reference import ReferenceEvaluator

_NOT_FOLDED = {
    "DequantizeLinear", "RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
    "Multinomial", "Bernoulli", "If", "Loop", "Scan",
}
_BIG = 16 * 2**20
MAX_FOLD_BYTES = 1 << 30  # no fold grows a tensor past this, whatever its inputs
# ops whose output is never larger than their inputs: folded even when inference cannot size them
_NON_GROWING = {"Transpose", "Reshape", "Cast", "Identity", "Squeeze", "Unsqueeze", "Flatten", "Shape", "Size",
                "Neg", "Abs", "Relu", "Sqrt", "Exp", "Log", "Sigmoid", "Tanh", "Floor", "Ceil", "Round", "Not",
                "Sign", "Reciprocal", "Slice", "QuantizeLinear"}


class _LazyConstants(dict):
    """name → array; initializers are converted to NumPy only when a fold needs them (saves memory)."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        super().__init__()
        self._protos = {t.name: t for t in graph.initializer if t.data_location != onnx.TensorProto.EXTERNAL}

    def __contains__(self, name: object) -> bool:
        return dict.__contains__(self, name) or name in self._protos

    def __missing__(self, name: str) -> np.ndarray:
        value = numpy_helper.to_array(self._protos[name])
        self[name] = value
        return value


def _constant_value(node: onnx.NodeProto) -> np.ndarray | None:
    attrs = {a.name: a for a in node.attribute}
    if "value" in attrs:
        return numpy_helper.to_array(attrs["value"].t)
    if "value_float" in attrs:
        return np.array(attrs["value_float"].f, dtype=np.float32)
    if "value_floats" in attrs:
        return np.array(list(attrs["value_floats"].floats), dtype=np.float32)
    if "value_int" in attrs:
        return np.array(attrs["value_int"].i, dtype=np.int64)
    if "value_ints" in attrs:
        return np.array(list(attrs["value_ints"].ints), dtype=np.int64)
    return None  # sparse_value / string values: left as nodes


def _opset(model: onnx.ModelProto) -> int:
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=1)


def _used_names(graph: onnx.GraphProto) -> set[str]:
    used = {o.name for o in graph.output}
    for node in graph.node:
        used.update(node.input)
        for attr in node.attribute:
            for sub in [attr.g, *attr.graphs] if attr.type in (5, 10) else []:
                used.update(_used_names(sub))
                used.update(i for n in sub.node for i in n.input)
    return used


def fold_constants(model: onnx.ModelProto, max_growth: float = 4.0) -> int:
    """Fold constant sub-graphs of ``model`` (in place) into initializers; returns nodes removed."""
    graph = model.graph
    consts = _LazyConstants(graph)
    outputs = {o.name for o in graph.output}
    opset = _opset(model)
    keep: list[onnx.NodeProto] = []
    new_inits: dict[str, np.ndarray] = {}
    removed = 0
    for node in graph.node:
        value = _constant_value(node) if node.op_type == "Constant" and node.domain in ("", "ai.onnx") else None
        if value is not None and node.output[0] not in outputs:
            consts[node.output[0]] = new_inits[node.output[0]] = value
            removed += 1
            continue
        folded = _try_fold(node, consts, outputs, opset, max_growth)
        if folded is None:
            keep.append(node)
            continue
        consts.update(folded)
        new_inits.update(folded)
        removed += 1
    if not removed:
        return 0
    del graph.node[:]
    graph.node.extend(keep)
    for name, arr in new_inits.items():
        graph.initializer.append(numpy_helper.from_array(np.asarray(arr), name))
    _drop_unused_initializers(graph)
    return removed


def _try_fold(node: onnx.NodeProto, consts: _LazyConstants, outputs: set[str], opset: int,
              max_growth: float) -> dict[str, np.ndarray] | None:
    if node.domain not in ("", "ai.onnx") or node.op_type in _NOT_FOLDED or node.op_type == "Constant":
        return None
    inputs = [i for i in node.input if i]
    if not inputs or any(i not in consts for i in inputs) or any(o in outputs for o in node.output):
        return None
    if any(a.type in (5, 10) for a in node.attribute):
        return None
    in_bytes = sum(consts[i].nbytes for i in inputs)
    predicted = predicted_bytes(node, {i: consts[i] for i in inputs}, opset)
    if predicted is None and node.op_type not in _NON_GROWING:
        return None  # size unknown before evaluating: never allocate blind
    if predicted is not None and not _fits(predicted, in_bytes, max_growth):
        return None
    try:
        ref = ReferenceEvaluator(node, opsets={"": opset})
        results = ref.run(None, {i: consts[i] for i in inputs})
    except Exception:  # noqa: BLE001 - anything the reference cannot evaluate just stays a node
        return None
    if not _fits(sum(np.asarray(r).nbytes for r in results), in_bytes, max_growth):
        return None
    return {name: np.asarray(r) for name, r in zip(node.output, results, strict=False) if name}


def _fits(out_bytes: int, in_bytes: int, max_growth: float) -> bool:
    if out_bytes <= in_bytes:
        return True
    return out_bytes <= MAX_FOLD_BYTES and (out_bytes <= _BIG or out_bytes <= max_growth * in_bytes)


def predicted_bytes(node: onnx.NodeProto, inputs: dict[str, np.ndarray], opset: int) -> int | None:
    """Bytes ``node`` would produce, from ONNX shape inference on its inputs' shapes and small
    values (so ConstantOfShape/Expand/Range/Tile/Pad are sized *before* evaluating); None when unknown."""
    try:
        schema = onnx.defs.get_schema(node.op_type, opset, "")
        types = {n: helper.make_tensor_type_proto(helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
                 for n, a in inputs.items()}
        data = {n: numpy_helper.from_array(a, n) for n, a in inputs.items() if a.dtype.kind in "iubf" and a.size <= 4096}
        out = shape_inference.infer_node_outputs(schema, node, types, data)
    except Exception:  # noqa: BLE001 - no schema, unsupported dtype, inference error: unknown
        return None
    total = 0
    for name in (o for o in node.output if o):
        tt = out.get(name)
        if tt is None or not tt.tensor_type.HasField("shape"):
            return None
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tt.tensor_type.shape.dim]
        if any(d < 0 for d in dims):
            return None
        try:
            item = np.dtype(helper.tensor_dtype_to_np_dtype(tt.tensor_type.elem_type)).itemsize
        except (KeyError, TypeError, ValueError):
            item = 8
        total += int(np.prod(dims, dtype=object)) * item
    return total


def _drop_unused_initializers(graph: onnx.GraphProto) -> None:
    used = _used_names(graph)
    kept = [t for t in graph.initializer if t.name in used]
    if len(kept) != len(graph.initializer):
        dropped = {t.name for t in graph.initializer} - {t.name for t in kept}
        del graph.initializer[:]
        graph.initializer.extend(kept)
        inputs = [i for i in graph.input if i.name not in dropped]
        del graph.input[:]
        graph.input.extend(inputs)


def lift_ir3(model: onnx.ModelProto) -> bool:
    """IR < 4 requires every initializer to be listed in ``graph.input``; lift such a model to IR 4 (in place).

    IR 4 only relaxes that rule, so the opsets (the semantics) stay; initializers stop being graph inputs,
    which lets folded constants be added as plain initializers and lets ONNX Runtime treat weights as
    constants (fusions, constant folding) instead of overridable inputs. Returns whether it changed.
    """
    if model.ir_version >= 4:
        return False
    inits = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    model.ir_version = 4
    return True
