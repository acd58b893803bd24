"""Optimize: choose pruning, bit-widths, target hardware; run one variant or a sweep (live, cancellable).

The form is one :class:`ui.settings.OptimizeSettings` kept in the session and the URL (``?opt=``): a page
change, a reload or a shared link shows the settings the results below were run with.
"""

from __future__ import annotations

import streamlit as st

from optim import api
from ui import nav, state, tables, widgets
from ui.guard import guard
from ui.settings import KINDS, OptimizeSettings

BITS = {32: "FP32", 16: "FP16", 8: "INT8", 4: "INT4"}
MODES = {"one": "Single value", "range": "Range (sweep)"}

st.title(":material/tune: Optimize")
loaded = widgets.need_model()
n_test = len(loaded.test) if loaded.test is not None else 0
st.caption(f"Model: **{loaded.label}** · evaluation on up to {n_test} "
           f"{loaded.judged_by}")

s = state.settings()
eval_max = max(50, n_test)
for key, value in {"ratio_mode": MODES[s.ratio_mode], "ratio_one": s.ratio_one, "ratio_range": (s.ratio_lo, s.ratio_hi),
                   "ratio_steps": s.steps, "kinds": list(s.kinds), "bits": list(s.bits), "distill": s.distill,
                   "distill_budget": int(s.distill_budget), "distill_seed": int(s.distill_seed),
                   "auto_bits": s.auto_bits,
                   "eval_limit": int(min(max(s.eval_limit, 50), eval_max)), "lat_budget": s.lat_budget}.items():
    if key not in st.session_state or state.just_entered():  # the form shows the settings, also after a page
        st.session_state[key] = value  # change (Streamlit drops or keeps stale widget values of unshown pages)

left, right = st.columns(2)
with left.container(border=True):
    st.markdown("**Pruning**")
    mode = st.radio("Ratio", list(MODES.values()), horizontal=True, key="ratio_mode")
    if mode == MODES["one"]:
        st.slider("Pruning ratio", 0.0, 0.9, step=0.05, key="ratio_one",
                  help="Fraction of channels (structured) or weights (unstructured) removed")
    else:
        st.slider("Ratio range", 0.0, 0.9, step=0.05, key="ratio_range")
        st.number_input("Steps", 2, 8, key="ratio_steps")
    st.multiselect("Kind", list(KINDS), key="kinds",
                   help="Structured removes whole channels (smaller, faster); unstructured zeroes single weights "
                        "(same dense file, smaller when compressed); auto = structured with per-layer ratios "
                        "planned from a measured sensitivity analysis, at the MACs budget of uniform pruning at "
                        "that ratio")
    choices = api.pass_choices("prune_structured", "importance") or ["l2", "l1", "random"]
    if st.session_state.get("importance") not in choices or state.just_entered():
        st.session_state["importance"] = s.importance if s.importance in choices else choices[0]
    st.selectbox("Importance", choices, key="importance", help="How channels are scored before the lowest are removed")
with right.container(border=True):
    st.markdown("**Quantization and target**")
    st.multiselect("Bit-widths", list(BITS), key="bits", format_func=BITS.get,
                   help="FP32 = no quantization; INT4 runs MatMul layers natively, convolutions are *simulated*")
    st.caption("Below 8 bits the runtime cannot execute convolutions here: those variants are **simulated** "
               "(fake-quantised weights for accuracy, packed bytes for size).")
    widgets.device_picker("Target hardware", "target", s.target, reset=state.just_entered(),
                          help="Latency on catalog devices is *estimated*; 'This CPU' is measured")
    if api.distill_supported():
        can_distill = loaded.train is not None or loaded.own_data
        st.toggle("Distillation (recover accuracy from the original model)", key="distill", disabled=not can_distill,
                  help=None if can_distill else "Needs data of your own: upload evaluation data (labelled or not) "
                                                "or a training file on Home")
        st.slider("Distillation budget (s per variant)", 5, 300, step=5, key="distill_budget",
                  disabled=not st.session_state["distill"])
        if st.session_state["distill"] and can_distill:
            if loaded.train is None:
                st.number_input("Split seed", 0, 2**31 - 1, key="distill_seed",
                                help="Seeds the split of your data into rows to distil on and held-out rows")
            try:
                st.caption(f"Data: {api.distill_split(loaded, int(st.session_state['distill_seed']))}")
            except api.OptimError as err:
                st.warning(str(err))
        st.caption("Adds a distilled copy of every pruned variant, fine-tuned to mimic the original model on data "
                   "kept apart from the evaluation data; marked *distilled* on the Pareto page.")
    elif api.pass_available("distill"):
        st.caption("Distillation is installed as a pass; sweeps do not schedule it yet.")
    st.toggle("Automatic per-layer mixed precision", key="auto_bits",
              help="Measures each layer's sensitivity, then picks 8/4/3/2 bits per layer at the packed size of "
                   "uniform INT4 (simulated: fake-quantised weights).")

