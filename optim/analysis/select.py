"""The decisions every surface shares: the CLI, every page and the HTML report call these and decide nothing
themselves.

- which row is the **baseline** (:func:`baseline_row`);
- which **metric** a sweep is judged on and its 95 % interval (:func:`with_metric`: top-1 accuracy with its
  Wilson interval, or, without labels, agreement with the baseline's predictions with the Wilson interval of
  that agreement over the evaluated samples when every output is a class output, else the worst output's
  cosine with the baseline's with its bootstrap interval); which variants **collapsed**;
- whether a variant is **significantly below / above** the baseline (:func:`vs_baseline`: outside the
  baseline's interval of the metric shown);
- the **Pareto front** (:func:`with_front`: accuracy ↑, latency on the chosen target ↓, effective size ↓) and
  the 2-D front of two plotted axes (:func:`front_2d`);
- **constraint filtering** (:func:`apply_constraints`: the most accurate variant inside the limits);
- the **recommendation** (:func:`recommend`).

A *prepared* table (:func:`prepare`) is the store's variant table plus the columns these decisions read:
``metric_name``, ``metric``/``metric_lo``/``metric_hi`` (percent), ``size_mb``, ``simulated``,
``target_ms``/``target_source`` (latency on the chosen target: measured on this CPU, or estimated),
``pareto`` and ``vs_baseline``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from optim.analysis.pareto import group_keys, pareto_mask
from optim.measure.core import wilson_interval

__all__ = [
    "ACCURACY",
    "AGREEMENT",
    "COSINE",
    "COSINE_SAME",
    "FRONT_OBJECTIVES",
    "RECOMMENDATION",
    "apply_constraints",
    "baseline_row",
    "front_2d",
    "prepare",
    "recommend",
    "vs_baseline",
    "with_front",
    "with_metric",
    "with_target",
]

ACCURACY = "top-1 accuracy"
AGREEMENT = "agreement with baseline"
COSINE = "output cosine with baseline"  # detectors, encoders, dense maps: argmax agreement means nothing there
COSINE_SAME = 0.99  # the baseline's lower bound for cosine: variants at ≥ 0.99 of the original count as the same
FRONT_OBJECTIVES = {"metric": "max", "target_ms": "min", "effective_size_bytes": "min"}
HARDWARE = "node_hw"  # the machine that measured a row's latency (optim.sweep.node)
SENSE = {"metric": "max", "metric_lo": "max", "metric_hi": "max", "target_ms": "min", "latency_ms": "min",
         "size_mb": "min", "effective_size_bytes": "min", "size_bytes": "min"}
RECOMMENDATION = ("the fastest executable Pareto-optimal variant (latency on the chosen target, then size) whose "
                  "{metric} is not significantly below the baseline's (at least the baseline's lower 95 % bound)")


def _ok(df: pd.DataFrame) -> pd.Series:
    return df["status"].eq("ok") if "status" in df else pd.Series(True, index=df.index)


def baseline_row(df: pd.DataFrame) -> pd.Series | None:
    """The unpruned FP32 variant that finished (at ORT level "all" when the sweep has several levels)."""
    if df.empty:
        return None
    ok = df[_ok(df)]
    base = ok[(ok["prune_ratio"].fillna(0) == 0) & (ok["bits"].fillna(32) == 32)]
    if "distilled" in base:
        base = base[~base["distilled"].fillna(0).astype(bool)]
    if base.empty:
        return None
    if "opt_level" in base and (base["opt_level"] == "all").any():
        base = base[base["opt_level"] == "all"]
    return base.iloc[0]


def _agreement_interval(agreement: pd.Series, n: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = np.full(len(agreement), np.nan), np.full(len(agreement), np.nan)
    for i, (a, k) in enumerate(zip(agreement, n, strict=True)):
        if pd.notna(a) and pd.notna(k) and int(k) > 0:
            n_i = int(k)
            lo[i], hi[i] = wilson_interval(min(n_i, max(0, round(float(a) * n_i))), n_i)
    return lo, hi


def _judged_by_cosine(df: pd.DataFrame) -> bool:
    """True when the sweep's outputs are not all class outputs (``fidelity_metric`` = "cosine",
    :mod:`optim.measure.fidelity`); rows stored before that column existed are judged by agreement."""
    return "fidelity_metric" in df and df["fidelity_metric"].eq("cosine").any()


def with_metric(df: pd.DataFrame) -> pd.DataFrame:
    """Add the judged metric in percent with its 95 % interval, ``size_mb``, ``collapsed`` and normalised
    kind/bits columns.

    The metric is top-1 accuracy when any variant has one; else, for models whose outputs are all class outputs,
    agreement with the baseline (its interval is the Wilson interval of the agreeing fraction of ``n_eval``
    samples; none when ``n_eval`` is unknown); else (detectors, encoders, dense maps) the worst output's cosine
    with the baseline's outputs, with its bootstrap interval, the baseline's lower bound at :data:`COSINE_SAME`.
    ``collapsed``: the variant's outputs no longer follow the original's (``fidelity_collapsed``)."""
    df = df.copy()
    has_acc = "top1" in df and pd.to_numeric(df["top1"], errors="coerce").notna().any()
    by_cosine = not has_acc and _judged_by_cosine(df)
    df["metric_name"] = ACCURACY if has_acc else COSINE if by_cosine else AGREEMENT
    if has_acc or by_cosine:
        cols = ("top1", "top1_lo", "top1_hi") if has_acc else ("cosine", "cosine_lo", "cosine_hi")
        value, lo, hi = (pd.to_numeric(df.get(c, pd.Series(np.nan, index=df.index)), errors="coerce")
                         .to_numpy(dtype=float) for c in cols)
    else:
        agree = pd.to_numeric(df.get("agreement", pd.Series(np.nan, index=df.index)), errors="coerce")
        n = pd.to_numeric(df.get("n_eval", pd.Series(np.nan, index=df.index)), errors="coerce")
        value = agree.to_numpy(dtype=float)
        lo, hi = _agreement_interval(agree, n)
    df["metric"], df["metric_lo"], df["metric_hi"] = value * 100, lo * 100, hi * 100
    collapsed = df["fidelity_collapsed"] if "fidelity_collapsed" in df else pd.Series(0, index=df.index)
    df["collapsed"] = pd.to_numeric(collapsed, errors="coerce").fillna(0).astype(bool)
    if by_cosine:
        base = baseline_row(df)
        if base is not None and pd.notna(base["metric"]):
            df.loc[base.name, "metric_lo"] = min(COSINE_SAME * 100, float(np.nan_to_num(base["metric_lo"], nan=100)))
    eff = df["effective_size_bytes"] if "effective_size_bytes" in df else df["size_bytes"]
    df["effective_size_bytes"] = eff.fillna(df["size_bytes"]) if "size_bytes" in df else eff
    df["size_mb"] = eff.astype(float) / 1e6
    df["bits"] = df["bits"].fillna(32).astype(int)
    df["prune_kind"] = df["prune_kind"].fillna("none") if "prune_kind" in df else "none"
    if "prune_ratio" in df:
        df.loc[df["prune_ratio"].fillna(0) == 0, "prune_kind"] = "none"
    executable = df["executable"].astype("boolean").fillna(True) if "executable" in df else True
    df["simulated"] = ~pd.Series(executable, index=df.index).astype(bool)
    return df


def vs_baseline(df: pd.DataFrame, base: pd.Series | None = None) -> pd.Series:
    """Per row: "below" / "above" when the metric lies outside the baseline's 95 % interval, "same" inside it,
    "" when either side has no metric. Without a baseline interval any difference counts."""
    base = baseline_row(df) if base is None else base
    out = pd.Series("", index=df.index, dtype=object)
    if base is None or pd.isna(base["metric"]):
        return out
    lo = base["metric_lo"] if pd.notna(base["metric_lo"]) else base["metric"]
    hi = base["metric_hi"] if pd.notna(base["metric_hi"]) else base["metric"]
    m = df["metric"]
    out[m.notna()] = "same"
    out[m < lo] = "below"
    out[m > hi] = "above"
    return out


def with_target(df: pd.DataFrame, estimated_ms: pd.Series | None = None) -> pd.DataFrame:
    """``target_ms``: the latency decisions use, measured on this CPU unless an estimate for the chosen target
    device is given (index of ``df``; NaN where there is none); ``target_source`` says which."""
    df = df.copy()
    df["target_ms"], df["target_source"] = df["latency_ms"].astype(float), "measured"
    if estimated_ms is not None:
        has = estimated_ms.reindex(df.index).notna()
        df.loc[has, "target_ms"] = estimated_ms[has].astype(float)
        df.loc[has, "target_source"] = "estimated"
    return df


def _measured(df: pd.DataFrame) -> pd.Series:
    return df["target_source"].eq("measured") if "target_source" in df else pd.Series(True, index=df.index)


def with_front(df: pd.DataFrame) -> pd.DataFrame:
    """``pareto``: on the front of accuracy ↑, target latency ↓, effective size ↓ (ok rows that did not collapse). While latencies
    are measured, rows measured on different hardware (``node_hw``: a cluster sweep) never share a front."""
    df = df.copy()
    by = HARDWARE if _measured(df).any() else None
    status = df["status"] if "status" in df else pd.Series("ok", index=df.index)
    usable = df.assign(status=status.where(~df["collapsed"].astype(bool), "collapsed")) if "collapsed" in df else df
    df["pareto"] = pareto_mask(usable, FRONT_OBJECTIVES, by=by).astype(bool)  # collapsed rows take no part
    return df


def prepare(df: pd.DataFrame, estimated_ms: pd.Series | None = None) -> pd.DataFrame:
    """The store's variant table with every column the decisions read (see the module docstring)."""
    out = with_front(with_target(with_metric(df), estimated_ms))
    out["vs_baseline"] = vs_baseline(out)
    return out


