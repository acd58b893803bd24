"""Plain-pandas views the dashboard and the HTML report share: flags, constraints, graph diffs.

Small helpers written here because they encode this product's honesty rules (what is measured,
estimated or simulated; when a difference is not significant; why a variant is slower).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pandas as pd

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


def baseline_row(df: pd.DataFrame) -> pd.Series | None:
    """The unpruned FP32 variant of a sweep (the reference every flag compares against)."""
    if df.empty:
        return None
    ok = df[df["status"].eq("ok")] if "status" in df else df
    base = ok[(ok["prune_ratio"].fillna(0) == 0) & (ok["bits"].fillna(32) == 32)]
    if base.empty:
        return None
    if "opt_level" in base and (base["opt_level"] == "all").any():
        base = base[base["opt_level"] == "all"]
    return base.iloc[0]


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
    """Add ``metric`` (accuracy or agreement, in %), ``size_mb``, ``kind`` labels and ``flags`` text."""
    df = df.copy()
    has_acc = "top1" in df and df["top1"].notna().any()
    df["metric_name"] = "top-1 accuracy" if has_acc else "agreement with baseline"
    src = df["top1"] if has_acc else df.get("agreement", pd.Series(np.nan, index=df.index))
    df["metric"] = src.astype(float) * 100
    lo = df["top1_lo"] if has_acc else src
    hi = df["top1_hi"] if has_acc else src
    df["metric_lo"] = lo.astype(float) * 100
    df["metric_hi"] = hi.astype(float) * 100
    eff = df["effective_size_bytes"].fillna(df["size_bytes"]) if "effective_size_bytes" in df else df["size_bytes"]
    df["effective_size_bytes"] = eff
    df["size_mb"] = eff.astype(float) / 1e6
    df["bits"] = df["bits"].fillna(32).astype(int)
    df["prune_kind"] = df["prune_kind"].fillna("none")
    df.loc[df["prune_ratio"].fillna(0) == 0, "prune_kind"] = "none"
    df["simulated"] = ~df["executable"].fillna(True).astype(bool) if "executable" in df else False
    base = baseline_row(df)
    flags: list[str] = []
    for _, row in df.iterrows():
        f: list[str] = []
        if row.get("status") != "ok":
            f.append(f"failed: {row.get('error') or 'unknown error'}")
        else:
            if row["simulated"]:
                f.append("simulated")
            if base is not None and row["variant_id"] != base["variant_id"]:
                if has_acc and pd.notna(row["metric"]) and _overlaps(row, base):
                    f.append("difference not significant")
                if pd.notna(row.get("latency_ms")) and row["latency_ms"] > base["latency_ms"] * slow_tol:
                    f.append("slower than baseline — " + _slow_reason(row, vnni))
        flags.append("; ".join(f))
    df["flags"] = flags
    return df


def flags_on_target(flags: pd.Series, estimated: pd.Series) -> pd.Series:
    """Where latency is *estimated* on another device, say that 'slower than baseline' is this CPU's
    measurement (the estimate shown next to it may well be faster)."""
    marked = flags.str.replace("slower than baseline —", "slower than baseline on this CPU (measured) —", regex=False)
    return marked.where(estimated, flags)


def _overlaps(row: pd.Series, base: pd.Series) -> bool:
    """Differences inside the 95 % intervals are not significant (the baseline's or the variant's)."""
    if pd.isna(row["metric_lo"]) or pd.isna(base["metric_lo"]):
        return False
    return bool(row["metric_lo"] <= base["metric"] <= row["metric_hi"]
                or base["metric_lo"] <= row["metric"] <= base["metric_hi"])


def apply_constraints(df: pd.DataFrame, max_ms: float | None = None, max_mb: float | None = None,
                      min_metric: float | None = None) -> tuple[pd.DataFrame, pd.Series | None]:
    """Mark ``feasible`` rows and return the best feasible one (highest metric, then fastest)."""
    df = df.copy()
    ok = df["status"].eq("ok") & df["metric"].notna()
    if max_ms is not None:
        ok &= df["target_ms"] <= max_ms
    if max_mb is not None:
        ok &= df["size_mb"] <= max_mb
    if min_metric is not None:
        ok &= df["metric"] >= min_metric
    df["feasible"] = ok
    if not ok.any():
        return df, None
    best = df[ok].sort_values(["metric", "target_ms", "size_mb"], ascending=[False, True, True]).iloc[0]
    return df, best


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


def recommend(df: pd.DataFrame, variant_id: str | None = None) -> pd.Series | None:
    """``variant_id``'s row when given and ok; else the fastest (then smallest) executable Pareto variant
    whose accuracy is not significantly below the baseline's (≥ the baseline's lower 95 % bound)."""
    ok = df[df["status"].eq("ok") & df["metric"].notna()]
    if variant_id is not None and (ok["variant_id"] == variant_id).any():
        return ok[ok["variant_id"] == variant_id].iloc[0]
    front = ok[ok["pareto"]] if "pareto" in ok else ok
    if "simulated" in front and (~front["simulated"].astype(bool)).any():
        front = front[~front["simulated"].astype(bool)]  # recommend what the runtime can actually run
    if front.empty:
        return None
    base = baseline_row(df)
    floor = base["metric_lo"] if base is not None and pd.notna(base["metric_lo"]) else front["metric"].max() - 1
    good = front[front["metric"] >= floor]
    sort = ["target_ms", "size_mb"] if "target_ms" in front else ["latency_ms", "size_mb"]
    return (good if len(good) else front).sort_values(sort).iloc[0]