with st.expander("Measurement settings"):
    st.number_input("Evaluation samples per variant", 50, eval_max, step=50, key="eval_limit",
                    help="Fewer samples = faster, wider 95 % intervals; Home's baseline uses the same number")
    st.slider("Latency budget per variant (s)", 0.1, 2.0, step=0.1, key="lat_budget")
    run_on_names = dict(api.run_on_choices())  # more than "this machine" when $OPTIM_RAY_ADDRESS names a cluster
    if len(run_on_names) > 1:
        if st.session_state.get("run_on") not in run_on_names or state.just_entered():
            st.session_state["run_on"] = s.run_on if s.run_on in run_on_names else next(iter(run_on_names))
        st.selectbox("Run on", list(run_on_names), format_func=run_on_names.get, key="run_on",
                     help="On a Ray cluster every variant is a task; its latency is measured on the node that ran "
                          "it, and the Pareto page keeps one front per kind of hardware")

ss = st.session_state
lo, hi = ss["ratio_range"]
new = OptimizeSettings(
    ratio_mode="one" if ss["ratio_mode"] == MODES["one"] else "range", ratio_one=float(ss["ratio_one"]),
    ratio_lo=float(lo), ratio_hi=float(hi), steps=int(ss["ratio_steps"]), kinds=tuple(ss["kinds"]),
    importance=ss["importance"], bits=tuple(ss["bits"]), target=ss["target"],
    distill=bool(ss.get("distill", False)) and (loaded.train is not None or loaded.own_data),
    distill_budget=float(ss.get("distill_budget", s.distill_budget)),
    distill_seed=int(ss.get("distill_seed", s.distill_seed)), auto_bits=bool(ss["auto_bits"]),
    eval_limit=int(ss["eval_limit"]), lat_budget=float(ss["lat_budget"]),
    run_on=str(ss.get("run_on", "")) if len(run_on_names) > 1 else s.run_on)
if new != s:
    state.set_settings(new)
req, one = new.request(), new.one_request()

sid = widgets.current_sweep(loaded)
job = widgets.current_job(sid)
busy = job is not None and job.state == "running"
b = st.columns([1, 1, 3])
if b[0].button("Run one variant", key="run_one", disabled=busy,
               help=f"{one.prune_kinds[0]} {one.ratios[0]:.0%} · {BITS.get(one.bits[0])} (plus the FP32 baseline)"):
    with guard("Starting the variant"):
        widgets.start(loaded, one)
        st.rerun()
if b[1].button(f"Run sweep ({req.n_variants} variants)", type="primary", key="run_sweep", disabled=busy):
    with guard("Starting the sweep"):
        widgets.start(loaded, req)
        st.rerun()
b[2].caption("Variants appear below as they finish; results already in the store are reused, not re-measured.")


def live() -> None:
    sid = widgets.current_sweep(loaded)
    job = widgets.current_job(sid)
    if sid is None:
        return
    s = widgets.sweep_panel(job, sid)
    with guard("Reading results"):
        df = api.variants(sid, state.settings().target)
        if len(df):
            tables.variants_table(df, key="optimize_table", compact=True)
    if s["state"] in ("done", "stored") and s["ok"]:
        st.page_link(nav.page("pareto"), label="See the Pareto front →", icon=":material/scatter_plot:")
    widgets.rerun_once_when_ended(job)


widgets.poll(live, busy)
