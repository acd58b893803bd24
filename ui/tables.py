"""Tables more than one page shows, readable: the variant name pinned on the left, flags wrapped in full,
the metric named for what it is (top-1 accuracy, agreement with the original model, or the outputs' cosine with
the original's) with its interval."""

from __future__ import annotations

from typing import Any

import streamlit as st

from optim import api

SIZE_HELP = "File size; for simulated bit-widths, the packed size the weights would take"
COSINE_HELP = ("Mean cosine similarity between the variant's and the original model's outputs per input; "
               "95 % bootstrap interval over the evaluation inputs")
SQNR_HELP = ("Signal-to-quantisation-noise ratio of the output that the variant follows least: "
             "10·log10(‖original‖² / ‖original − variant‖²); 300 = identical")
WRAP_ROW_PX = 72  # Streamlit wraps cell text only in rows taller than 4 rem


def metric_columns(df: Any) -> dict[str, Any]:
    """Column settings for the metric and its interval, named after the metric actually measured."""
    name = str(df["metric_name"].iloc[0]) if "metric_name" in df and len(df) else "top-1 accuracy"
    how = api.interval_note(name)
    return {"metric": st.column_config.NumberColumn(f"{name} %", format="%.2f", help=how),
            "metric_lo": st.column_config.NumberColumn("95 % lo", format="%.2f", help=how),
            "metric_hi": st.column_config.NumberColumn("95 % hi", format="%.2f", help=how)}


def variants_table(df: Any, *, key: str, note: str = "measured on this CPU", compact: bool = False) -> None:
    """Every variant: metric ± interval, latency, size, flags (wrapped); failed rows keep their reason."""
    cols = ["label", "status", "metric", "metric_lo", "metric_hi", "target_ms", "latency_ms", "size_mb", "flags"]
    name = str(df["metric_name"].iloc[0]) if "metric_name" in df and len(df) else ""
    if name and "accuracy" not in name:
        # no labels: the outputs' closeness beside agreement; with cosine judged, SQNR and the worst output
        cols[5:5] = ["sqnr_db", "worst_output"] if "cosine" in name else ["cosine", "cosine_lo", "cosine_hi"]
    if "collapsed" in df:  # measured, but its outputs no longer follow the original's: never shown as ok
        df = df.assign(status=df["status"].where(~df["collapsed"].astype(bool), "collapsed"))
    if not compact:
        cols += ["pareto", "feasible", "bits", "prune_kind", "prune_ratio", "variant_id"]
    if note.startswith("measured"):
        cols.remove("latency_ms")  # the same numbers as the target column
    table = df[[c for c in cols if c in df]]
    if not compact and "metric" in table:
        table = table.sort_values("metric", ascending=False, na_position="last")
    long_flags = "flags" in table and table["flags"].fillna("").astype(str).str.len().max() > 60
    st.dataframe(table, hide_index=True, key=key, row_height=WRAP_ROW_PX if long_flags else None, column_config={
        "label": st.column_config.TextColumn("variant", width="medium", pinned=True),
        **metric_columns(df),
        "target_ms": st.column_config.NumberColumn(f"latency ms ({note})",
                                                   format=f"%.{api.ms_decimals(table.get('target_ms', []))}f"),
        "latency_ms": st.column_config.NumberColumn("latency ms (measured)",
                                                    format=f"%.{api.ms_decimals(table.get('latency_ms', []))}f"),
        "size_mb": st.column_config.NumberColumn("size MB", format="%.3f", help=SIZE_HELP),
        "bits": st.column_config.NumberColumn("bits", help="0 = automatic per-layer mixed precision"),
        "prune_ratio": st.column_config.NumberColumn("ratio", format="%.2f"),
        "flags": st.column_config.TextColumn("flags", width="large"),
        "sqnr_db": st.column_config.NumberColumn("SQNR dB (worst output)", format="%.1f", help=SQNR_HELP),
        "worst_output": st.column_config.TextColumn("worst output"),
        **{c: st.column_config.NumberColumn(t, format="%.4f", help=COSINE_HELP) for c, t in (
            ("cosine", "output cosine (mean)"), ("cosine_lo", "cosine 95 % lo"), ("cosine_hi", "cosine 95 % hi"))}})
