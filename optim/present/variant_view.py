"""Per-layer view of one stored variant against the baseline: time, bytes, MACs, graph changes, roofline.

Joins the store's per-node rows (measured ORT profile + summary columns) with the hardware estimate
of the chosen target, and diffs the two ONNX graphs. Used by the Layers page and the HTML report.
Sweeps profile each variant at its own optimisation level with runtime kernels mapped back to ONNX nodes
(``optim.measure.layer_profile``; column ``kernels`` says what ran); older stores profiled with optimisations off.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from optim.analysis.targets import artifact_handle
from optim.graph.names import node_keys
from optim.handle import ModelHandle
from optim.present.views import graph_diff

EST_TIME_COLUMNS = ("est_ms", "ms", "time_ms", "latency_ms", "total_ms")


def handle_of(artifact: str) -> ModelHandle:
    """The ONNX artifact of a variant as a handle (:func:`optim.analysis.targets.artifact_handle`)."""
    return artifact_handle(artifact)


def graph_ops(artifact: str) -> list[tuple[str, str]]:
    graph = handle_of(artifact).model.graph
    return [(k, n.op_type) for k, n in zip(node_keys(graph), graph.node, strict=True)]


def graph_changes(base_artifact: str, var_artifact: str) -> dict[str, Any]:
    """Nodes lost/gained (after matching renamed nodes by op type and order) and op-count changes."""
    base, var = graph_ops(base_artifact), graph_ops(var_artifact)
    names = align_nodes(pd.DataFrame(base, columns=["node", "op_type"]), pd.DataFrame(var, columns=["node", "op_type"]))
    return graph_diff(base, [(names.get(n, n), op) for n, op in var])


@lru_cache(maxsize=16)
def runtime_fusion(artifact: str) -> pd.DataFrame:
    """Kernels ONNX Runtime runs with all optimisations vs the graph's nodes, per op type (measured)."""
    from optim.measure import core as measure

    prof = measure.profile_nodes(handle_of(artifact), opt_level="all", runs=5).table
    graph = pd.Series([op for _, op in graph_ops(artifact)]).value_counts().rename("graph nodes")
    kernels = prof["op_type"].value_counts().rename("runtime kernels")
    out = pd.concat([graph, kernels], axis=1).fillna(0).astype(int)
    out.index.name = "op_type"
    return out.reset_index().sort_values("graph nodes", ascending=False)


def _time_col(df: pd.DataFrame) -> str | None:
    return next((c for c in EST_TIME_COLUMNS if c in df.columns), None)


def align_nodes(base: pd.DataFrame, var: pd.DataFrame) -> dict[str, str]:
    """variant node name → baseline node name.

    Identical names match first (passes keep the names of weight layers, also after structured pruning
    re-exports the graph through torch). The remaining nodes are matched by op type and graph order:
    the k-th unmatched node of each op type with the baseline's k-th unmatched one (same topology).
    """
    common = set(base["node"]) & set(var["node"])
    out = {n: n for n in var["node"] if n in common}
    b_rest = base[~base["node"].isin(common)].copy()
    v_rest = var[~var["node"].isin(common)].copy()
    for frame in (b_rest, v_rest):  # graph order when the frame knows it (profiles come sorted by time)
        if "idx" in frame:
            frame.sort_values("idx", inplace=True, kind="stable")
    bk = b_rest.groupby("op_type").cumcount()
    vk = v_rest.groupby("op_type").cumcount()
    bmap = {(op, int(k)): n for op, k, n in zip(b_rest["op_type"], bk, b_rest["node"], strict=True)}
    out.update({n: bmap.get((op, int(k)), n) for op, k, n in zip(v_rest["op_type"], vk, v_rest["node"], strict=True)})
    return out


def _status(df: pd.DataFrame, mapped: bool) -> np.ndarray:
    """gained / lost / kept by graph presence; with a kernel-mapped profile, a variant node without time of its
    own is "fused" (ORT runs it inside another layer's kernel, e.g. a DequantizeLinear in a QLinearConv)."""
    side = df.pop("_side").astype(str)
    status = np.where(side == "left_only", "gained", np.where(side == "right_only", "lost", "kept"))
    if mapped:
        status = np.where((side != "right_only") & df["ms"].isna(), "fused", status)
    return status


def layer_comparison(base: pd.DataFrame, var: pd.DataFrame, est: pd.DataFrame | None = None,
                     bits: int = 32) -> pd.DataFrame:
    """One row per layer: measured ms (baseline, variant), estimated ms, MACs/params/bytes and ratios."""
    keep = ["node", "op_type", "ms", "kernels", "macs", "params", "weight_bytes"]
    names = align_nodes(base, var) if len(base) else {n: n for n in var["node"]}
    b = base[[c for c in keep if c in base]].add_prefix("base_").rename(columns={"base_node": "node"})
    v = var[[c for c in keep if c in var]].rename(columns={"op_type": "op_type_v"})
    v.insert(1, "variant_node", v["node"])
    v["node"] = v["node"].map(names).fillna(v["node"])
    if est is not None and "node" in est:
        est = est.assign(node=est["node"].map(names).fillna(est["node"]))
    df = v.merge(b, on="node", how="outer", indicator="_side")
    df["op_type"] = df["op_type_v"].fillna(df.get("base_op_type"))
    df = df.drop(columns=[c for c in ("op_type_v", "base_op_type") if c in df])
    if est is not None and len(est) and "node" in est:
        col = _time_col(est)
        if col is not None:
            df = df.merge(est[["node", col]].rename(columns={col: "est_ms"}), on="node", how="left")
    if "est_ms" not in df:
        df["est_ms"] = np.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        df["applied_ratio"] = 1 - df["params"] / df["base_params"].where(df["base_params"] > 0)
    df["bits"] = bits
    df["status"] = _status(df, mapped="kernels" in var and var["kernels"].notna().any())
    order = ["node", "op_type", "status", "variant_node", "base_ms", "ms", "est_ms", "kernels", "base_kernels",
             "base_macs", "macs", "base_params", "params", "applied_ratio", "base_weight_bytes", "weight_bytes", "bits"]
    df = df[[c for c in order if c in df]]
    return df.sort_values("ms", ascending=False, na_position="last").reset_index(drop=True)


def profile_totals(meta_json: Any) -> dict[str, float] | None:
    """A stored variant's per-node profile totals (node_sum_ms, run_ms, coverage), when recorded."""
    try:
        prof = json.loads(meta_json or "{}").get("profile") or {}
    except (TypeError, ValueError, AttributeError):
        return None
    keys = ("node_sum_ms", "run_ms", "coverage")
    return {k: float(prof[k]) for k in keys} if all(isinstance(prof.get(k), (int, float)) for k in keys) else None
