"""Host calibration: the fits recover known factors, and calibrating lowers the error on a held-out model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from optim.handle import ModelHandle
from optim.hardware import profiles
from optim.hardware.calibration import calibrate, fit, micro
from optim.hardware.calibration.reference_models import reference_model
from optim.hardware.model.kernelmap import map_fused_nodes


def test_fit_class_recovers_known_factors_from_synthetic_nodes() -> None:
    rng = np.random.default_rng(0)
    peak, bw = 100e9, 20e9
    ops = 10 ** rng.uniform(4, 8, 40)
    nbytes = 10 ** rng.uniform(3, 6, 40)
    ms = (np.maximum(ops / (peak * 0.6), nbytes / (bw * 1.5)) + 3e-6) * 1e3
    got = fit.fit_class(pd.DataFrame({"ops": ops, "bytes": nbytes, "ms": ms}), peak, bw, prior_weight=0.0)
    assert got["eff_compute"] == pytest.approx(0.6, rel=0.05)
    assert got["eff_memory"] == pytest.approx(1.5, rel=0.05)
    assert got["overhead_us"] == pytest.approx(3.0, rel=0.1)


def test_fit_whole_model_recovers_scale_and_profiler_cost() -> None:
    counts = np.array([10.0, 30.0, 60.0, 5.0])
    true_kernels = np.array([0.05, 0.3, 1.2, 0.02])
    sums = true_kernels + counts * 0.002  # every profiled kernel inflated by 2 us
    measured = true_kernels + 0.015  # 15 us per run
    scale, delta = fit.fit_whole_model(sums, counts, measured, run_overhead_ms=0.015, max_delta_ms=0.01)
    assert scale == pytest.approx(1.0, rel=1e-3)
    assert delta == pytest.approx(0.002, rel=1e-3)


def test_measure_run_overhead_is_a_few_microseconds() -> None:
    assert 0.0005 < micro.measure_run_overhead_ms(runs=50) < 0.2


def test_map_fused_nodes_maps_nchwc_kernel_to_its_conv(tiny_cnn: ModelHandle) -> None:
    graph = tiny_cnn.model.graph
    conv = next(n for n in graph.node if n.op_type == "Conv")
    relu = next(n for n in graph.node if n.op_type == "Relu" and conv.output[0] in n.input)
    mapping = map_fused_nodes(tiny_cnn.model, [f"{relu.output[0]}_nchwc", conv.name, "ReorderOutput"])
    assert mapping[conv.name] == conv.name
    assert graph.node[[n.name for n in graph.node].index(mapping[f"{relu.output[0]}_nchwc"])].op_type == "Conv"
    assert "ReorderOutput" not in mapping


@pytest.mark.slow
def test_calibrate_writes_profile_for_this_cpu_with_holdout_residuals(tmp_path: Path) -> None:
    """How much calibrating helps is a timing, measured in benchmarks/hardware.py; here: what it writes."""
    train = [reference_model("resnet8", 0.5), reference_model("ds_cnn", 0.5), reference_model("resnet8", 1.0)]
    held_out = reference_model("mobilenet_v1_025", 1.0)
    out = tmp_path / "host.json"
    profile = calibrate.calibrate(calibrate.CalibrationConfig(repeats=2, runs=5, latency_rounds=1), out=out,
                                  fit_models=train, holdout_models=[held_out])
    assert profiles.read_profile(out) == json.loads(out.read_text())
    assert profiles.matches(profile)  # fingerprint key and host-model version of this CPU
    assert set(profile["calibration_models"]) == {h.name for h in train}
    assert {"conv", "gemm"} <= set(profile["classes"])
    assert list(profile["holdout"]["errors_pct"]) == [held_out.name]
    assert np.isfinite(profile["holdout"]["errors_pct"][held_out.name])
