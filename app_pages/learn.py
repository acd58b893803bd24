"""Learn: pruning, quantization, distillation, fusion and the roofline, each shown on the loaded model."""

from __future__ import annotations

import streamlit as st

from optim import api
from ui import cache, state, widgets
from ui.guard import guard

st.title(":material/school: Learn")
loaded = widgets.need_model("Load a model on the Home page: every illustration here uses its real weights.")

with guard("Building the illustrations"):
    layers = api.weight_layers(loaded.handle)
    if layers.empty:
        st.warning("This model has no float weight layers to illustrate.")
        st.stop()
    layer = st.selectbox("Layer", layers["node"], key="learn_layer",
                         format_func=lambda n: f"{n} ({layers.set_index('node').loc[n, 'op_type']}, "
                                               f"{layers.set_index('node').loc[n, 'shape']})")
    tq, tp, td, tf, tr = st.tabs(["Quantization", "Pruning", "Distillation", "Operator fusion", "Roofline"])
    with tq:
        st.markdown("Quantization stores each weight with fewer bits: integers snap to a symmetric grid of "
                    "2<sup>bits</sup> − 1 levels scaled to the layer's range (−q…q with q = 2<sup>bits−1</sup> − 1: "
                    "255 levels at INT8, 15 at INT4, 3 at INT2; one code stays unused so that zero is exact). "
                    "FP16 instead keeps a float with fewer mantissa bits. Fewer bits = smaller file, more rounding "
                    "error. INT8 runs on integer kernels; below 8 bits this runtime executes only MatMul layers "
                    "(4-bit) and **simulates** the rest.", unsafe_allow_html=True)
        bits = st.select_slider("Precision", [16, 8, 6, 4, 3, 2], value=8, key="learn_bits",
                                format_func=lambda b: "FP16" if b == 16 else f"INT{b}")
        q = api.quant_demo(loaded.handle, layer, int(bits))
        c = st.columns(3)
        c[0].metric("Distinct values", f"{q['levels']:,}",
                    help=None if bits == 16 else f"of at most {2 ** int(bits) - 1} levels at INT{bits}")
        c[1].metric("SQNR", f"{q['sqnr_db']:.1f} dB", help="signal-to-quantization-noise ratio; higher is better")
        c[2].metric("Max abs. error", f"{q['max_abs_error']:.2g}", help="largest |quantized − original| weight")
        st.plotly_chart(api.quant_error_chart(q), key="learn_q")
    with tp:
        st.markdown("Pruning removes the least important weights. **Unstructured** zeroes single weights "
                    "(the dense kernels still multiply the zeros: smaller only when compressed); "
                    "**structured** removes whole output channels, so the layer really shrinks and runs faster.")
        ratio = st.slider("Pruning ratio", 0.0, 0.9, 0.3, 0.05, key="learn_ratio")
        p = api.prune_demo(loaded.handle, layer, float(ratio))
        st.plotly_chart(api.channel_norms_chart(p), key="learn_p")
        st.caption(f"Unstructured at {ratio:.0%}: weights with |w| ≤ {p['threshold']:.3g} become 0; "
                   f"{p['kept_fraction']:.0%} kept.")
    with td:
        st.markdown("Distillation trains the compressed *student* to imitate the original *teacher*'s outputs. "
                    "A softmax temperature T > 1 softens the teacher's probabilities so the student also learns "
                    "which wrong classes look alike: the *dark knowledge* below, from this model on one test "
                    "sample.")
        idx = st.number_input("Test sample", 0, max(0, len(loaded.test) - 1) if loaded.test is not None else 0, 0,
                              key="learn_sample")
        soft = api.soft_labels(loaded, int(idx), (1.0, 4.0))
        st.plotly_chart(api.soft_labels_chart(soft), key="learn_kd")
        st.info("The Optimize page offers distillation when sweeps can schedule it."
                if not api.distill_supported() else "Distillation is available on the Optimize page.")
    with tf:
        st.markdown("Operator fusion merges neighbouring nodes (e.g. Conv + ReLU, or Conv + Add + ReLU) into one "
                    "kernel, saving memory traffic and launch overhead; BatchNorm is usually folded into the Conv "
                    "weights before that. ONNX Runtime fuses when a session is created. Switch on profiling to see "
                    "this model's graph nodes vs the kernels ORT actually runs (measured by its profiler).")
        if st.toggle("Profile this model now (~1 s)", key="learn_fusion"):
            st.dataframe(api.fusion_of(loaded), hide_index=True)
        ops = cache.summary(state.model_ref())["ops"]
        st.plotly_chart(api.op_histogram_chart(ops), key="learn_ops")
    with tr:
        st.markdown("The roofline says a layer is limited either by compute (peak ops/s) or by memory "
                    "bandwidth (bytes/s × ops per byte). Layers left of the ridge are memory-bound: "
                    "fewer bits help them most; layers right of it are compute-bound: fewer MACs help.")
        dev = widgets.device_picker("Device", "learn_device", state.settings().target, catalog_only=True)
        if dev != api.MEASURED_DEVICE:
            rl = api.roofline_of(loaded, dev)
            st.plotly_chart(api.roofline_chart(rl["points"], rl["peak_gflops"], rl["bw_gbs"], rl["device"],
                                               rl.get("effective")),
                            key="learn_roof")
            st.caption(f"Estimated with the hardware model ({rl['precision']}).")
        else:
            st.info("No hardware catalog available.")
