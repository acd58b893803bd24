"""Optimize: choose pruning, bit-widths, target hardware; run one variant or a sweep (live, cancellable)."""

from __future__ import annotations

import numpy as np
import streamlit as st

import dashboard as ui
from optim import api

BITS = {32: "FP32", 16: "FP16", 8: "INT8", 4: "INT4"}
ui.setup("Optimize")
st.title(":material/tune: Optimize")
loaded = ui.current_model()
if loaded is None:
    st.info("Load a model on the Home page first.")
    st.page_link(ui.PAGES["home"], label="Go to Home", icon=":material/home:")
    st.stop()
st.caption(f"Model: **{loaded.label}** · evaluation on {len(loaded.test) if loaded.test is not None else 0} "
           f"{'labelled' if loaded.has_labels else 'unlabelled (agreement only)'} samples")

left, right = st.columns(2)
with left.container(border=True):
    st.markdown("**Pruning**")
    mode = st.radio("Ratio", ["Single value", "Range (sweep)"], horizontal=True, key="ratio_mode")
    if mode == "Single value":
        ratios = (float(st.slider("Pruning ratio", 0.0, 0.9, 0.3, 0.05, key="ratio_one",
                                  help="Fraction of channels (structured) or weights (unstructured) removed")),)
    else:
        lo, hi = st.slider("Ratio range", 0.0, 0.9, (0.0, 0.6), 0.05, key="ratio_range")
        steps = st.number_input("Steps", 2, 8, 3, key="ratio_steps")
        ratios = tuple(float(r) for r in np.round(np.linspace(lo, hi, int(steps)), 3))
    kinds = st.multiselect("Kind", ["structured", "unstructured", "auto"], default=["structured"], key="kinds",
                           help="Structured removes whole channels (smaller, faster); unstructured zeroes "
                                "single weights (same dense file, smaller when compressed); auto = structured "
                                "with per-layer ratios planned from a measured sensitivity analysis, at the "
                                "MACs budget of uniform pruning at that ratio")
    importance_choices = api.pass_choices("prune_structured", "importance") or ["l2", "l1", "random"]
    importance = st.selectbox("Importance", importance_choices, key="importance",
                              help="How channels are scored before the lowest are removed")
with right.container(border=True):
    st.markdown("**Quantization and target**")
    bits = st.multiselect("Bit-widths", [32, 16, 8, 4], default=[32, 8], key="bits", format_func=BITS.get,
                          help="FP32 = no quantization; INT4 runs MatMul layers natively, convolutions are *simulated*")
    st.caption("Below 8 bits the runtime cannot execute convolutions here: those variants are **simulated** "
               "(fake-quantised weights for accuracy, packed bytes for size).")
    devices = api.list_devices()
    dev_names = dict(zip(devices["id"], devices["name"], strict=False))
    target = st.selectbox("Target hardware", list(dev_names), format_func=lambda d: dev_names[d], key="target",
                          help="Latency on catalog devices is *estimated*; 'This CPU' is measured")
    st.session_state["target_device"] = target
    distill, budget = False, 30.0
    if api.pass_available("distill") and not api.distill_supported():
        st.caption("Distillation is installed as a pass; sweeps do not schedule it yet.")
    if api.distill_supported():
        no_train = loaded.train is None
        distill = st.toggle("Distillation (recover accuracy from the original model)", key="distill",
                            disabled=no_train, help="Needs a training split kept apart from the evaluation data "
                            "(bundled samples have one; uploads do not yet)" if no_train else None)
        budget = float(st.slider("Distillation budget (s per variant)", 5, 300, 30, 5, key="distill_budget",
                                 disabled=not distill))
        st.caption("Adds a distilled copy of every pruned variant, fine-tuned on the training split to mimic "
                   "the original model; marked *distilled* on the Pareto page.")
    auto_bits = st.toggle("Automatic per-layer mixed precision", key="auto_bits",
                          help="Measures each layer's sensitivity, then picks 8/4/3/2 bits per layer at the packed "
                               "size of uniform INT4 (simulated: fake-quantised weights).")