def recommend(df: pd.DataFrame) -> pd.Series | None:
    """The engine's recommended variant of a prepared table, or None without a finished baseline.

    Candidates: finished, executable (not simulated), not collapsed, metric not significantly below the baseline's (≥ the
    baseline's lower 95 % bound of the metric shown), measured on the baseline's hardware when the latency is
    measured. Among them the Pareto-optimal ones come first, then the
    lowest latency on the chosen target, the smallest effective size, the highest metric. The baseline is a
    candidate itself, so there always is one when the baseline finished."""
    base = baseline_row(df)
    if base is None or pd.isna(base["metric"]):
        return None
    floor = base["metric_lo"] if pd.notna(base["metric_lo"]) else base["metric"]
    ok = _ok(df) & ~df["simulated"].astype(bool) & df["target_ms"].notna() & (df["metric"] >= floor)
    if "collapsed" in df:  # outputs that no longer follow the original's are never recommended
        ok &= ~df["collapsed"].astype(bool)
    if HARDWARE in df:  # measured latencies compare only on the baseline's hardware
        same = group_keys(df, HARDWARE) == group_keys(df.loc[[base.name]], HARDWARE)[0]
        ok &= ~_measured(df) | pd.Series(same, index=df.index)
    cand = df[ok]
    if cand.empty:
        return None
    order = cand.assign(_off=~cand["pareto"].astype(bool)).sort_values(
        ["_off", "target_ms", "effective_size_bytes", "metric"], ascending=[True, True, True, False], kind="stable")
    return df.loc[order.index[0]]


