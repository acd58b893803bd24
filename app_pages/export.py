"""Export: the selected variant's ONNX, the results CSV and a self-contained HTML report."""

from __future__ import annotations

import streamlit as st

from optim import api
from ui import cache, state, widgets
from ui.guard import guard

st.title(":material/download: Export")
loaded = widgets.current_model()
sid = widgets.current_sweep(loaded)
if sid is None:
    st.info("No sweep for this model yet: run one on the Optimize page, or try the demo from Home.")
    st.stop()

with guard("Preparing the downloads"):
    device = state.settings().target
    df = cache.variants(sid, device)
    ok = df[df["status"].eq("ok")]
    if ok.empty:
        st.warning("This sweep has no finished variants yet.")
        st.stop()
    ids = ok["variant_id"].tolist()
    cur = state.variant_id()
    rec = api.recommend(df)
    cur = cur if cur in ids else (rec["variant_id"] if rec is not None else ids[0])
    st.caption(f"Recommended: **{rec['label']}** (fastest Pareto variant not significantly less accurate than "
               "the baseline)." if rec is not None else "")
    if st.session_state.get("export_variant") != cur:
        st.session_state["export_variant"] = cur
    vid = st.selectbox("Variant", ids, format_func=lambda v: widgets.variant_label(df, v), key="export_variant",
                       on_change=lambda: state.set_variant(st.session_state["export_variant"]))
    state.set_variant(vid)
    row = ok[ok["variant_id"] == vid].iloc[0]
    ci = f" [{row['metric_lo']:.2f}–{row['metric_hi']:.2f}]" if row["metric_lo"] == row["metric_lo"] else ""
    st.markdown(f"**{row['label']}**: {row['metric']:.2f} %{ci} {row['metric_name']}, "
                f"{api.fmt_ms(row['latency_ms'])} measured on this CPU, {row['size_mb']:.2f} MB"
                + (" (packed, simulated)" if row["simulated"] else "") + (f" · ⚑ {row['flags']}" if row["flags"] else ""))
    c = st.columns(3)
    with c[0].container(border=True):
        st.markdown("**Model (ONNX)**")
        if row["simulated"]:
            st.caption("Simulated precision: the file holds fake-quantised FP32 weights (accuracy is real, the "
                       "packed size is not this file's size).")
        path = row["artifact_path"]
        if isinstance(path, str):
            stem = "".join(ch if ch.isascii() and (ch.isalnum() or ch in "-_.") else "_" for ch in str(row["label"]))
            data = api.artifact_bytes(path)
            st.download_button(f"Download .onnx ({len(data) / 1e6:.2f} MB)", data, file_name=f"{stem}.onnx",
                               mime="application/octet-stream", key="dl_onnx")
        else:
            st.caption("No artifact stored for this variant.")
    with c[1].container(border=True):
        st.markdown("**Results (CSV)**")
        st.caption(f"{len(df)} variants, every measured column plus flags.")
        st.download_button("Download results.csv", api.results_csv(df), file_name=f"sweep_{sid}.csv",
                           mime="text/csv", key="dl_csv")
    with c[2].container(border=True):
        st.markdown("**Report (HTML, opens offline)**")
        st.caption("The model, the front, the recommended variant and its per-layer view; interactive charts "
                   "with plotly.js embedded (~4.5 MB).")
        if st.button("Build report", key="build_report"):
            st.session_state[state.Key.REPORT] = (sid, vid, api.report_html(
                sid, vid, device_id=device, model_label=loaded.label if loaded is not None else ""))
        rep = st.session_state.get(state.Key.REPORT)
        if rep and rep[0] == sid and rep[1] == vid:
            st.download_button("Download report.html", rep[2].encode(), file_name=f"report_{sid}.html",
                               mime="text/html", key="dl_report")
    st.caption("Share this view: the address bar holds the model, the sweep, the selected variant and the Optimize "
               "settings; anyone opening it on this server sees the same results (they come from the store).")
