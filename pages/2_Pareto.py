"""Pareto: accuracy × latency × size of every variant, the front, constraints and a flagged table."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

import dashboard as ui
from optim import api

ui.setup("Pareto")
st.title(":material/scatter_plot: Pareto front")
if st.query_params.get("job") and not st.session_state.get("job_id"):
    st.session_state["job_id"] = st.query_params["job"]
sid = ui.current_sweep()
job = ui.current_job()
if sid is None and job is None:
    st.info("No sweep yet. Run one on the Optimize page, or try the demo from Home.")
    st.page_link(ui.PAGES["optimize"], label="Go to Optimize", icon=":material/tune:")
    st.stop()

devices = api.list_devices()
dev_names = dict(zip(devices["id"], devices["name"], strict=False))
default_dev = st.session_state.get("target_device", api.MEASURED_DEVICE)
device = st.selectbox("Latency on", list(dev_names), index=list(dev_names).index(default_dev)
                      if default_dev in dev_names else 0, format_func=lambda d: dev_names[d], key="pareto_device")
note = "measured on this CPU" if device == api.MEASURED_DEVICE else f"estimated on {dev_names[device]}"


def picked(event: Any) -> str | None:
    try:
        points = event.selection.points if event is not None else []
    except AttributeError:
        return None
    for p in points or []:
        cd = p.get("customdata")
        cd = cd[0] if isinstance(cd, list) and cd else cd
        if isinstance(cd, str):
            return cd
    return None


def live() -> None:
    job = ui.current_job()
    if job is not None:
        ui.progress_panel(job)
    current = job.sweep_id if job is not None and job.sweep_id else ui.current_sweep()
    if current and job is not None and job.state == "running":
        with ui.guard("Reading results"):
            df = api.variants(current, device)
            st.plotly_chart(api.pareto_2d(df, latency_note=note, title="Variants so far (live)"), key="live_chart")
    seen = st.session_state.setdefault("seen_jobs", set())
    if job is not None and job.state != "running" and job.id not in seen:
        seen.add(job.id)
        st.rerun()


running = job is not None and job.state == "running"
st.fragment(live, run_every=1.0 if running else None)()
if running or sid is None:
    st.stop()

SIZE_HELP = "File size; for simulated bit-widths, the packed size the weights would take"
VIEWS = {"Accuracy vs latency": ("target_ms", "metric"), "Accuracy vs size": ("size_mb", "metric"),
         "Size vs latency": ("target_ms", "size_mb"), "3-D": None}


def _slider(col, label: str, hi: float, key: str) -> float | None:
    """A 'max' slider; None while it sits at its maximum (no constraint, no shading)."""
    hi = float(f"{hi:.3g}") if hi > 0 else 1.0
    value = col.slider(label, 0.0, hi, hi, hi / 100, key=key, format="%.3g")
    return None if value >= hi else value


@st.fragment
def explorer(df: pd.DataFrame, note: str) -> None:
    """Constraints, chart and table: a slider move reruns only this fragment."""
    with ui.guard("Drawing the front"):
        _explorer(df, note)


def _explorer(df: pd.DataFrame, note: str) -> None:
    ok = df[df["status"].eq("ok") & df["metric"].notna()]
    metric_name = ok["metric_name"].iloc[0]
    with st.container(border=True):
        st.markdown("**Constraints**: the shaded region is feasible; the star marks the best variant inside it")
        c = st.columns(3)
        max_ms = _slider(c[0], "Max latency (ms)", float(ok["target_ms"].max()) * 1.05, f"max_ms_{device}")
        max_mb = _slider(c[1], "Max size (MB)", float(ok["size_mb"].max()) * 1.05, "max_mb")
        min_acc = c[2].slider(f"Min {metric_name} (%)", 0.0, 100.0, 0.0, 0.5, key="min_acc") or None
    df, best = api.apply_constraints(df, max_ms, max_mb, min_acc)
    if best is not None:
        sim = " (simulated precision: packed size, fake-quantised accuracy)" if best["simulated"] else ""
        st.success(f"Best under constraints: **{best['label']}**: {best['metric']:.2f} % {metric_name}, "
                   f"{api.fmt_ms(best['target_ms'])} ({note}), {best['size_mb']:.2f} MB{sim}.")
    else:
        st.warning("No variant meets all three constraints: relax one of them.")
    rec = api.recommend(df)
    if rec is not None and (best is None or rec["variant_id"] != best["variant_id"]):
        st.caption(f"Recommended overall: **{rec['label']}** ({rec['metric']:.2f} %, {api.fmt_ms(rec['target_ms'])}, "
                   f"{rec['size_mb']:.2f} MB): the fastest Pareto-optimal variant whose accuracy is not significantly "
                   "below the baseline's. 'Best' above is simply the most accurate one inside the constraints.")
    best_id = best["variant_id"] if best is not None else None
    view = st.segmented_control("View", list(VIEWS), default="Accuracy vs latency", key="pareto_view") \
        or "Accuracy vs latency"
    if VIEWS[view] is None:
        st.plotly_chart(api.pareto_3d(df, latency_note=note), key="chart_3d")
    else:
        x, y = VIEWS[view]
        fig = api.pareto_2d(df, x, y, max_ms=max_ms, max_mb=max_mb, min_metric=min_acc, best_id=best_id,
                            selected_id=st.session_state.get("selected_variant"), latency_note=note)
        ev = st.plotly_chart(fig, key=f"chart_{x}_{y}", on_select="rerun", selection_mode="points")
        vid = picked(ev)
        if vid and vid != st.session_state.get("selected_variant"):
            st.session_state["selected_variant"] = st.session_state["pick_variant"] = vid
            st.rerun(scope="fragment")
    st.caption(f"Latency: {note}. Colour = bit-width · symbol = pruning (circle none, square structured, "
               "diamond unstructured, triangle auto per-layer) · open marker = simulated · "
               + ("large marker = Pareto-optimal · dashed line joins the front. Drag to rotate."
                  if VIEWS[view] is None else
                  "dot inside = distilled · thick ring = Pareto-optimal in accuracy, latency and size · dashed "
                  "staircase = front of the two axes shown · bars = 95 % interval. Click a point to select it."))
    ids = ok["variant_id"].tolist()
    if st.session_state.get("pick_variant") not in ids:
        cur = st.session_state.get("selected_variant")
        st.session_state["pick_variant"] = cur if cur in ids else (best_id or ids[0])
    c = st.columns([3, 2], vertical_alignment="bottom")
    chosen = c[0].selectbox("Selected variant (click a point, or pick here)", ids, key="pick_variant",
                            format_func=lambda v: ui.variant_label(df, v))
    st.session_state["selected_variant"] = chosen
    if c[1].button("Open its per-layer view →", type="primary", key="open_layers"):
        st.switch_page(ui.PAGES["layers"], query_params={"sweep": sid, "variant": chosen})
    variants_table(df, metric_name, note)


def variants_table(df: pd.DataFrame, metric_name: str, note: str) -> None:
    st.subheader("All variants")
    cols = ["label", "metric", "metric_lo", "metric_hi", "target_ms", "size_mb", "flags", "pareto", "feasible",
            "latency_ms", "bits", "prune_kind", "prune_ratio", "variant_id"]
    if note.startswith("measured"):
        cols.remove("latency_ms")  # same numbers as the latency column
    table = df[[c for c in cols if c in df]].sort_values("metric", ascending=False)
    ms = f"%.{api.ms_decimals(table['target_ms'])}f"
    st.dataframe(table, hide_index=True, key="variants_table", column_config={
        "label": st.column_config.TextColumn("variant", width="medium", pinned=True),
        "metric": st.column_config.NumberColumn(f"{metric_name} %", format="%.2f"),
        "metric_lo": st.column_config.NumberColumn("95 % lo", format="%.2f"),
        "metric_hi": st.column_config.NumberColumn("95 % hi", format="%.2f"),
        "target_ms": st.column_config.NumberColumn(f"latency ms ({note})", format=ms),
        "latency_ms": st.column_config.NumberColumn("latency ms (measured)",
                                                    format=f"%.{api.ms_decimals(df['latency_ms'])}f"),
        "size_mb": st.column_config.NumberColumn("size MB", format="%.3f", help=SIZE_HELP),
        "bits": st.column_config.NumberColumn("bits", help="0 = automatic per-layer mixed precision"),
        "prune_ratio": st.column_config.NumberColumn("ratio", format="%.2f"),
        "flags": st.column_config.TextColumn("flags", width="large")})
    if df["bits"].eq(8).any():
        st.caption(api.int8_note(api.cpu_has_vnni()))


with ui.guard("Reading the sweep"):
    df = ui.variants(sid, device)
    if df.empty:
        st.warning(f"Sweep `{sid}` has no stored variants. Check the link, or run a sweep on the Optimize page.")
        st.stop()
    ok = df[df["status"].eq("ok") & df["metric"].notna()]
    if ok.empty:
        st.error("Every variant of this sweep failed; the table below says why. Try other settings.")
        st.dataframe(df[["label", "flags"]], hide_index=True)
        st.stop()
    if device != api.MEASURED_DEVICE and not ok["target_source"].eq("estimated").any():
        st.warning(f"No estimate is available for {dev_names[device]}: latency below is measured on this CPU.")
        note = "measured on this CPU"
    if (mixed := api.hardware_note(df)) is not None:
        st.warning(mixed)
        note = note.replace("on this CPU", "on the machine named per variant")
    explorer(df, note)
