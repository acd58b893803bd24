"""Per-layer time at the level a model really runs at: ORT kernels mapped back to the ONNX nodes they came from.

With graph optimisations on (the level latency is measured at, "all" by default) ONNX Runtime fuses and
renames nodes: Conv+Relu becomes one ``FusedConv``/NCHWc ``Conv`` named after the Relu's output tensor
(``/Relu_output_0_nchwc``), DequantizeLinear → Conv → QuantizeLinear becomes one ``QLinearConv`` named
``/conv1/Conv_token_1``, Gemm+Relu becomes ``FusedGemm`` named ``fused /fc/Gemm``, and layout kernels
(``ReorderInput``/``ReorderOutput`` for NCHWc, ``Transpose`` for NHWC int8 convs) are inserted. Profiling with
optimisations off keeps the names but times a different program (every DequantizeLinear, FP32 convs).

So this module profiles at the real level and maps each runtime kernel to one ONNX node, using the optimised
graph ORT writes with ``SessionOptions.optimized_model_filepath`` from the very session that is profiled
(ORT's generated names such as ``ReorderOutput_token_5`` differ between two sessions of the same model):

1. its name is an ONNX node name (after dropping ORT's ``"fused "`` / ``InsertedPrecisionFreeCast_`` prefixes);
2. else one of its outputs is an ONNX tensor (fusion keeps the last source node's output) → that producer;
3. else the longest ONNX node or tensor name that prefixes its name (``_nchwc``, ``_token_N`` suffixes), or
   failing that appears in it between ``_`` delimiters;
4. the node found is walked up through ops the kernel absorbed (activations, BN, Add, Q/DQ) to the node of
   the kernel's own family (a ``QLinearConv``/``FusedConv`` lands on the ``Conv``);
5. a QuantizeLinear/DequantizeLinear that still runs alone is attributed to the compute node it serves
   (DQ → its consumer, Q → its producer, through Q/DQ chains; past a fused activation to the kernel that
   ran it) — the kernel list keeps it visible;
6. a kernel with no traceable name (a function body ORT expanded, ``Div_150``) takes the node of the first
   named kernel downstream (a kernel missing from the saved graph: of the next mapped kernel it ran before);
   layout kernels take the node of a neighbouring (compute-first) kernel, else
   become the row ``runtime: layout``; anything else unmapped becomes ``runtime: other``.

No maintained library maps ORT profile events back to source nodes (ORT's own tools only aggregate by op
type), hence this module. Kernel times are only regrouped, so ``node_sum_ms``/``run_ms``/``coverage`` are
those of the raw profile.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import onnx
import onnxruntime as ort
import pandas as pd

from optim.errors import ConfigError
from optim.graph.names import node_keys
from optim.measure.session import ModelLike, make_session, model_proto
from optim.measure.timing import NodeProfile, parse_profile, profile_nodes, run_profiled

LAYOUT_ROW = "runtime: layout"
OTHER_ROW = "runtime: other"
LAYOUT_OPS = {"ReorderInput", "ReorderOutput", "Transpose", "MemcpyToHost", "MemcpyFromHost"}
QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}
ORT_PREFIXES = ("fused ", "InsertedPrecisionFreeCast_")  # name prefixes ORT gives fused nodes / FP16 fallbacks
ABSORBED_OPS = QDQ_OPS | {"Relu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "LeakyRelu", "Tanh", "Add", "Mul",
                          "BatchNormalization", "Sum", "Identity", "Cast"}  # fmt: skip
_FAMILIES = {
    "Conv": {"Conv"}, "ConvTranspose": {"ConvTranspose"},
    "Gemm": {"Gemm", "MatMul"}, "MatMul": {"MatMul", "Gemm"},
}  # fmt: skip
_KERNEL_BASE = {"QGemm": "Gemm", "ConvInteger": "Conv", "MatMulInteger": "MatMul", "MatMulIntegerToFloat": "MatMul",
                "DynamicQuantizeMatMul": "MatMul", "MatMulNBits": "MatMul", "NhwcFusedConv": "Conv",
                "NhwcConv": "Conv", "FusedMatMul": "MatMul", "QLinearGlobalAveragePool": "GlobalAveragePool"}  # fmt: skip


def kernel_family(op_type: str) -> set[str]:
    """ONNX op types a runtime kernel of ``op_type`` can stand for (``QLinearConv`` → {Conv})."""
    base = _KERNEL_BASE.get(op_type)
    if base is None:
        base = op_type
        for prefix in ("QLinear", "Fused"):
            if base.startswith(prefix) and len(base) > len(prefix):
                base = base[len(prefix):]
    return _FAMILIES.get(base, {base})


class _Graph:
    """Name/tensor indexes of the ONNX graph the user sees."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.nodes = dict(zip(node_keys(model.graph), model.graph.node, strict=True))
        self.producer = {t: name for name, n in self.nodes.items() for t in n.output if t}
        self.consumers: dict[str, list[str]] = {}
        for name, n in self.nodes.items():
            for t in n.input:
                self.consumers.setdefault(t, []).append(name)
        self.keys = sorted(set(self.nodes) | set(self.producer), key=len, reverse=True)

    def op(self, name: str) -> str:
        return self.nodes[name].op_type

    def producers_of(self, name: str) -> list[str]:
        return [self.producer[t] for t in self.nodes[name].input if t in self.producer]

    def consumers_of(self, name: str) -> list[str]:
        return [c for t in self.nodes[name].output for c in self.consumers.get(t, [])]


