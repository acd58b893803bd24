"""Plain-pandas views the dashboard and the HTML report share: flags, labels, graph diffs.

Small helpers written here because they encode this product's honesty rules (what is measured,
estimated or simulated; when a difference is not significant; why a variant is slower).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pandas as pd

from optim.analysis.labels import collapse_note
from optim.analysis.select import baseline_row, vs_baseline, with_metric

METRIC_LABELS = {
    "metric": "Accuracy (top-1, %)",
    "target_ms": "Latency (ms)",
    "size_mb": "Size (MB)",
}


def summary_facts(s: Any) -> dict[str, Any]:
    """Headline numbers of a ModelSummary as display-ready values."""
    inputs = ", ".join(f"{n} {list(shape)} {dt}" for n, shape, dt in s.inputs)
    outputs = ", ".join(f"{n} {list(shape)}" for n, shape, _ in s.outputs)
    return {
        "inputs": inputs,
        "outputs": outputs,
        "opset": s.opset,
        "params": int(s.params),
        "size_mb": s.size_bytes / 1e6,
        "macs_m": s.macs / 1e6,
        "nodes": int(sum(s.op_histogram.values())),
    }


def int8_note(vnni: bool | None) -> str:
    """One line on what INT8 can buy on this CPU, from its detected 8-bit dot-product support."""
    if vnni is None:
        return ("This CPU's 8-bit dot-product support (VNNI) could not be detected: INT8 may or may not be "
                "faster here; the measured latencies say which.")
    if vnni:
        return ("This CPU has VNNI (8-bit dot-product instructions): INT8 kernels are expected to be faster "
                "than FP32 here, except where quantize/dequantize overhead dominates small layers.")
    return ("This CPU has no VNNI (8-bit dot-product instructions): INT8 kernels are often no faster than "
            "FP32 here; the gain is in size, and on CPUs with VNNI or on NPUs.")


def ms_decimals(values: Any) -> int:
    """Decimals that show 3 significant digits of the largest latency (0.0085, 0.172, 12.3, 1234 ms)."""
    arr = pd.to_numeric(pd.Series(values), errors="coerce").abs()
    top = float(arr.max()) if arr.notna().any() and arr.max() > 0 else 1.0
    return int(min(6, max(0, 2 - np.floor(np.log10(top)))))


def fmt_ms(v: float | None) -> str:
    """A latency with ~3 significant digits and its unit."""
    if v is None or pd.isna(v):
        return "n/a"
    return f"{float(v):.{ms_decimals([v])}f} ms"


def _slow_reason(row: pd.Series, vnni: bool | None) -> str:
    bits = 32 if pd.isna(row.get("bits")) else int(row.get("bits"))
    reasons = []
    if not bool(row.get("executable", True)):
        what = "per-layer mixed precision" if bits == 0 else f"INT{bits}"
        reasons.append(f"{what} is simulated: the file runs in FP32 (fake-quantised weights)")
    elif bits == 8:
        reasons.append("INT8 kernels without VNNI (8-bit dot products, absent on this CPU) are not faster than FP32"
                       if vnni is False else
                       "INT8 at batch 1 pays quantize/dequantize overhead on small layers (this CPU has VNNI)"
                       if vnni else "INT8 kernels may lack 8-bit dot products here (VNNI not detected)")
    elif bits == 4:
        reasons.append("INT4 MatMul kernels unpack 4-bit weights at run time: on small layers at batch 1 that "
                       "costs more than the smaller weights save")
    elif bits == 16:
        reasons.append("FP16 runs on CPU through inserted casts (no FP16 kernels)")
    if row.get("prune_kind") == "unstructured" and float(row.get("prune_ratio") or 0) > 0:
        reasons.append("unstructured sparsity: dense kernels still multiply the zeros")
    if row.get("prune_kind") in ("structured", "auto") and float(row.get("prune_ratio") or 0) > 0 and bits == 32:
        reasons.append("likely: pruned channel counts that are not multiples of 8/16 lose the runtime's "
                       "blocked (NCHWc) fused kernels (Layers → what the graph fused)")
    return "; ".join(reasons) or "within measurement noise or runtime overhead"


def add_flags(df: pd.DataFrame, vnni: bool | None = None, slow_tol: float = 1.05) -> pd.DataFrame:
    """The judged metric (:func:`optim.analysis.select.with_metric`) plus a ``flags`` text per row: failed,
    fidelity collapsed, simulated, difference not significant (inside the baseline's 95 % interval), slower than the baseline and why."""
    df = with_metric(df)
    base = baseline_row(df)
    significance = vs_baseline(df, base)
    flags: list[str] = []
    for i, row in df.iterrows():
        f: list[str] = []
        if row.get("status") != "ok":
            f.append(f"failed: {row.get('error') or 'unknown error'}")
        else:
            if row.get("collapsed", False):
                f.append(collapse_note(row.get("cosine"), row.get("worst_output")))
            if row["simulated"]:
                f.append("simulated")
            if base is not None and row["variant_id"] != base["variant_id"]:
                if significance[i] == "same" and pd.notna(base["metric_lo"]):
                    f.append("difference not significant")
                if pd.notna(row.get("latency_ms")) and row["latency_ms"] > base["latency_ms"] * slow_tol:
                    f.append("slower than baseline — " + _slow_reason(row, vnni))
            if isinstance(row.get("notes"), str) and row["notes"]:
                f.append(row["notes"])  # e.g. which INT8 configuration the search chose, why, what else it tried
        flags.append("; ".join(f))
    df["flags"] = pd.Series(flags, index=df.index, dtype=object)
    return df


def flags_on_target(flags: pd.Series, estimated: pd.Series) -> pd.Series:
    """Where latency is *estimated* on another device, say that 'slower than baseline' is this CPU's
    measurement (the estimate shown next to it may well be faster)."""
    flags = flags.fillna("").astype(str)  # an empty sweep's column is float: .str would raise
    marked = flags.str.replace("slower than baseline —", "slower than baseline on this CPU (measured) —", regex=False)
    return marked.where(estimated.astype(bool), flags)


def graph_diff(base_ops: list[tuple[str, str]], var_ops: list[tuple[str, str]]) -> dict[str, Any]:
    """What a variant's graph lost, gained, and how its op histogram changed.

    ``*_ops`` are (node name, op_type) lists. Returns ``lost``/``gained`` DataFrames and ``ops``
    (op_type, baseline, variant, change).
    """
    bnames = {n for n, _ in base_ops}
    vnames = {n for n, _ in var_ops}
    lost = pd.DataFrame([(n, o) for n, o in base_ops if n not in vnames], columns=["node", "op_type"])
    gained = pd.DataFrame([(n, o) for n, o in var_ops if n not in bnames], columns=["node", "op_type"])
    cb, cv = Counter(o for _, o in base_ops), Counter(o for _, o in var_ops)
    ops = pd.DataFrame([(o, cb.get(o, 0), cv.get(o, 0)) for o in sorted(set(cb) | set(cv))],
                       columns=["op_type", "baseline", "variant"])
    ops["change"] = ops["variant"] - ops["baseline"]
    return {"lost": lost, "gained": gained, "ops": ops[ops["change"] != 0].reset_index(drop=True)}
