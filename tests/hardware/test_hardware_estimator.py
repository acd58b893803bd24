"""Estimator end to end on tiny graphs: totals, fit check, precision paths, sparsity, roofline data."""

from __future__ import annotations

import pytest
import torch

from optim.handle import ModelHandle
from optim.hardware.model.estimator import variant_precision
from optim.hardware.model.graphinfo import fused_nodes, infer_precision_bits, op_classes
from optim.hardware.targets import cuda_available, estimate, get_device, roofline_points
from optim.io.export import torch_to_onnx

LAYER_COLS = {"node", "op_type", "macs", "bytes", "intensity", "bound", "ms", "precision_path"}


def _with(handle: ModelHandle, **meta: object) -> ModelHandle:
    return ModelHandle(handle.model, handle.name, handle.source_format, {**handle.meta, **meta})


@pytest.fixture(scope="module")
def big_mlp() -> ModelHandle:
    """~1.1 M parameters: 4.4 MB at FP32, larger than an STM32's 2 MB flash."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(1024, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 10))
    return ModelHandle(torch_to_onnx(net, [torch.randn(1, 1024)]), "big_mlp", meta={"bits": 32})


def test_estimate_sums_layer_times_for_tiny_cnn(tiny_cnn: ModelHandle) -> None:
    e = estimate(tiny_cnn, "t4")
    assert LAYER_COLS <= set(e.layers.columns)
    assert e.total_ms == pytest.approx(e.layers["ms"].sum())
    assert e.total_ms > 0 and e.fits and not e.measured
    assert set(e.layers["bound"]) <= {"compute", "memory", "fused", "free"}
    assert e.energy_mj == pytest.approx(70 * e.total_ms)


def test_estimate_marks_relu_after_conv_fused(tiny_cnn: ModelHandle) -> None:
    e = estimate(tiny_cnn, "rpi5")
    relus = e.layers[e.layers["op_type"] == "Relu"]
    assert len(relus) and (relus["bound"] == "fused").all() and (relus["ms"] == 0).all()


def test_graphinfo_classifies_depthwise_conv(tiny_cnn: ModelHandle) -> None:
    classes = op_classes(tiny_cnn.model)
    assert sorted(c for c in classes.values() if c in ("conv", "dwconv")).count("dwconv") == 1
    assert fused_nodes(tiny_cnn.model)


def test_estimate_flags_does_not_fit_when_model_larger_than_device(big_mlp: ModelHandle) -> None:
    e = estimate(big_mlp, "stm32h743")
    assert not e.fits
    assert e.fit_notes[0].startswith("does not fit")
    assert estimate(big_mlp, "rpi4").fits


def test_estimate_int8_fits_where_fp32_does_not(big_mlp: ModelHandle) -> None:
    assert estimate(_with(big_mlp, bits=8), "stm32h743").fits


def test_estimate_int8_faster_than_fp32_on_t4(tiny_cnn: ModelHandle) -> None:
    fp32 = estimate(_with(tiny_cnn, bits=32), "t4")
    int8 = estimate(_with(tiny_cnn, bits=8), "t4")
    assert int8.layers["bytes"].sum() == pytest.approx(fp32.layers["bytes"].sum() / 4)
    assert int8.total_ms < fp32.total_ms


def test_estimate_reports_conversion_when_coral_gets_fp32(tiny_cnn: ModelHandle) -> None:
    e = estimate(_with(tiny_cnn, bits=32), "coral_edgetpu")
    assert "converts to INT8" in e.precision_path
    assert any("converts to INT8" in n for n in e.notes)


def test_estimate_reports_emulation_of_int4_on_cortex_m(tiny_cnn: ModelHandle) -> None:
    e = estimate(_with(tiny_cnn, bits=4), "stm32h743")
    assert e.precision_path.startswith("INT4 emulated")
    assert (e.layers["precision_path"] == e.precision_path).all()


def test_estimate_gives_no_speedup_for_unstructured_sparsity(tiny_cnn: ModelHandle) -> None:
    dense = estimate(tiny_cnn, "a100")
    sparse = estimate(_with(tiny_cnn, prune_kind="unstructured", sparsity=0.5), "a100")
    assert sparse.total_ms == pytest.approx(dense.total_ms)
    assert any("no speed-up" in n and "2:4" in n for n in sparse.notes)


def test_estimate_speeds_up_2_4_sparsity_only_on_supporting_device(tiny_cnn: ModelHandle) -> None:
    h = _with(tiny_cnn, prune_kind="unstructured", sparsity_pattern="2:4")
    a100 = estimate(h, "a100").layers["compute_ms"].sum()
    assert a100 == pytest.approx(estimate(tiny_cnn, "a100").layers["compute_ms"].sum() / 2, rel=0.05)
    assert estimate(h, "t4").layers["compute_ms"].sum() == pytest.approx(
        estimate(tiny_cnn, "t4").layers["compute_ms"].sum())


def test_variant_precision_runs_simulated_low_bit_as_fp32_on_this_machine(tiny_cnn: ModelHandle) -> None:
    sim = _with(tiny_cnn, bits=4, executable=False)
    assert variant_precision(sim, get_device("host")) == "fp32"
    assert variant_precision(sim, get_device("t4")) == "int4"


def test_infer_precision_bits_reads_fp32_graph_when_meta_missing(tiny_cnn: ModelHandle) -> None:
    assert infer_precision_bits(tiny_cnn.model) == 32


def test_estimate_batch_scales_activations(tiny_cnn: ModelHandle) -> None:
    one, eight = estimate(tiny_cnn, "a100", batch=1), estimate(tiny_cnn, "a100", batch=8)
    assert eight.layers["ops"].sum() == pytest.approx(8 * one.layers["ops"].sum())
    assert eight.total_ms >= one.total_ms


def test_roofline_points_place_layers_under_the_roof(tiny_cnn: ModelHandle) -> None:
    pts = roofline_points(tiny_cnn, "orin_nano")
    assert len(pts["layers"]) > 0 and pts["ridge_intensity"] > 0
    roof = pts["roof"]
    assert (roof["effective_gops"] <= roof["peak_gops"] + 1e-9).all()
    assert (pts["layers"]["attained_gops"] <= pts["peak_gops"]).all()


def test_estimate_measures_when_device_is_this_machine_measured(tiny_mlp: ModelHandle) -> None:
    e = estimate(tiny_mlp, "host_measured")
    assert e.measured and e.total_ms > 0
    assert any("measured" in n for n in e.notes)
    gemms = e.layers[e.layers["op_type"] == "Gemm"]
    assert len(gemms) == 3 and (gemms["measured_ms"] > 0).all()


@pytest.mark.skipif(not cuda_available(), reason="ONNX Runtime CUDA execution provider not available")
def test_estimate_measures_on_gpu_when_cuda_present(tiny_cnn: ModelHandle) -> None:
    e = estimate(tiny_cnn, "cuda_measured")
    assert e.measured and e.total_ms > 0