def _bounded(name: str, key: str, at: int) -> bool:
    end = at + len(key)
    return (at == 0 or name[at - 1] in "_ ") and (end == len(name) or name[end] in "_/:.")


def _locate(g: _Graph, kernel: str, outputs: list[str]) -> str | None:
    """Rules 1–3: the ONNX node a kernel's name or outputs point at (the last fused source)."""
    name = kernel
    for prefix in ORT_PREFIXES:
        name = name[len(prefix):] if name.startswith(prefix) else name
    if name in g.nodes:
        return name
    for t in outputs:
        if t in g.producer:
            return g.producer[t]
    for anywhere in (False, True):  # a prefix first (``_nchwc``/``_token_N`` suffixes), then anywhere
        for key in g.keys:
            at = name.find(key) if anywhere else (0 if name.startswith(key) else -1)
            if at >= 0 and _bounded(name, key, at):
                return key if key in g.nodes else g.producer[key]
    return None


def _walk_to_family(g: _Graph, node: str, family: set[str], max_steps: int = 8) -> str:
    """Rule 4: from the last fused source up through absorbed ops to the node of the kernel's family."""
    cur = node
    for _ in range(max_steps):
        if g.op(cur) in family or g.op(cur) not in ABSORBED_OPS:
            break
        ups = g.producers_of(cur)
        if not ups:
            break
        cur = next((u for u in ups if g.op(u) in family), ups[0])
    return cur if g.op(cur) in family else node


def _through_qdq(g: _Graph, node: str, forward: bool) -> str | None:
    """The first non-Q/DQ node reached from ``node`` following consumers (forward) or producers."""
    seen, frontier = {node}, [node]
    while frontier:
        cur = frontier.pop(0)
        for nxt in g.consumers_of(cur) if forward else g.producers_of(cur):
            if nxt in seen:
                continue
            if g.op(nxt) not in QDQ_OPS:
                return nxt
            seen.add(nxt)
            frontier.append(nxt)
    return None


def _serve(g: _Graph, node: str) -> str:
    """Rule 5: a lone Q/DQ kernel → the compute node it serves."""
    if g.op(node) not in QDQ_OPS:
        return node
    first = g.op(node) == "DequantizeLinear"
    return _through_qdq(g, node, forward=first) or _through_qdq(g, node, forward=not first) or node


