"""Profiled ONNX Runtime kernels (ORT_ENABLE_ALL) → the graph's conv/gemm node each one computes."""

from __future__ import annotations

import re
from collections.abc import Sequence

import onnx

from optim.hardware.model.graphinfo import FUSABLE_OPS

CAST_PREFIX = "InsertedPrecisionFreeCast_"


def map_fused_nodes(model: onnx.ModelProto, profiled: Sequence[str]) -> dict[str, str]:
    """Profiled node name (ORT_ENABLE_ALL) → the graph's conv/gemm node that kernel computes.

    ORT keeps plain node names, prefixes activation fusions with ``fused `` (FusedConv, FusedGemm),
    suffixes the integer kernels it builds from Q/DQ groups with ``_token_N`` (QLinearConv) and
    names NCHWc kernels ``<output of the last fused node>_nchwc`` (prefixed
    ``InsertedPrecisionFreeCast_`` in an FP16 model, whose casts it folded away); we walk from that
    output back through the fused chain (Relu, Add, BN, ...) to the conv/gemm."""
    names = {n.name for n in model.graph.node}
    producer = {o: n for n in model.graph.node for o in n.output}
    mapping: dict[str, str] = {}
    for prof_name in profiled:
        plain = re.sub(r"_token_\d+$", "", prof_name.removeprefix("fused ").removeprefix(CAST_PREFIX))
        if plain in names:
            mapping[prof_name] = plain
            continue
        node = producer.get(prof_name.removeprefix(CAST_PREFIX).removesuffix("_nchwc"))
        while node is not None and node.op_type in FUSABLE_OPS:
            node = next((producer[i] for i in node.input if i in producer
                         and producer[i].op_type not in {"Constant", "Identity"}), None)
        if node is not None:
            mapping[prof_name] = node.name
    return mapping
