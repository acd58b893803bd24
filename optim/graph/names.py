"""The one name of a graph node: what every per-node table (summary, estimate, measured profile, graph diff)
keys its rows by.

ONNX does not require node names and many exported graphs (old zoo models, hand-built graphs) leave
them empty; ONNX Runtime's kernels then carry names of their own, so a node must have a stable name
before its kernels can be traced back to it. :func:`name_nodes` gives every unnamed node its key once,
when a :class:`optim.handle.ModelHandle` is made; :func:`node_key` is the same key for a bare graph that
no handle wraps (a proto handed straight to the per-layer profiler).
"""

from __future__ import annotations

import onnx


def node_key(node: onnx.NodeProto, index: int) -> str:
    """``node``'s name, or ``<op_type>_<index>`` (its position in the graph) when it has none."""
    return node.name or f"{node.op_type}_{index}"


def node_keys(graph: onnx.GraphProto) -> list[str]:
    """:func:`node_key` of every node of ``graph``, in order."""
    return [node_key(n, i) for i, n in enumerate(graph.node)]


def name_nodes(model: onnx.ModelProto) -> int:
    """Name every unnamed node of ``model``'s main graph by its :func:`node_key` (in place; a key another
    node already uses as its name gets a ``#k`` suffix). Returns how many nodes were named."""
    taken = {n.name for n in model.graph.node if n.name}
    named = 0
    for i, n in enumerate(model.graph.node):
        if n.name:
            continue
        base = key = node_key(n, i)
        k = 1
        while key in taken:
            key, k = f"{base}#{k}", k + 1
        n.name = key
        taken.add(key)
        named += 1
    return named