def _settle_qdq(g: _Graph, out: dict[str, str], kernel_ops: dict[str, str]) -> None:
    """A lone Q/DQ served to a node that never ran itself (a Relu fused into its Conv) moves up to the
    node that did run, through the absorbed ops between them."""
    ran = {out[k] for k, op in kernel_ops.items() if op not in QDQ_OPS and out.get(k) in g.nodes}
    for k, op in kernel_ops.items():
        cur = out.get(k)
        if op not in QDQ_OPS or cur not in g.nodes or cur in ran:
            continue
        for _ in range(8):
            ups = g.producers_of(cur)
            if g.op(cur) not in ABSORBED_OPS or not ups:
                break
            cur = next((u for u in ups if u in ran), ups[0])
            if cur in ran:
                out[k] = cur
                break


def _borrow_downstream(out: dict[str, str], opt: list[onnx.NodeProto], used: dict[str, list[onnx.NodeProto]]) -> None:
    """Kernels without a traceable name (an op's function body ORT expanded, e.g. an FP16 Softmax into
    ReduceMax/Sub/Exp/ReduceSum/Div ``Div_150``) take the node of the first named kernel downstream."""
    for n in opt:
        if out.get(n.name) != OTHER_ROW:
            continue
        seen, frontier = {n.name}, [n]
        while frontier and out[n.name] == OTHER_ROW and len(seen) < 64:
            cur = frontier.pop(0)
            for c in (c for t in cur.output for c in used.get(t, [])):
                if c.name in seen:
                    continue
                seen.add(c.name)
                if out.get(c.name) not in (None, OTHER_ROW):
                    out[n.name] = out[c.name]
                    break
                frontier.append(c)


def map_kernels(model: onnx.ModelProto, optimized: onnx.ModelProto) -> dict[str, str]:
    """Runtime kernel name (as profiled) → ONNX node name, or ``runtime: layout`` / ``runtime: other``."""
    g = _Graph(model)
    opt = list(optimized.graph.node)
    out: dict[str, str] = {}
    layout = []
    made = {t: n for n in opt for t in n.output}
    used: dict[str, list[onnx.NodeProto]] = {}
    for n in opt:
        for t in n.input:
            used.setdefault(t, []).append(n)
    for n in opt:
        if n.op_type in LAYOUT_OPS and n.name not in g.nodes:
            layout.append(n)
            continue
        hit = _locate(g, n.name, list(n.output))
        out[n.name] = OTHER_ROW if hit is None else _serve(g, _walk_to_family(g, hit, kernel_family(n.op_type)))
    _settle_qdq(g, out, {n.name: n.op_type for n in opt})
    _borrow_downstream(out, opt, used)
    heavy = {"Conv", "ConvTranspose", "Gemm", "MatMul"}
    for n in layout:  # after the others: they borrow a neighbouring compute kernel's node
        ups = [made[t] for t in n.input if t in made]
        downs = [c for t in n.output for c in used.get(t, [])]
        order = ups + downs if n.op_type == "ReorderOutput" else downs + ups
        order.sort(key=lambda m: not (kernel_family(m.op_type) & heavy))  # stable: compute kernels first
        hits = [out[m.name] for m in order if out.get(m.name) not in (None, LAYOUT_ROW, OTHER_ROW)]
        out[n.name] = hits[0] if hits else LAYOUT_ROW
    return out


def _session(
    handle: ModelLike, threads: int, opt_level: str, providers: list[str] | None, tmp: Path
) -> ort.InferenceSession:
    """A profiling session that also saves the graph it optimised, so kernel names match that graph."""
    return make_session(handle, threads=threads, opt_level=opt_level, providers=providers,
                        profile_prefix=tmp / "ort", optimized_path=tmp / "optimized.onnx")


