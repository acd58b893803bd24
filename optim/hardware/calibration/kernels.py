"""Per-kernel ONNX Runtime profiles of calibration models, joined with the graph's per-node counts.

Profiles run at ORT_ENABLE_ALL (the level latency is measured at); fused kernels are mapped back to the
conv/gemm they compute (:func:`optim.hardware.model.kernelmap.map_fused_nodes`); ORT's layout reorders
(named only ``ReorderOutput_token_N``) are shared among the reorders :mod:`optim.hardware.model.ortcpu`
predicts.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from optim.graph.summary import summarize
from optim.handle import ModelHandle
from optim.hardware import host
from optim.hardware.model import graphinfo
from optim.hardware.model.host_device import host_device
from optim.hardware.model.kernelmap import map_fused_nodes
from optim.hardware.model.roofline import COMPUTE_CLASSES
from optim.measure import core as measure


def int8_peak_ratio() -> float:
    """Host INT8 peak / FP32 peak as the host device states it (4 with VNNI, 1 without)."""
    spec = host_device(None).specs
    return spec["peak_int8"].value / spec["peak_fp32"].value


def robust_profile(handle: ModelHandle, repeats: int = 4, runs: int = 5) -> pd.DataFrame:
    """Per-node ms at ORT_ENABLE_ALL: the minimum over ``repeats`` profiles of ``runs`` runs each.

    On a shared machine a preempted run inflates a node's mean several-fold; the minimum of a few short
    means is far more repeatable than one long mean."""
    tables = [measure.profile_nodes(handle, threads=1, opt_level="all", runs=runs).table[["node", "op_type", "ms"]]
              for _ in range(repeats)]
    return pd.concat(tables).groupby(["node", "op_type"], as_index=False)["ms"].min()


def node_table(handle: ModelHandle, repeats: int = 4, runs: int = 5, target_ms: float | None = None) -> pd.DataFrame:
    """Measured fused kernels of one model joined with the summary counts of the node each computes.

    With ``target_ms`` (the model's contention-free whole-run time less the per-run overhead) the kernel
    times are rescaled to sum to it: the profiler times kernels in wall-clock, which preemption on a
    shared machine inflates by a different factor in every profiling session (1.05-1.35x seen here),
    while the shares between kernels are stable."""
    layers = graphinfo.annotate(summarize(handle).layers, handle.model, fuses=False, channel_block=host.channel_block())
    prof = robust_profile(handle, repeats, runs)
    mapping = map_fused_nodes(handle.model, prof["node"].tolist())
    prof["graph_node"] = prof["node"].map(mapping)
    df = layers.merge(prof[["graph_node", "ms"]], left_on="node", right_on="graph_node", how="inner")
    df = df.groupby("node", as_index=False, sort=False).agg({**{c: "first" for c in layers.columns if c != "node"},
                                                             "ms": "sum"})
    reorders = layers[layers["op_class"] == "reorder"].copy()
    is_reorder = prof["op_type"].isin(["ReorderInput", "ReorderOutput"]) | (
        (prof["op_type"] == "Transpose") & prof["graph_node"].isna())
    if len(reorders) and is_reorder.any():
        df = pd.concat([df, _split_reorders(reorders, float(prof.loc[is_reorder, "ms"].sum()))], ignore_index=True)
        prof.loc[is_reorder, "graph_node"] = "reorder"
    is_compute = df["op_class"].isin(COMPUTE_CLASSES)
    # the estimator prices an INT8 model's every node at the INT8 peak and one byte per element
    int8 = graphinfo.infer_precision_bits(handle.model) == 8
    speed, elem_bytes = (int8_peak_ratio(), 1.0) if int8 else (1.0, 4.0)
    df["ops"] = np.where(is_compute, 2.0 * df["macs"].astype(float) * df["mac_pad"].astype(float),
                         df["flops"].astype(float)) / speed
    df["bytes"] = (df["params"] + df["act_in_elems"] + df["act_out_elems"]).astype(float) * elem_bytes
    df["model"] = handle.name
    unmapped = float(prof.loc[prof["graph_node"].isna(), "ms"].sum())
    factor = 1.0
    if target_ms is not None and df["ms"].sum() + unmapped > 0:
        factor = max(target_ms, 1e-6) / (df["ms"].sum() + unmapped)
        df["ms"] = df["ms"] * factor
    df.attrs["unmapped_ms"] = unmapped * factor
    df.attrs["wall_inflation"] = 1.0 / factor
    return df


def _split_reorders(rows: pd.DataFrame, total_ms: float) -> pd.DataFrame:
    """The profile names layout reorders ``ReorderOutput_token_N``, which says not which tensor they move;
    share the model's measured reorder time among the predicted reorders in proportion to a prior
    (2 us + bytes moved at 20 GB/s)."""
    nbytes = (rows["act_in_elems"] + rows["act_out_elems"]).astype(float) * 4
    prior = 2e-3 + nbytes / 20e9 * 1e3
    return rows.assign(ms=total_ms * prior / prior.sum())
