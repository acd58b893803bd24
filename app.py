"""Home (`make run` opens it on the bundled ResNet sample): pick a sample or upload a model and data."""

from __future__ import annotations

import streamlit as st

import dashboard as ui
from optim import api

LAYER_COLUMNS = {"node": "layer", "op_type": "operator", "out_shape": "output shape", "weight_dtype": "weight dtype",
                 **{c: st.column_config.NumberColumn(t, format="localized") for c, t in (
                     ("macs", "MACs"), ("flops", "FLOPs"), ("params", "params"), ("weight_bytes", "weight bytes"),
                     ("act_in_elems", "input elements"), ("act_out_elems", "output elements"))}}
ui.setup("Home")
st.title(":material/compress: Model Compression Trade-off Explorer")
st.write("Prune and quantize a model, **measure** what each variant costs and buys — accuracy, latency, "
         "size — and see where the time goes, layer by layer.")


def run_demo() -> None:
    with ui.guard("The demo"):
        ui.select_sample(api.DEMO_SAMPLE)
        job = ui.start(ui.current_model(), api.demo_request())
        st.switch_page(ui.PAGES["pareto"], query_params={"job": job.id} | (
            {"sweep": job.sweep_id} if job.sweep_id else {}))


top = st.columns([2, 3])
with top[0]:
    has_demo = any(s["name"] == api.DEMO_SAMPLE for s in ui.samples())
    if st.button("▶ Try the demo", type="primary", disabled=not has_demo, key="demo",
                 help="Prunes and quantizes the ResNet sample (6 variants, ~10–30 s) and opens the Pareto front"):
        run_demo()
with top[1]:
    st.caption("The demo sweeps unpruned and 50 % structured pruning × FP32 / INT8 / INT4 on the ResNet digits "
               "sample and lands on the Pareto page, where variants appear as they finish.")

st.subheader("1 · Choose a model")
samples = ui.samples()
if not samples:
    st.warning("No bundled samples are built yet: run `make samples`, or upload a model below.")
cols = st.columns(max(1, min(4, len(samples))))
for col, s in zip(cols, samples, strict=False):
    with col.container(border=True):
        st.markdown(f"**{s['name']}**")
        st.caption(s.get("description", ""))
        acc = s.get("fp32_top1")
        top1 = f" · top-1 {acc:.1%}" if acc is not None and "top-1" not in s.get("description", "") else ""
        st.caption(f"{s.get('arch', '')} · {s.get('dataset', '')}{top1}")
        current = st.session_state.get("model_src") == ("sample", s["name"])
        if st.button("Selected" if current else "Use this model", key=f"use_{s['name']}", disabled=current):
            ui.select_sample(s["name"])
            st.rerun()

with st.expander("…or upload your own model (ONNX, ONNX zip, TorchScript, .pt2)"):
    up = st.file_uploader("Model file", type=["onnx", "zip", "pt", "pth", "ts", "pt2"], key="upload_model")
    shapes = st.text_input("Input shapes for dynamic dimensions (optional)", key="upload_shapes",
                           placeholder="input=1,3,224,224; mask=1,128")
    data = st.file_uploader("Evaluation data (optional: .npz with x/y, .csv, or a .zip of class folders)",
                            type=["npz", "csv", "zip"], key="upload_data")
    st.caption("Without labelled data, variants are compared by agreement with the original model on "
               "random inputs. Uploads stay in this browser session.")
    if up is not None and st.button("Load upload", type="primary", key="load_upload"):
        with ui.guard("Loading the upload"):
            loaded = api.load_upload(up.getvalue(), up.name, shapes)
            if data is not None:
                loaded = api.attach_data(loaded, data.getvalue(), data.name)
            ui.select_upload(loaded)
            st.success(f"Loaded {up.name}.")

loaded = ui.current_model()
if loaded is None:
    st.info("Choose a sample or upload a model to begin.")
    st.stop()

st.subheader(f"2 · {loaded.label}")
with ui.guard("Summarising the model"):
    summ = ui.summary(loaded.key, loaded)
    f = summ["facts"]
    m = st.columns(5)
    m[0].metric("Parameters", f"{f['params'] / 1e6:.2f} M")
    m[1].metric("Size", f"{f['size_mb']:.2f} MB")
    m[2].metric("MACs (batch 1)", f"{f['macs_m']:.1f} M")
    m[3].metric("Nodes", f"{f['nodes']}")
    m[4].metric("Opset", f"{f['opset']}")
    st.caption(f"Inputs: {f['inputs']} · Outputs: {f['outputs']}")
    with ui.guard("Measuring the baseline"):
        b = ui.baseline(loaded.key, loaded)
        c = st.columns(3)
        if b["top1"] is not None:
            c[0].metric("Baseline accuracy (measured)", f"{b['top1'] * 100:.2f} %",
                        help=f"95 % Wilson interval over {b['n']} test samples")
            n_all = len(loaded.test) if loaded.test is not None else b["n"]
            c[0].caption(f"95 % interval {b['top1_lo'] * 100:.2f} – {b['top1_hi'] * 100:.2f} % (n = {b['n']} of {n_all} test "
                         "samples; sweeps use the evaluation size set on Optimize)")
        else:
            c[0].metric("Baseline accuracy", "n/a", help="No labelled data: variants are compared by agreement")
        c[1].metric("Latency (measured, batch 1)", api.fmt_ms(b["latency_ms"]))
        c[1].caption(f"median of {b['runs']} runs, p90 {api.fmt_ms(b['latency_p90_ms'])}, {b['threads']} thread")
        c[2].page_link(ui.PAGES["optimize"], label="Next: choose the knobs →", icon=":material/tune:")
    t1, t2 = st.tabs(["Per-layer table", "Operator histogram"])
    with t1:
        st.dataframe(summ["layers"], hide_index=True, height=320, column_config=LAYER_COLUMNS)
    with t2:
        st.plotly_chart(api.op_histogram_chart(summ["ops"]), key="ops_chart")