def execution_order(events: list[dict[str, Any]]) -> list[str]:
    """Kernel names of the last profiled run, in the order they ran."""
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    if not runs:
        return []
    last = max(runs, key=lambda e: float(e["ts"]))
    lo, hi = float(last["ts"]), float(last["ts"]) + float(last["dur"])
    nodes = [e for e in events if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time")
             and lo <= float(e["ts"]) <= hi]  # fmt: skip
    return [e["name"][: -len("_kernel_time")] for e in sorted(nodes, key=lambda e: float(e["ts"]))]


def borrow_in_order(mapping: dict[str, str], order: list[str]) -> dict[str, str]:
    """Kernels absent from the saved optimised graph (ORT expands some ops' function bodies after saving it,
    e.g. an FP16 Softmax into ReduceMax/Sub/Exp/ReduceSum/Div) take the node of the next mapped kernel run."""
    out = dict(mapping)
    for i, k in enumerate(order):
        if k in mapping:
            continue
        nxt = next((out[n] for n in order[i + 1:] if out.get(n, OTHER_ROW) not in (OTHER_ROW, LAYOUT_ROW)), None)
        if nxt is not None:
            out[k] = nxt
    return out


def _kernel_list(ops: pd.Series) -> str:
    counts = ops.value_counts(sort=False)
    return " + ".join(op if k == 1 else f"{op} ×{k}" for op, k in counts.items())


def group_profile(model: onnx.ModelProto, kernels: pd.DataFrame, mapping: dict[str, str]) -> pd.DataFrame:
    """Kernel rows (node, op_type, ms, provider) summed per ONNX node; ``kernels`` names what ran."""
    ops = {k: n.op_type for k, n in zip(node_keys(model.graph), model.graph.node, strict=True)}
    df = kernels.assign(layer=kernels["node"].map(lambda k: mapping.get(k, k if k in ops else OTHER_ROW)))
    rows = []
    for layer, grp in df.groupby("layer", sort=False):
        rows.append({"node": layer, "op_type": ops.get(layer, "(runtime)"), "ms": float(grp["ms"].sum()),
                     "provider": ",".join(sorted(set(grp["provider"]))),
                     "kernels": _kernel_list(grp["op_type"]), "kernel_nodes": ", ".join(grp["node"])})  # fmt: skip
    table = pd.DataFrame(rows, columns=["node", "op_type", "ms", "provider", "kernels", "kernel_nodes"])
    total = float(table["ms"].sum())
    table.insert(3, "share", table["ms"] / total if total > 0 else 0.0)
    return table.sort_values(["ms", "node"], ascending=[False, True], kind="stable").reset_index(drop=True)


def profile_layers(
    handle: ModelLike, threads: int = 1, opt_level: str = "all", runs: int = 20, providers: list[str] | None = None
) -> NodeProfile:
    """Per-ONNX-node time of what ORT runs at ``opt_level`` (table: node, op_type, ms, share, provider,
    kernels, kernel_nodes), slowest first; with ``opt_level="disable"`` every kernel is its own node."""
    if runs < 1:
        raise ConfigError(f"runs: need at least 1 profiled run, got {runs}.")
    model = model_proto(handle)
    if opt_level == "disable":
        prof = profile_nodes(handle, threads=threads, opt_level=opt_level, runs=runs, providers=providers)
        return replace(prof, table=group_profile(model, prof.table, {}))
    with tempfile.TemporaryDirectory(prefix="optim_layers_") as tmp:
        sess = _session(handle, threads, opt_level, providers, Path(tmp))
        optimized = onnx.load(str(Path(tmp) / "optimized.onnx"), load_external_data=False)
        events = run_profiled(sess, model, runs)
    prof = parse_profile(events, skip_runs=1)
    mapping = borrow_in_order(map_kernels(model, optimized), execution_order(events))
    table = group_profile(model, prof.table, mapping)
    return replace(prof, table=table, threads=threads, opt_level=opt_level)
