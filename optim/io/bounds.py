"""Structural bounds on an uploaded ONNX graph, checked right after parsing (before folding, checking or
running it): node count over all sub-graphs, sub-graph nesting depth, inputs per node, attribute sizes.

A 10^5-node chain, a 50k-input ``Sum`` or ``If`` branches nested a thousand deep are a few KB each but
keep onnx's checker, shape inference or ONNX Runtime busy for minutes; real models stay far below these
limits (BERT-large exports ~5k nodes, the largest vision models in our corpus ~3k).
"""

from __future__ import annotations

import onnx

from optim.errors import MalformedModelError

MAX_NODES = 50_000
MAX_DEPTH = 16  # protobuf itself stops parsing at ~24 (its recursion limit of 100 messages)
MAX_NODE_INPUTS = 4096
MAX_ATTR_ITEMS = 1_000_000
_HINT = "Simplify or re-export the model (e.g. with onnxsim or a smaller configuration)."


def check_structure(model: onnx.ModelProto) -> None:
    """MalformedModelError when the graph exceeds a structural bound (message names the bound)."""
    nodes = 0
    pending: list[tuple[onnx.GraphProto, int]] = [(model.graph, 0)]
    pending += [(g, 1) for fn in model.functions for n in fn.node for a in n.attribute
                for g in ([a.g] if a.HasField("g") else []) + list(a.graphs)]
    nodes += sum(len(fn.node) for fn in model.functions)
    while pending:
        graph, depth = pending.pop()
        if depth > MAX_DEPTH:
            raise MalformedModelError(f"The model nests sub-graphs (If/Loop/Scan bodies) more than {MAX_DEPTH} deep. "
                                      + _HINT)
        nodes += len(graph.node)
        if nodes > MAX_NODES:
            raise MalformedModelError(f"The model has more than {MAX_NODES:,} nodes (sub-graphs included). " + _HINT)
        for node in graph.node:
            if len(node.input) > MAX_NODE_INPUTS:
                raise MalformedModelError(f"Node {node.name[:60] or node.op_type!r} has {len(node.input):,} inputs, "
                                          f"over the {MAX_NODE_INPUTS:,} limit. " + _HINT)
            for attr in node.attribute:
                items = len(attr.ints) + len(attr.floats) + len(attr.strings) + len(attr.tensors)
                if items > MAX_ATTR_ITEMS:
                    raise MalformedModelError(f"Node {node.name[:60] or node.op_type!r} attribute {attr.name[:40]!r} "
                                              f"holds {items:,} values, over the {MAX_ATTR_ITEMS:,} limit. " + _HINT)
                pending += [(g, depth + 1) for g in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs)]
