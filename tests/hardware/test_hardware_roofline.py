"""Roofline arithmetic against hand-computed layers, and the precision fallback rules."""

from __future__ import annotations

import pandas as pd
import pytest

from optim.errors import HardwareError
from optim.hardware.model.roofline import layer_times, precision_of_bits, resolve_precision
from optim.hardware.targets import get_device


def _layer(node: str, op_class: str, macs: float, flops: float, params: float, a_in: float, a_out: float,
           fused: bool = False, op_type: str = "Conv") -> dict:
    return {"node": node, "op_type": op_type, "op_class": op_class, "macs": macs, "flops": flops,
            "params": params, "act_in_elems": a_in, "act_out_elems": a_out, "fused": fused}


def test_layer_times_matches_hand_computed_compute_bound_conv() -> None:
    # 3x3 conv 64->64 on 56x56: MACs = 56*56*64*64*9 = 115.6 M; INT8 on T4.
    macs = 56 * 56 * 64 * 64 * 9
    params = 64 * 64 * 9
    act = 56 * 56 * 64
    df = layer_times(pd.DataFrame([_layer("c", "conv", macs, 2 * macs, params, act, act)]),
                     get_device("t4"), resolve_precision(get_device("t4"), "int8"))
    ops = 2 * macs
    nbytes = params * 1 + 2 * act * 1
    t_c = ops / (130e12 * 0.25)
    t_m = nbytes / (320e9 * 0.7)
    row = df.iloc[0]
    assert row["bytes"] == nbytes
    assert row["intensity"] == pytest.approx(ops / nbytes)
    assert row["bound"] == "compute"
    assert row["ms"] == pytest.approx((max(t_c, t_m) + 5e-6) * 1e3)


def test_layer_times_matches_hand_computed_memory_bound_depthwise() -> None:
    # depthwise 3x3 on 112x112x96, FP32 on Raspberry Pi 4: 9 MACs per output, few ops per byte.
    act = 112 * 112 * 96
    macs = act * 9
    dev = get_device("rpi4")
    df = layer_times(pd.DataFrame([_layer("dw", "dwconv", macs, 2 * macs, 96 * 9, act, act)]), dev,
                     resolve_precision(dev, "fp32"))
    nbytes = (96 * 9 + 2 * act) * 4
    t_m = nbytes / (12.8e9 * 0.6)
    t_c = 2 * macs / (96e9 * 0.35)
    assert t_m > t_c
    assert df.iloc[0]["bound"] == "memory"
    assert df.iloc[0]["ms"] == pytest.approx((t_m + 15e-6) * 1e3)


def test_layer_times_scales_activations_not_weights_with_batch() -> None:
    dev = get_device("a100")
    path = resolve_precision(dev, "fp16")
    layers = pd.DataFrame([_layer("fc", "gemm", 1000, 2000, 1000, 10, 100, op_type="Gemm")])
    one, four = layer_times(layers, dev, path, 1).iloc[0], layer_times(layers, dev, path, 4).iloc[0]
    assert four["weight_bytes"] == one["weight_bytes"] == 2000
    assert four["act_bytes"] == 4 * one["act_bytes"] == 4 * 110 * 2
    assert four["ops"] == 4 * one["ops"]


def test_layer_times_gives_fused_and_shape_layers_zero_time() -> None:
    dev = get_device("t4")
    layers = pd.DataFrame([_layer("r", "elementwise", 0, 1000, 0, 1000, 1000, fused=True, op_type="Relu"),
                           _layer("s", "shape", 0, 0, 0, 10, 10, op_type="Reshape")])
    df = layer_times(layers, dev, resolve_precision(dev, "fp32"))
    assert df["ms"].tolist() == [0.0, 0.0]
    assert df["bound"].tolist() == ["fused", "free"]


def test_layer_times_sum_matches_naive_loop() -> None:
    dev = get_device("orin_nano")
    path = resolve_precision(dev, "fp16")
    rows = [_layer(f"n{i}", c, m, 2 * m, p, a, a) for i, (c, m, p, a) in enumerate(
        [("conv", 1e8, 1e4, 1e5), ("dwconv", 1e6, 100, 1e6), ("gemm", 1e5, 1e5, 100), ("elementwise", 0, 0, 1e4)])]
    df = layer_times(pd.DataFrame(rows), dev, path)
    naive = 0.0
    for r in rows:
        ops = 2 * r["macs"] if r["op_class"] != "elementwise" else r["flops"]
        nbytes = r["params"] * 2 + (r["act_in_elems"] + r["act_out_elems"]) * 2
        naive += max(ops / (10e12 * 0.25), nbytes / (68e9 * 0.7)) + 5e-6
    assert df["ms"].sum() == pytest.approx(naive * 1e3)


