"""Layers: where the selected variant's time, bytes and MACs go, against the baseline; and the loaded
model's measured per-layer sensitivity (a background job, stored per model and data)."""

from __future__ import annotations

import streamlit as st

from optim import api
from ui import cache, state, widgets
from ui.guard import guard


def _sens_panel(job: api.SweepJob) -> None:
    widgets.job_panel(job, running="Measuring sensitivity", unit="layer settings", key="sens_cancel",
                 cancel=("Cancel", "Stops before the next layer setting", "Cancelling the sensitivity analysis…"),
                 failed="The sensitivity analysis stopped",
                 cancelled="Sensitivity analysis cancelled; nothing was stored.")


def measured_sensitivity() -> None:
    """The loaded model's stored measured sensitivity (heatmap + reading), or a button that measures it."""
    loaded = widgets.current_model()
    if loaded is None or all(d is None for d in (loaded.train, loaded.calib, loaded.test)):
        st.info("Load a model with input data on Home to measure its per-layer sensitivity.")
        return
    with guard("Measuring sensitivity"):
        job = api.get_job(st.session_state.get("sens_job_id"))
        if job is not None:
            _sens_panel(job)
        df = api.stored_sensitivity(loaded)
        data, source = api.sensitivity_data(loaded)
        if df is not None:
            view = api.sensitivity_view(df)
            st.plotly_chart(api.sensitivity_chart(view["table"], view["metric_name"]), key="sens_measured")
            st.markdown(f"**Reading.** {view['reading']}")
            st.markdown("**Top 5 most sensitive layers** (worst drop over all settings)")
            drop_col = f"{view['metric_name']} drop (points)"
            st.dataframe(view["top"], hide_index=True, key="sens_top", column_config={
                drop_col: st.column_config.NumberColumn(drop_col, format="%.1f"),
                "rel_error": st.column_config.NumberColumn("relative output error", format="%.2f")})
            base = (f", baseline accuracy {view['baseline']:.1f} %"
                    if view["baseline"] is not None and view["metric_name"] == "accuracy" else "")
            st.caption(f"Measured on {loaded.label}: each layer alone pruned (smallest-L1 output channels zeroed) "
                       f"or fake-quantised per channel; {source}{base}. One sample = "
                       f"{100 / max(len(data), 1):.2f} points, so drops under ~1 point are noise.")
        elif job is None or job.state != "running":
            est = cache.sensitivity_estimate_s(state.model_ref())
            st.caption(f"Not measured yet for {loaded.label}: runs every prunable/quantizable layer alone at "
                       f"prune 25/50/75 % and 8/4/2 bits on {source}.")
            if st.button(f"Measure sensitivity (~{max(est, 1):.0f} s)", key="measure_sens", type="primary"):
                st.session_state["sens_job_id"] = api.start_sensitivity(loaded).id
                st.rerun()
        if job is not None and job.state != "running" and job.id not in st.session_state.setdefault("sens_seen", set()):
            st.session_state["sens_seen"].add(job.id)
            st.rerun()  # stop polling


def measured_section(sweep_id: str | None = None) -> None:
    st.subheader("Sensitivity (measured)")
    loaded, info = widgets.current_model(), api.sweep_info(sweep_id) if sweep_id else None
    if loaded is not None and info and info.get("model_hash") not in (None, loaded.handle.content_hash):
        st.caption(f"For the loaded model ({loaded.label}); this sweep was run on another model "
                   f"({info.get('model_name')}): its weight-only proxy is below.")
    job = api.get_job(st.session_state.get("sens_job_id"))
    st.fragment(measured_sensitivity, run_every=1.0 if job is not None and job.state == "running" else None)()


st.title(":material/layers: Layers")
loaded = widgets.current_model()
sid = widgets.current_sweep(loaded)
vid = state.variant_id()
if sid is None:
    st.info("No sweep for this model yet: run one on the Optimize page, or try the demo from Home.")
    measured_section()
    st.stop()

