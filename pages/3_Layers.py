"""Layers: where the selected variant's time, bytes and MACs go, against the baseline."""

from __future__ import annotations

import streamlit as st

import dashboard as ui
from optim import api

ui.setup("Layers")
st.title(":material/layers: Layers")
sid = ui.current_sweep()
vid = st.query_params.get("variant") or st.session_state.get("selected_variant")
if sid is None:
    st.info("No sweep yet: run one on the Optimize page, or try the demo from Home.")
    st.stop()

with ui.guard("Reading the sweep"):
    df = api.variants(sid)
    ok = df[df["status"].eq("ok")]
    if ok.empty:
        st.warning("This sweep has no finished variants yet.")
        st.stop()
    ids = ok["variant_id"].tolist()
    if vid not in ids:
        nonbase = [i for i in ids if (ok.set_index("variant_id").loc[i, "prune_ratio"] or 0) > 0] or ids
        vid = nonbase[0]
    devices = api.list_devices()
    dev_names = dict(zip(devices["id"], devices["name"], strict=False))
    c = st.columns([3, 2])
    vid = c[0].selectbox("Variant", ids, index=ids.index(vid), format_func=lambda v: ui.variant_label(df, v),
                         key="layers_variant")
    st.session_state["selected_variant"] = vid
    st.query_params["variant"] = vid
    dflt = st.session_state.get("target_device", api.MEASURED_DEVICE)
    device = c[1].selectbox("Estimate on", list(dev_names), index=list(dev_names).index(dflt)
                            if dflt in dev_names else 0, format_func=lambda d: dev_names[d], key="layers_device")

    view = api.layer_view(sid, vid, device)
    row, base, table = view["row"], view["base"], view["table"]
    m = st.columns(4)
    m[0].metric("Accuracy (measured)", f"{row['metric']:.2f} %",
                delta=f"{row['metric'] - base['metric']:+.2f} pt" if base is not None else None)
    m[1].metric("Latency (measured, this CPU)", f"{row['latency_ms']:.2f} ms",
                delta=f"{row['latency_ms'] - base['latency_ms']:+.2f} ms" if base is not None else None,
                delta_color="inverse")
    m[2].metric("Size" + (" (simulated, packed)" if row["simulated"] else ""), f"{row['size_mb']:.3f} MB",
                delta=f"{row['size_mb'] - base['size_mb']:+.3f} MB" if base is not None else None,
                delta_color="inverse")
    if view["est_total_ms"] is not None:
        m[3].metric(f"Latency (estimated, {dev_names[device]})", f"{view['est_total_ms']:.2f} ms")
    if row["flags"]:
        st.warning(f"⚑ {row['flags']}")
    for note in view["notes"]:
        st.caption(f"ℹ️ {note}")

    st.subheader("Time per layer")
    cols = {"ms": "variant (measured)", "base_ms": "baseline (measured)"}
    if table["est_ms"].notna().any():
        cols["est_ms"] = f"variant (estimated, {dev_names[device]})"
    st.plotly_chart(api.layer_bars(table, cols, "time (ms)", "Where the time goes (top 25 layers)"),
                    key="layer_time")
    st.caption("Measured = ONNX Runtime profiler with graph optimisations off (so each bar is one ONNX node), "
               "1 thread. Estimated = roofline model of the chosen target.")
    st.dataframe(table, hide_index=True, key="layer_table", column_config={
        "base_ms": st.column_config.NumberColumn("baseline ms", format="%.4f"),
        "ms": st.column_config.NumberColumn("variant ms", format="%.4f"),
        "est_ms": st.column_config.NumberColumn("estimated ms", format="%.4f"),
        "applied_ratio": st.column_config.NumberColumn("params removed", format="%.2f")})

    t1, t2, t3, t4 = st.tabs(["Bytes & MACs", "What the graph lost / fused / gained", "Sensitivity", "Roofline"])
    with t1:
        st.plotly_chart(api.layer_bars(table, {"macs": "variant", "base_macs": "baseline"}, "MACs",
                                       "MACs per layer"), key="layer_macs")
        st.plotly_chart(api.layer_bars(table, {"weight_bytes": "variant", "base_weight_bytes": "baseline"},
                                       "weight bytes", "Weight bytes per layer"), key="layer_bytes")
    art, bart = row["artifact_path"], base["artifact_path"] if base is not None else None
    with t2:
        if isinstance(art, str) and isinstance(bart, str):
            ch = api.graph_changes(bart, art)
            st.markdown(f"**Op count changes** ({len(ch['lost'])} nodes lost, {len(ch['gained'])} gained)")
            st.dataframe(ch["ops"], hide_index=True)
            a, b = st.columns(2)
            a.markdown("**Lost**")
            a.dataframe(ch["lost"], hide_index=True, height=220)
            b.markdown("**Gained**")
            b.dataframe(ch["gained"], hide_index=True, height=220)
            if st.toggle("Show what ONNX Runtime fuses at run time (profiles the variant, ~1 s)", key="fusion"):
                st.dataframe(api.runtime_fusion(art), hide_index=True)
        else:
            st.info("No ONNX artifact stored for this variant.")
    with t3:
        if isinstance(bart, str):
            st.plotly_chart(api.sensitivity_heatmap(api.sensitivity(bart),
                                                    "Quantization sensitivity proxy: weight SQNR per layer"),
                            key="sens")
            st.caption("Estimated proxy from the baseline's weights: red layers lose the most signal at low "
                       "bit-widths — keep them at higher precision.")
    with t4:
        rl = api.roofline(art, device) if isinstance(art, str) and device != api.MEASURED_DEVICE else None
        if rl is None or rl["points"].empty:
            st.info("Pick a catalog device in 'Estimate on' to see each layer on its roofline.")
        else:
            st.plotly_chart(api.roofline_chart(rl["points"], rl["peak_gflops"], rl["bw_gbs"], rl["device"]),
                            key="roofline")
