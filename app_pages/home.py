"""Home (`make run` opens it on the bundled ResNet sample): pick a sample or upload a model and data."""

from __future__ import annotations

import streamlit as st

from optim import api
from ui import cache, nav, state, widgets
from ui.guard import guard
from ui.settings import DEMO

LAYER_COLUMNS = {"node": st.column_config.TextColumn("layer", pinned=True), "op_type": "operator",
                 "out_shape": "output shape", "weight_dtype": "weight dtype",
                 **{c: st.column_config.NumberColumn(t, format="localized") for c, t in (
                     ("macs", "MACs"), ("flops", "FLOPs"), ("params", "params"), ("weight_bytes", "weight bytes"),
                     ("act_in_elems", "input elements"), ("act_out_elems", "output elements"))}}
FLASH = "home_flash"

st.title(":material/compress: Model Compression Trade-off Explorer")
st.write("Prune and quantize a model, **measure** what each variant costs and buys — accuracy, latency, "
         "size — and see where the time goes, layer by layer.")
if st.session_state.get(FLASH):
    st.success(st.session_state.pop(FLASH))


def run_demo() -> None:
    with guard("The demo"):
        state.set_model(f"sample:{api.DEMO_SAMPLE}")
        state.set_settings(DEMO)  # the Optimize form shows what the demo ran
        widgets.start(cache.model(f"sample:{api.DEMO_SAMPLE}"), DEMO.request())
        st.switch_page(nav.page("pareto"), query_params=st.query_params.to_dict())


top = st.columns([2, 3])
with top[0]:
    has_demo = any(s["name"] == api.DEMO_SAMPLE for s in cache.samples())
    if st.button("▶ Try the demo", type="primary", disabled=not has_demo, key="demo",
                 help="Prunes and quantizes the ResNet sample (6 variants, ~10–30 s) and opens the Pareto front"):
        run_demo()
with top[1]:
    st.caption("The demo sweeps unpruned and 50 % structured pruning × FP32 / INT8 / INT4 on the ResNet digits "
               f"sample ({DEMO.eval_limit} test images per variant) and lands on the Pareto page, where variants "
               "appear as they finish.")

st.subheader("1 · Choose a model")
samples = cache.samples()
if not samples:
    st.warning("No bundled samples are built yet: run `make samples`, or upload a model below.")
current = state.model_ref()
cols = st.columns(max(1, min(4, len(samples))))
for col, s in zip(cols, samples, strict=False):
    with col.container(border=True):
        st.markdown(f"**{s['name']}**")
        st.caption(s.get("description", ""))
        acc = s.get("fp32_top1")
        top1 = f" · top-1 {acc:.1%} on all {s.get('n_test')} test samples" if acc is not None else ""
        st.caption(f"{s.get('arch', '')} · {s.get('dataset', '')}{top1}")
        ref = f"sample:{s['name']}"
        if st.button("✓ Loaded" if ref == current else "Use this model", key=f"use_{s['name']}",
                     disabled=ref == current):
            state.set_model(ref)
            st.rerun()

with st.expander("…or upload your own model (ONNX, ONNX zip, TorchScript, .pt2)"):
    up = st.file_uploader("Model file", type=["onnx", "zip", "pt", "pth", "ts", "pt2"], key="upload_model")
    shapes = st.text_input("Input shapes for dynamic dimensions (optional)", key="upload_shapes",
                           placeholder="input=1,3,224,224; mask=1,128")
    data = st.file_uploader("Evaluation data (optional: .npz with x/y or one array per input name plus y — a 0-d "
                            "array sets a scalar input such as sr —, .csv, or a .zip of class folders)",
                            type=["npz", "csv", "zip"], key="upload_data")
    train = st.file_uploader("Training data for distillation (optional, same formats; labels optional)",
                             type=["npz", "csv", "zip"], key="upload_train",
                             help="Without it, distillation splits the evaluation data (seeded) into rows to distil "
                                  "on and held-out rows; with it, the evaluation data stays whole")
    st.caption("Without labelled data, variants are compared with the original model on random inputs: by "
               "top-1 agreement for class outputs, by output cosine for boxes, maps, embeddings and sequences. Uploads are kept on this server by content hash (within a size quota) so a "
               "reload or a shared link finds them; 'Forget this upload' deletes them.")
    if up is not None and st.button("Load upload", type="primary", key="load_upload"):
        with guard("Loading the upload"):
            ref = api.save_upload(up.getvalue(), up.name, data.getvalue() if data is not None else None,
                                  data.name if data is not None else None, shapes or "",
                                  train.getvalue() if train is not None else None,
                                  train.name if train is not None else None)
            try:
                cache.model(ref)
            except Exception:
                api.forget_upload(ref)  # a file that does not load is not kept
                cache.forget_model(ref)
                raise
            state.set_model(ref)
            st.session_state[FLASH] = f"Loaded {up.name}" + (f" with {data.name}." if data is not None else ".")
            st.rerun()

