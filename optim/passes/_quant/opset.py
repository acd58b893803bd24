"""INT8 on any opset: what ONNX Runtime's quantiser needs from the graph, and a check of what it built.

``QuantizeLinear``/``DequantizeLinear`` exist from opset 10; their ``axis`` attribute (per-channel weight
scales) from opset 13. ORT's tool writes ``axis`` whatever the model's opset, so an opset-9..12 model gave
graphs that fail at load time. We convert such models with onnx's version converter (opset 13, same
semantics) and, where it cannot convert them, fall back to per-tensor scales (opset 10-12) or refuse
(opset 9). Every built INT8 graph is opened in ORT at the levels variants are measured at before it
leaves the pass.
"""

from __future__ import annotations

import onnx
from onnx import version_converter

from optim.errors import OptimError, PassUnavailableError, runtime_reason
from optim.io.load import opens

PER_CHANNEL_OPSET = 13
QDQ_OPSET = 10


def default_opset(model: onnx.ModelProto) -> int:
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=1)


BIAS_SLOTS = frozenset({"Conv", "ConvTranspose", "Gemm"})  # input 2: quantised to int32 by ORT's QOperator


def unshare_biases(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model``, or a copy in which every Conv/Gemm bias initializer that other nodes also read is the bias's own.

    Exporters deduplicate equal constants (the zero-initialised biases of an HF model become one initializer behind
    Identity nodes); ORT's QOperator quantiser turns a bias into an int32 tensor and hands that same tensor to the
    other readers, and a ``QLinearAdd`` with an int32 input does not open (pruned YOLOS).
    """
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    alias = {n.output[0]: n.input[0] for n in g.node if n.op_type == "Identity" and n.input and n.input[0] in inits}
    readers: dict[str, int] = {}
    for n in g.node:
        if n.op_type == "Identity" and n.output[0] in alias:
            continue
        for i in n.input:
            src = alias.get(i, i)
            if src in inits:
                readers[src] = readers.get(src, 0) + 1
    shared = [(k, n) for k, n in enumerate(g.node) if n.op_type in BIAS_SLOTS and len(n.input) > 2
              and readers.get(alias.get(n.input[2], n.input[2]), 0) > 1]
    if not shared:
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    taken = set(inits) | {o for n in g.node for o in n.output}
    for k, _ in shared:
        node = out.graph.node[k]
        src = alias.get(node.input[2], node.input[2])
        name = f"{src}_bias_{k}"
        while name in taken:
            name += "_"
        taken.add(name)
        copy = out.graph.initializer.add()
        copy.CopyFrom(inits[src])
        copy.name = name
        node.input[2] = name
    return out


def quantizable(model: onnx.ModelProto, per_channel: bool) -> tuple[onnx.ModelProto, bool, str]:
    """(model to quantise, per_channel to use, note for the variant: "" when nothing changed). Conv/Gemm biases
    shared with other nodes are given their own initializers (:func:`unshare_biases`)."""
    model = unshare_biases(model)
    opset = default_opset(model)
    if opset >= PER_CHANNEL_OPSET:
        return model, per_channel, ""
    try:
        converted = version_converter.convert_version(model, PER_CHANNEL_OPSET)
        opens(converted)
        return converted, per_channel, f"opset {opset} converted to {PER_CHANNEL_OPSET} for INT8"
    except Exception as exc:  # noqa: BLE001 - the converter raises anything from RuntimeError to IndexError
        reason = runtime_reason(exc, 160)
    if opset >= QDQ_OPSET:
        return model, False, (f"opset {opset}: weights quantised per tensor (per-channel scales need opset "
                              f"{PER_CHANNEL_OPSET}; onnx's converter failed: {reason})")
    raise PassUnavailableError(f"INT8 needs opset {QDQ_OPSET} or newer and this model is opset {opset}, which onnx's "
                               f"version converter could not convert ({reason}); re-export it with opset 13 or newer.")




def checked(build: object, what: str, per_channel: bool) -> onnx.ModelProto:
    """Run ``build(per_channel)``; if ORT's quantiser fails on the graph or ORT cannot open the result, once more
    per tensor; else refuse in one line."""
    first, stage = None, ""
    for pc in dict.fromkeys((per_channel, False)):
        try:
            model = build(pc)  # type: ignore[operator]
        except (OptimError, MemoryError):
            raise
        except Exception as exc:  # noqa: BLE001 - e.g. a ValueError in ORT's per-channel int32-bias scale check
            first, stage = first or exc, stage or "ONNX Runtime's quantiser failed on this graph"
            continue
        try:
            opens(model)
            return model
        except Exception as exc:  # noqa: BLE001 - ORT raises Fail/InvalidGraph/NotImplemented
            first, stage = first or exc, stage or "built a graph ONNX Runtime cannot open"
    raise PassUnavailableError(f"{what}: {stage} ({runtime_reason(first, 200)}); this variant is skipped.")
