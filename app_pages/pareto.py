"""Pareto: accuracy × latency × size of every variant, the front, constraints and a flagged table."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from optim import api
from ui import cache, nav, state, tables, widgets
from ui.guard import guard

VIEWS = {"Accuracy vs latency": ("target_ms", "metric"), "Accuracy vs size": ("size_mb", "metric"),
         "Size vs latency": ("target_ms", "size_mb"), "3-D": None}

st.title(":material/scatter_plot: Pareto front")
loaded = widgets.current_model()
sid = widgets.current_sweep(loaded)
job = widgets.current_job(sid)
if sid is None:
    st.info("No sweep for this model yet. Run one on the Optimize page, or try the demo from Home.")
    st.page_link(nav.page("optimize"), label="Go to Optimize", icon=":material/tune:")
    st.stop()

device = widgets.device_picker("Latency on", "pareto_device", state.settings().target)
note = "measured on this CPU" if device == api.MEASURED_DEVICE else f"estimated on {widgets.device_name(device)}"
running = job is not None and job.state == "running"


def live() -> None:
    job = widgets.current_job(sid)
    widgets.sweep_panel(job, sid)
    if job is not None and job.state == "running":
        with guard("Reading results"):
            df = api.variants(sid, device)
            if df["status"].eq("ok").any():
                st.plotly_chart(api.pareto_2d(df, latency_note=note, title="Variants so far (live)"),
                                key="live_chart")
    widgets.rerun_once_when_ended(job)


widgets.poll(live, running)
if running:
    st.stop()


def picked(event: Any) -> str | None:
    """The variant id of the clicked point (customdata), if the event holds one."""
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


def _slider(col: Any, label: str, hi: float, key: str) -> float | None:
    """A 'max' slider; None while it sits at its maximum (no constraint, no shading)."""
    hi = float(f"{hi:.3g}") if hi > 0 else 1.0
    value = col.slider(label, 0.0, hi, hi, hi / 100, key=key, format="%.3g")
    return None if value >= hi else value


@st.fragment
def explorer(df: pd.DataFrame, note: str) -> None:
    """Constraints, chart and table: a slider move or a click reruns only this fragment."""
    with guard("Drawing the front"):
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
        st.caption(f"Recommended overall: **{rec['label']}** ({rec['metric']:.2f} % {metric_name}, "
                   f"{api.fmt_ms(rec['target_ms'])}, {rec['size_mb']:.2f} MB): the fastest Pareto-optimal variant "
                   "whose metric is not significantly below the baseline's. 'Best' above is simply the most "
                   "accurate one inside the constraints.")
    best_id = best["variant_id"] if best is not None else None
    ids = ok["variant_id"].tolist()
    if state.variant_id() not in ids:
        # settle the selection *before* drawing: the chart's identity includes its figure, so a figure that
        # changed between drawing and the click's rerun would drop that click (the first-click bug)
        state.set_variant(best_id or ids[0])
    view = st.segmented_control("View", list(VIEWS), default="Accuracy vs latency", key="pareto_view") \
        or "Accuracy vs latency"
    if VIEWS[view] is None:
        st.plotly_chart(api.pareto_3d(df, latency_note=note), key="chart_3d")
    else:
        x, y = VIEWS[view]
        fig = api.pareto_2d(df, x, y, max_ms=max_ms, max_mb=max_mb, min_metric=min_acc, best_id=best_id,
                            selected_id=state.variant_id(), latency_note=note)
        ev = st.plotly_chart(fig, key=f"chart_{x}_{y}", on_select="rerun", selection_mode="points")
        vid = picked(ev)
        if vid in ids and vid != state.variant_id():
            state.set_variant(vid)
            st.rerun(scope="fragment")  # redraw the chart with the selection marked
    st.caption(f"Latency: {note}. Colour = bit-width · symbol = pruning (circle none, square structured, "
               "diamond unstructured, triangle auto per-layer) · open marker = simulated · "
               + ("large marker = Pareto-optimal · dashed line joins the front. Drag to rotate."
                  if VIEWS[view] is None else
                  "dot inside = distilled · thick ring = Pareto-optimal in accuracy, latency and size · dashed "
                  "staircase = front of the two axes shown · bars = 95 % interval. Click a point to select it."))
    if st.session_state.get("pick_variant") != state.variant_id():  # the click's, the URL's, another page's
        st.session_state["pick_variant"] = state.variant_id()
    c = st.columns([3, 2], vertical_alignment="bottom")
    chosen = c[0].selectbox("Selected variant (click a point, or pick here)", ids, key="pick_variant",
                            format_func=lambda v: widgets.variant_label(df, v),
                            on_change=lambda: state.set_variant(st.session_state["pick_variant"]))
    state.set_variant(chosen)
    if c[1].button("Open its per-layer view →", type="primary", key="open_layers"):
        st.switch_page(nav.page("layers"), query_params=st.query_params.to_dict())
    st.subheader("All variants")
    tables.variants_table(df, key="variants_table", note=note)
    if df["bits"].eq(8).any():
        st.caption(api.int8_note(api.cpu_has_vnni()))


with guard("Reading the sweep"):
    df = cache.variants(sid, device)
    if df.empty:
        st.warning(f"Sweep `{sid}` has no stored variants. Check the link, or run a sweep on the Optimize page.")
        st.stop()
    ok = df[df["status"].eq("ok") & df["metric"].notna()]
    if ok.empty:
        st.error("Every variant of this sweep failed; the reasons are listed above. Try other settings.")
        st.stop()
    if device != api.MEASURED_DEVICE and not ok["target_source"].eq("estimated").any():
        st.warning(f"No estimate is available for {widgets.device_name(device)}: latency below is measured on "
                   "this CPU.")
        note = "measured on this CPU"
    if (mixed := api.hardware_note(df)) is not None:
        st.warning(mixed)
        note = note.replace("on this CPU", "on the machine named per variant")
    explorer(df, note)