loaded = widgets.current_model()
if loaded is None:
    st.info("Choose a sample or upload a model to begin.")
    st.stop()
ref = state.model_ref()

head = st.columns([4, 1], vertical_alignment="bottom")
head[0].subheader(f"2 · {loaded.label}")
if loaded.origin == "upload" and head[1].button("Forget this upload", key="forget_upload",
                                                help="Deletes the stored file(s) from this server"):
    api.forget_upload(ref)
    cache.forget_model(ref)
    state.set_model(nav.default_model())
    st.session_state[FLASH] = f"Forgot {loaded.label}: its files are deleted from this server."
    st.rerun()
with guard("Summarising the model"):
    summ = cache.summary(ref)
    f = summ["facts"]
    m = st.columns(5)
    m[0].metric("Parameters", f"{f['params'] / 1e6:.2f} M")
    m[1].metric("Size", f"{f['size_mb']:.2f} MB")
    m[2].metric("MACs (batch 1)", f"{f['macs_m']:.1f} M")
    m[3].metric("Nodes", f"{f['nodes']}")
    m[4].metric("Opset", f"{f['opset']}")
    st.caption(f"Inputs: {f['inputs']} · Outputs: {f['outputs']}")
    if loaded.synthesised_inputs:
        st.caption(loaded.synthesised_inputs)
    with guard("Measuring the baseline"):
        n_all = len(loaded.test) if loaded.test is not None else 0
        n_eval = min(state.settings().eval_limit, n_all) if n_all else 0
        b = cache.baseline(ref, n_eval or 1)
        c = st.columns(3)
        if b["top1"] is not None:
            c[0].metric("Baseline top-1 accuracy (measured)", f"{b['top1'] * 100:.2f} %",
                        help=f"95 % Wilson interval over {b['n']} test samples")
            card = next((s for s in samples if f"sample:{s['name']}" == ref), None)
            same = f"; the card's {card['fp32_top1']:.1%} is on all {n_all}" if card and b["n"] < n_all else ""
            c[0].caption(f"95 % interval {b['top1_lo'] * 100:.2f} – {b['top1_hi'] * 100:.2f} % on {b['n']} of "
                         f"{n_all} test samples: the evaluation set sweeps use (Optimize → evaluation samples)"
                         f"{same}.")
        else:
            c[0].metric("Baseline accuracy", "n/a", help="No labelled data: variants are compared with this model")
            c[0].caption(f"No labels: variants are scored on {n_all} {loaded.judged_by} "
                         f"({getattr(loaded.test, 'name', 'data')}).")
        c[1].metric("Latency (measured, batch 1)", api.fmt_ms(b["latency_ms"]))
        c[1].caption(f"median of {b['runs']} runs, p90 {api.fmt_ms(b['latency_p90_ms'])}, {b['threads']} thread")
        c[2].page_link(nav.page("optimize"), label="Next: choose the knobs →", icon=":material/tune:")
    t1, t2 = st.tabs(["Per-layer table", "Operator histogram"])
    with t1:
        st.dataframe(summ["layers"], hide_index=True, height=320, column_config=LAYER_COLUMNS)
    with t2:
        st.plotly_chart(api.op_histogram_chart(summ["ops"]), key="ops_chart")