def test_layer_times_halves_compute_when_sparse_2_4() -> None:
    dev = get_device("a100")
    path = resolve_precision(dev, "int8")
    layers = pd.DataFrame([_layer("c", "conv", 1e10, 2e10, 1e3, 1e3, 1e3)])
    dense, sparse = layer_times(layers, dev, path), layer_times(layers, dev, path, sparse_2_4=True)
    assert sparse.iloc[0]["compute_ms"] == pytest.approx(dense.iloc[0]["compute_ms"] / 2)


@pytest.mark.parametrize(("bits", "precision"), [(32, "fp32"), (16, "fp16"), (8, "int8"), (6, "int8"),
                                                  (4, "int4"), (2, "int4"), (None, "fp32")])
def test_precision_of_bits_maps_bit_widths(bits: int | None, precision: str) -> None:
    assert precision_of_bits(bits) == precision


def test_resolve_precision_native_when_supported() -> None:
    path = resolve_precision(get_device("t4"), "int4")
    assert (path.mode, path.compute, path.storage) == ("native", "int4", "int4")


def test_resolve_precision_emulates_int4_as_int8_on_cortex_m() -> None:
    path = resolve_precision(get_device("stm32h743"), "int4")
    assert (path.mode, path.compute, path.storage) == ("emulated", "int8", "int4")
    assert "arm_convolve_s4" in path.text


def test_resolve_precision_emulates_int4_on_hopper() -> None:
    path = resolve_precision(get_device("h100"), "int4")
    assert (path.mode, path.compute) == ("emulated", "int8")


def test_resolve_precision_converts_fp32_on_coral() -> None:
    path = resolve_precision(get_device("coral_edgetpu"), "fp32")
    assert (path.mode, path.compute, path.storage) == ("convert", "int8", "int8")
    assert "not measured" in path.text


def test_resolve_precision_falls_back_upwards_when_unsupported() -> None:
    dev = get_device("t4")
    precisions = dict(dev.precisions)
    precisions["int4"] = type(precisions["int4"])("int4", "unsupported", None, "assumed", "test")
    precisions["int8"] = type(precisions["int8"])("int8", "unsupported", None, "assumed", "test")
    patched = type(dev)(dev.id, dev.name, dev.kind, dev.runtime, dev.specs, precisions, dev.flags)
    path = resolve_precision(patched, "int4")
    assert (path.mode, path.compute) == ("fallback", "fp16")
    assert "falls back to FP16" in path.text


def test_resolve_precision_raises_when_nothing_native() -> None:
    dev = get_device("t4")
    none = {p: type(s)(p, "unsupported", None, "assumed", "test") for p, s in dev.precisions.items()}
    patched = type(dev)(dev.id, dev.name, dev.kind, dev.runtime, dev.specs, none, dev.flags)
    with pytest.raises(HardwareError):
        resolve_precision(patched, "fp32")


def test_weights_stream_from_dram_only_when_a_run_outgrows_the_last_level_cache() -> None:
    import dataclasses

    from optim.hardware.device import Spec
    from optim.hardware.model.roofline import dram_share

    rpi = get_device("rpi4")  # a host-like device whose small kernels run from cache faster than a DRAM copy
    base = dataclasses.replace(rpi, specs={**rpi.specs, "eff_memory": Spec(3.0, "fraction", "assumed", "test")})
    cached = dataclasses.replace(base, flags={**base.flags, "dram_weights": True})
    path = resolve_precision(base, "fp32")
    llc, bw = base.spec("onchip"), base.spec("bandwidth")
    assert dram_share(0.4 * llc, llc) == 0.0 and dram_share(2 * llc, llc) == 1.0
    assert dram_share(llc, llc) == pytest.approx(0.5)
    small = pd.DataFrame([_layer("fc", "gemm", 1000, 2000, 1000, 10, 100, op_type="Gemm")])
    assert layer_times(small, cached, path).iloc[0]["ms"] == layer_times(small, base, path).iloc[0]["ms"]
    params = 2 * llc / 4  # FP32 weights of twice the cache: every run reads them from DRAM
    big = pd.DataFrame([_layer("fc", "gemm", params, 2 * params, params, 1000, 1000, op_type="Gemm")])
    row, plain = layer_times(big, cached, path).iloc[0], layer_times(big, base, path).iloc[0]
    eff = base.factors("gemm").eff_memory
    assert row["dram_bytes"] == row["weight_bytes"] == 4 * params
    assert row["memory_ms"] == pytest.approx((4 * params / (bw * min(eff, 1.0)) + row["act_bytes"] / (bw * eff)) * 1e3)
    assert eff == 3.0 and row["memory_ms"] > 2 * plain["memory_ms"]
