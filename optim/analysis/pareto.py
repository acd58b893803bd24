"""Pareto analysis over a sweep's variants: the non-dominated set (decisions over it: :mod:`optim.analysis.select`).

Written here rather than taken from a library: `paretoset` is not installed on this stack and what we
need is ~50 lines of NumPy over DataFrames that also honour the store's ``status`` column (failed
variants never take part). The vectorised filter is checked against a naive O(n²) twin in the tests.

Dominance: a row *a* dominates *b* when *a* is at least as good in every objective and strictly better
in one. Identical rows do not dominate each other, so duplicates on the front are all kept.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from optim.errors import ConfigError

DEFAULT_OBJECTIVES: dict[str, str] = {"top1": "max", "latency_ms": "min", "effective_size_bytes": "min"}
_CHUNK = 512  # rows compared at once: bounds memory at _CHUNK × n × k booleans


def _eligible(df: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """Rows that may take part: status ok (when there is a status column) and no missing objective."""
    ok = np.ones(len(df), dtype=bool)
    if "status" in df.columns:
        ok &= (df["status"] == "ok").to_numpy()
    for col in columns:
        ok &= pd.to_numeric(df[col], errors="coerce").notna().to_numpy()
    return ok


def _cost_matrix(df: pd.DataFrame, objectives: Mapping[str, str]) -> np.ndarray:
    """Objectives as a float matrix where smaller is better in every column."""
    if not objectives:
        raise ConfigError("objectives must name at least one column, e.g. {'top1': 'max'}.")
    cols = []
    for col, sense in objectives.items():
        if col not in df.columns:
            raise ConfigError(f"objective column {col!r} is not in the table; columns: {list(df.columns)}.")
        if sense not in ("min", "max"):
            raise ConfigError(f"objective {col!r} must be 'min' or 'max', got {sense!r}.")
        values = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float)
        cols.append(-values if sense == "max" else values)
    return np.column_stack(cols)


def _nondominated(cost: np.ndarray) -> np.ndarray:
    """Boolean mask of non-dominated rows of ``cost`` (all objectives minimised)."""
    n = len(cost)
    keep = np.ones(n, dtype=bool)
    for start in range(0, n, _CHUNK):
        block = cost[start : start + _CHUNK]  # (b, k): is each of these dominated by any row?
        le = (cost[None, :, :] <= block[:, None, :]).all(axis=2)  # (b, n): other <= this everywhere
        lt = (cost[None, :, :] < block[:, None, :]).any(axis=2)  # (b, n): strictly better somewhere
        keep[start : start + len(block)] = ~(le & lt).any(axis=1)
    return keep


def pareto_mask(df: pd.DataFrame, objectives: Mapping[str, str] | None = None, by: str | None = None) -> pd.Series:
    """True for rows on the Pareto front of ``objectives`` ({column: "min"|"max"}), index of ``df``.

    Failed variants (``status != "ok"``) and rows missing an objective are never on the front. With
    ``by`` (e.g. ``"node_hw"``, the hardware that measured each latency) there is one front per value of
    that column (missing values form one group), so rows measured on different machines never dominate
    each other.
    """
    objectives = dict(objectives or DEFAULT_OBJECTIVES)
    mask = np.zeros(len(df), dtype=bool)
    if len(df):
        cost = _cost_matrix(df, objectives)
        ok = _eligible(df, list(objectives))
        groups = group_keys(df, by)
        for key in np.unique(groups):
            rows = np.flatnonzero(ok & (groups == key))
            if len(rows):
                mask[rows] = _nondominated(cost[rows])
    return pd.Series(mask, index=df.index, name="pareto")


def group_keys(df: pd.DataFrame, by: str | None) -> np.ndarray:
    """One string key per row: the ``by`` column (missing → ``"unknown"``), or one group when ``by`` is None
    or not a column."""
    if by is None or by not in df.columns:
        return np.full(len(df), "", dtype=object)
    return df[by].astype(object).where(df[by].notna(), "unknown").astype(str).to_numpy(dtype=object)


def hardware_count(df: pd.DataFrame, by: str = "node_hw") -> int:
    """How many different machines measured the ok rows (0 when nothing says)."""
    if by not in df.columns or not len(df):
        return 0
    ok = df[df["status"] == "ok"] if "status" in df.columns else df
    return int(pd.Series(group_keys(ok, by)).nunique())


def pareto_front(df: pd.DataFrame, objectives: Mapping[str, str] | None = None,
                 by: str | None = None) -> pd.DataFrame:
    """The rows on the front (one front per ``by`` value, see :func:`pareto_mask`), best first."""
    objectives = dict(objectives or DEFAULT_OBJECTIVES)
    front = df[pareto_mask(df, objectives, by)]
    first, sense = next(iter(objectives.items()))
    return front.sort_values(first, ascending=(sense == "min"), kind="stable")