with guard("Reading the sweep"):
    df = cache.variants(sid)
    ok = df[df["status"].eq("ok")]
    if ok.empty:
        st.warning("This sweep has no finished variants yet.")
        st.stop()
    ids = ok["variant_id"].tolist()
    if vid not in ids:
        nonbase = [i for i in ids if (ok.set_index("variant_id").loc[i, "prune_ratio"] or 0) > 0] or ids
        vid = nonbase[0]
    c = st.columns([3, 2])
    if st.session_state.get("layers_variant") != vid:
        st.session_state["layers_variant"] = vid  # the selection made on another page (or in the URL) wins
    vid = c[0].selectbox("Variant", ids, format_func=lambda v: widgets.variant_label(df, v), key="layers_variant",
                         on_change=lambda: state.set_variant(st.session_state["layers_variant"]))
    state.set_variant(vid)
    with c[1]:
        device = widgets.device_picker("Estimate on", "layers_device", state.settings().target)
    dev_name = widgets.device_name(device)

    view = api.layer_view(sid, vid, device)
    row, base, table = view["row"], view["base"], view["table"]
    m = st.columns(4)
    ci = f"95 % interval {row['metric_lo']:.2f}–{row['metric_hi']:.2f} %" if row["metric_lo"] == row["metric_lo"] else None
    m[0].metric(f"{str(row['metric_name']).capitalize()} (measured)", f"{row['metric']:.2f} %", help=ci,
                delta=f"{row['metric'] - base['metric']:+.2f} pt" if base is not None else None)
    m[1].metric("Latency (measured, this CPU)", f"{row['latency_ms']:.2f} ms",
                delta=f"{row['latency_ms'] - base['latency_ms']:+.2f} ms" if base is not None else None,
                delta_color="inverse")
    m[2].metric("Size" + (" (simulated, packed)" if row["simulated"] else ""), f"{row['size_mb']:.3f} MB",
                delta=f"{row['size_mb'] - base['size_mb']:+.3f} MB" if base is not None else None,
                delta_color="inverse")
    if view["est_total_ms"] is not None:
        m[3].metric(f"Latency (estimated, {dev_name})", f"{view['est_total_ms']:.2f} ms")
    if row["flags"]:
        st.warning(f"⚑ {row['flags']}")
    for note in view["notes"]:
        st.caption(f"ℹ️ {note}")

    st.subheader("Time per layer")
    cols = {"ms": "variant (measured)", "base_ms": "baseline (measured)"}
    if table["est_ms"].notna().any():
        cols["est_ms"] = f"variant (estimated, {dev_name})"
    st.plotly_chart(api.layer_bars(table, cols, "time (ms)", "Where the time goes (top 25 layers)"),
                    key="layer_time")
    prof = view["profile"]
    if "kernels" in table and table["kernels"].notna().any():
        st.caption(f"Measured = ONNX Runtime profiler at optimisation level '{row['opt_level']}' (the level this "
                   "variant's latency is measured at), 1 thread: each runtime kernel (fused, quantized, layout) is "
                   "counted at the ONNX layer it came from; column 'kernels' lists what actually ran, status 'fused' marks "
                   "a node with no kernel of its own (run inside another layer's kernel). "
                   "Estimated = roofline model of the chosen target.")
        if prof:
            st.caption(f"Profiled kernels add up to {prof['node_sum_ms']:.3f} ms of the {prof['run_ms']:.3f} ms "
                       f"whole run ({prof['coverage']:.0%}); the rest is executor overhead between kernels.")
    else:
        st.caption("Measured = ONNX Runtime profiler with graph optimisations off (stored by an older sweep: each "
                   "bar is one unfused ONNX node, not what runs at the latency's level), 1 thread. "
                   "Estimated = roofline model of the chosen target.")
    st.dataframe(table, hide_index=True, key="layer_table", column_config={
        "node": st.column_config.TextColumn("layer", pinned=True),
        "base_ms": st.column_config.NumberColumn("baseline ms", format="%.4f"),
        "ms": st.column_config.NumberColumn("variant ms", format="%.4f"),
        "est_ms": st.column_config.NumberColumn("estimated ms", format="%.4f"),
        "kernels": st.column_config.TextColumn("runtime kernels"),
        "base_kernels": st.column_config.TextColumn("baseline kernels"),
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
        measured_section(sid)
        if isinstance(bart, str):
            st.subheader("Weight-only proxy (no data)")
            st.plotly_chart(api.sensitivity_heatmap(api.sensitivity(bart),
                                                    "Weight-only proxy (no data): weight SQNR per layer"),
                            key="sens")
            st.caption("Estimated from the sweep baseline's weights alone, without running the model: red layers "
                       "lose the most signal at low bit-widths. The measured analysis above is the one to trust.")
    with t4:
        rl = api.roofline(art, device) if isinstance(art, str) and device != api.MEASURED_DEVICE else None
        if rl is None or rl["points"].empty:
            st.info("Pick a catalog device in 'Estimate on' to see each layer on its roofline.")
        else:
            st.plotly_chart(api.roofline_chart(rl["points"], rl["peak_gflops"], rl["bw_gbs"], rl["device"],
                                               rl.get("effective")),
                            key="roofline")