with st.expander("Measurement settings"):
    n_test = len(loaded.test) if loaded.test is not None else 0
    eval_limit = st.number_input("Evaluation samples per variant", 50, max(50, n_test), min(300, max(50, n_test)),
                                 50, key="eval_limit", help="Fewer samples = faster, wider 95 % intervals")
    lat_budget = st.slider("Latency budget per variant (s)", 0.1, 2.0, 0.3, 0.1, key="lat_budget")
    run_on_names = dict(api.run_on_choices())  # more than "this machine" when $OPTIM_RAY_ADDRESS names a cluster
    run_on = ""
    if len(run_on_names) > 1:
        run_on = st.selectbox("Run on", list(run_on_names), format_func=run_on_names.get, key="run_on",
                              help="On a Ray cluster every variant is a task; its latency is measured on the node "
                                   "that ran it, and the Pareto page keeps one front per kind of hardware")

req = api.SweepRequest(ratios=ratios, bits=tuple(sorted(bits, reverse=True)) or (32,),
                       prune_kinds=tuple(kinds) or ("structured",), importance=importance, target_device=target,
                       eval_limit=int(eval_limit), latency_budget_s=float(lat_budget), distill=distill,
                       distill_budget_s=budget, auto_bits=auto_bits, run_on=run_on)
one = api.SweepRequest(ratios=(ratios[-1],), bits=(req.bits[-1],), prune_kinds=(req.prune_kinds[0],),
                       importance=importance, target_device=target, eval_limit=int(eval_limit),
                       latency_budget_s=float(lat_budget), distill=distill, distill_budget_s=budget, run_on=run_on)
job = ui.current_job()
busy = job is not None and job.state == "running"
b = st.columns([1, 1, 3])
if b[0].button("Run one variant", key="run_one", disabled=busy,
               help=f"{one.prune_kinds[0]} {one.ratios[0]:.0%} · {BITS.get(one.bits[0])} (plus the FP32 baseline)"):
    with ui.guard("Starting the variant"):
        ui.start(loaded, one)
        st.rerun()
if b[1].button(f"Run sweep ({req.n_variants} variants)", type="primary", key="run_sweep", disabled=busy):
    with ui.guard("Starting the sweep"):
        ui.start(loaded, req)
        st.rerun()
b[2].caption("Variants appear below as they finish; the Pareto page updates live too.")


def live() -> None:
    job = ui.current_job()
    if job is None:
        return
    ui.progress_panel(job)
    sid = job.sweep_id or ui.current_sweep()
    if sid:
        with ui.guard("Reading results"):
            df = api.variants(sid, st.session_state.get("target_device"))
            cols = ["label", "status", "metric", "metric_lo", "metric_hi", "latency_ms", "size_mb", "flags"]
            st.dataframe(df[[c for c in cols if c in df]], hide_index=True,
                         column_config={"metric": st.column_config.NumberColumn("accuracy %", format="%.2f"),
                                        "label": st.column_config.TextColumn("variant", width="medium", pinned=True),
                                        "metric_lo": st.column_config.NumberColumn("95 % lo", format="%.2f"),
                                        "metric_hi": st.column_config.NumberColumn("95 % hi", format="%.2f"),
                                        "latency_ms": st.column_config.NumberColumn(
                                            "latency ms (measured)", format=f"%.{api.ms_decimals(df['latency_ms'])}f"),
                                        "size_mb": st.column_config.NumberColumn(
                                            "size MB", format="%.3f", help="packed size for simulated bit-widths"),
                                        "flags": st.column_config.TextColumn("flags", width="large")})
    if job.state == "done":
        st.success(f"Sweep finished: {job.done} variants.")
        st.page_link(ui.PAGES["pareto"], label="See the Pareto front →", icon=":material/scatter_plot:")
    seen = st.session_state.setdefault("seen_jobs", set())
    if job.state != "running" and job.id not in seen:
        seen.add(job.id)
        st.rerun()


running = ui.current_job() is not None and ui.current_job().state == "running"
st.fragment(live, run_every=1.0 if running else None)()