def apply_constraints(df: pd.DataFrame, max_ms: float | None = None, max_mb: float | None = None,
                      min_metric: float | None = None) -> tuple[pd.DataFrame, pd.Series | None]:
    """Mark ``feasible`` rows (target latency ≤ max_ms, size ≤ max_mb, metric ≥ min_metric; finished) and return
    the best feasible one: the highest metric, then the fastest, then the smallest."""
    df = df.copy()
    ok = _ok(df) & df["metric"].notna()
    if "collapsed" in df:
        ok &= ~df["collapsed"].astype(bool)
    if max_ms is not None:
        ok &= df["target_ms"] <= max_ms
    if max_mb is not None:
        ok &= df["size_mb"] <= max_mb
    if min_metric is not None:
        ok &= df["metric"] >= min_metric
    df["feasible"] = ok
    if not ok.any():
        return df, None
    best = df[ok].sort_values(["metric", "target_ms", "size_mb"], ascending=[False, True, True], kind="stable")
    return df, best.iloc[0]


def front_2d(df: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """The finished rows non-dominated in the two columns ``x`` and ``y`` (sense from :data:`SENSE`), sorted by x.

    Thick rings on a chart mark the 3-objective front (``pareto``); this is the front of the two axes on screen,
    so a line through it never passes a point that is dominated in the view."""
    rows = df[_ok(df) & df[x].notna() & df[y].notna()]
    if "collapsed" in rows:
        rows = rows[~rows["collapsed"].astype(bool)]
    mask = pareto_mask(rows.drop(columns=["status"], errors="ignore"), {x: SENSE.get(x, "min"), y: SENSE.get(y, "min")})
    front = rows[mask]
    return front.sort_values([x, y], kind="stable")
