"""Learn: pruning, quantization, distillation, fusion and the roofline, each shown on the loaded model."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import streamlit as st

import dashboard as ui
from optim import api

ui.setup("Learn")
st.title(":material/school: Learn")
loaded = ui.current_model()
if loaded is None:
    st.info("Load a model on the Home page: every illustration here uses its real weights.")
    st.stop()

with ui.guard("Building the illustrations"):
    layers = api.weight_layers(loaded.handle)
    if layers.empty:
        st.warning("This model has no float weight layers to illustrate.")
        st.stop()
    layer = st.selectbox("Layer", layers["node"], key="learn_layer",
                         format_func=lambda n: f"{n} ({layers.set_index('node').loc[n, 'op_type']}, "
                                               f"{layers.set_index('node').loc[n, 'shape']})")
    tq, tp, td, tf, tr = st.tabs(["Quantization", "Pruning", "Distillation", "Operator fusion", "Roofline"])
    with tq:
        st.markdown("Quantization stores each weight with fewer bits: values snap to a grid of "
                    "2^bits levels scaled to the layer's range. Fewer bits = smaller file, more rounding error. "
                    "INT8 runs on integer kernels; below 8 bits this runtime can only **simulate** it.")
        bits = st.select_slider("Bit-width", [16, 8, 6, 4, 3, 2], value=8, key="learn_bits")
        q = api.quant_demo(loaded.handle, layer, int(bits))
        c = st.columns(3)
        c[0].metric("Distinct values", f"{q['levels']:,}")
        c[1].metric("SQNR", f"{q['sqnr_db']:.1f} dB", help="signal-to-quantization-noise ratio; higher is better")
        c[2].metric("Max abs. error", f"{q['max_abs_error']:.2e}")
        st.plotly_chart(api.quant_error_chart(q), key="learn_q")
    with tp:
        st.markdown("Pruning removes the least important weights. **Unstructured** zeroes single weights "
                    "(the dense kernels still multiply the zeros: smaller only when compressed); "
                    "**structured** removes whole output channels, so the layer really shrinks and runs faster.")
        ratio = st.slider("Pruning ratio", 0.0, 0.9, 0.3, 0.05, key="learn_ratio")
        p = api.prune_demo(loaded.handle, layer, float(ratio))
        norms = p["channel_norms"]
        colors = np.where(np.isin(np.arange(norms.size), p["dropped_channels"]), "#d62728", "#1f77b4")
        fig = go.Figure(go.Bar(x=np.arange(norms.size), y=norms, marker_color=colors))
        fig.update_layout(title=f"L2 norm per output channel of {layer} (red = removed by structured pruning)",
                          xaxis_title="output channel", yaxis_title="L2 norm", height=320)
        st.plotly_chart(fig, key="learn_p")
        st.caption(f"Unstructured at {ratio:.0%}: weights with |w| ≤ {p['threshold']:.3g} become 0; "
                   f"{p['kept_fraction']:.0%} kept.")
    with td:
        st.markdown("Distillation trains the compressed *student* to imitate the original *teacher*'s outputs "
                    "(soft labels), recovering accuracy lost by pruning. It needs training data and time: the "
                    "Optimize page offers it when the distillation pass is installed.")
        st.info("Available" if api.pass_available("distill") else "The distillation pass is not installed yet.")
    with tf:
        st.markdown("Operator fusion merges neighbouring nodes (Conv + BatchNorm + ReLU) into one kernel, "
                    "saving memory traffic and launch overhead. ONNX Runtime does it when a session is created; "
                    "the Layers page shows which nodes it fused for each variant.")
        ops = ui.summary(loaded.key, loaded)["ops"]
        st.plotly_chart(api.op_histogram_chart(ops), key="learn_ops")
    with tr:
        st.markdown("The roofline says a layer is limited either by compute (peak FLOP/s) or by memory "
                    "bandwidth (bytes/s × FLOP per byte). Layers left of the ridge are memory-bound: "
                    "fewer bits help them most; layers right of it are compute-bound: fewer MACs help.")
        summ = ui.summary(loaded.key, loaded)["layers"]
        d = summ[summ["macs"] > 0].copy()
        byt = d["weight_bytes"] + 4 * (d["act_in_elems"] + d["act_out_elems"])
        d["intensity"] = 2 * d["macs"] / byt.where(byt > 0)
        fig = go.Figure(go.Bar(x=d["node"], y=d["intensity"], marker_color="#ff7f0e"))
        fig.update_layout(title="Arithmetic intensity per layer of this model (FP32)", yaxis_type="log",
                          xaxis_title="layer", yaxis_title="FLOP per byte moved", height=340)
        st.plotly_chart(fig, key="learn_roof")
