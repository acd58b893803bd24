"""Host calibration: the fits recover known factors from synthetic rows; a tiny calibration writes its profile."""

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


def _rows(n: int, seed: int = 0, e_c: float = 0.6, e_m: float = 1.5, over_us: float = 3.0, out_ns: float = 0.5,
          peak: float = 100e9, bw: float = 20e9) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ops = 10 ** rng.uniform(4, 8, n)
    nbytes = 10 ** rng.uniform(3, 6, n)
    out = 10 ** rng.uniform(2, 5, n)
    ms = (ops / (peak * e_c) + nbytes / (bw * e_m) + over_us * 1e-6 + out * out_ns * 1e-9) * 1e3
    return pd.DataFrame({"ops": ops, "bytes": nbytes, "out_elems": out, "ms": ms})


def test_fit_class_recovers_known_factors_from_synthetic_rows() -> None:
    got = fit.fit_class(_rows(60), 100e9, 20e9, prior_weight=0.0)
    assert got["eff_compute"] == pytest.approx(0.6, rel=0.02)
    assert got["eff_memory"] == pytest.approx(1.5, rel=0.02)
    assert got["overhead_us"] == pytest.approx(3.0, rel=0.05)
    assert got["out_ns"] == pytest.approx(0.5, rel=0.05)
    assert got["fit_median_pct"] < 1


def test_fit_class_of_memory_class_prices_no_arithmetic() -> None:
    rows = _rows(30, e_c=1e9, out_ns=0.0)
    got = fit.fit_class(rows, 100e9, 20e9, prior_weight=0.0, compute=False)
    assert got["eff_compute"] == fit.NO_COMPUTE and got["out_ns"] == 0.0
    assert got["eff_memory"] == pytest.approx(1.5, rel=0.02)


def test_fit_factors_rescales_parent_for_an_op_type_with_few_rows() -> None:
    many = _rows(40, 1, e_c=1e9, out_ns=0.0).assign(op_class="elementwise:Add")
    few = _rows(3, 2, e_c=1e9, e_m=0.75, over_us=6.0, out_ns=0.0).assign(op_class="elementwise:Erf")  # 2x slower
    got = fit.fit_factors(pd.concat([many, few], ignore_index=True), 100e9, 20e9)
    assert got["elementwise:Erf"]["fit"] == "scaled parent"
    assert got["elementwise:Erf"]["eff_memory"] == pytest.approx(got["elementwise"]["eff_memory"] / 2, rel=0.15)
    assert got["elementwise:Add"]["fit"] == "full"


def test_fit_group_scales_recovers_family_scales_and_kernel_cost() -> None:
    rng = np.random.default_rng(3)
    parts = rng.uniform(0.01, 1.0, (14, len(fit.GROUPS)))
    counts = rng.integers(5, 80, 14).astype(float)
    truth = np.array([1.2, 0.8, 1.1, 1.0, 1.5, 1.0, 0.9])[: len(fit.GROUPS)]
    measured = 0.01 + parts @ truth + counts * 0.001
    scales, delta, _ = fit.fit_group_scales(parts, counts, measured, 0.01, ridge=0.0)
    assert scales == pytest.approx(truth, rel=1e-3)
    assert delta == pytest.approx(0.001, rel=1e-3)


def test_fit_group_scales_fits_the_run_overhead_within_its_range() -> None:
    rng = np.random.default_rng(5)
    parts = rng.uniform(0.005, 0.5, (16, len(fit.GROUPS)))
    counts = rng.integers(3, 60, 16).astype(float)
    measured = 0.009 + parts.sum(axis=1) + counts * 0.0005  # runs cost 9 us; the empty graph read 13 us
    scales, delta, over = fit.fit_group_scales(parts, counts, measured, 0.013, ridge=0.0, overhead_range=(0.5, 1.25))
    assert over == pytest.approx(0.009, rel=1e-3) and delta == pytest.approx(0.0005, rel=1e-2)
    assert scales == pytest.approx(np.ones(len(fit.GROUPS)), rel=1e-3)
    _, _, pinned = fit.fit_group_scales(parts, counts, measured, 0.013, ridge=0.0)
    assert pinned == pytest.approx(0.013)


def test_profiler_cost_recovers_per_kernel_inflation() -> None:
    rng = np.random.default_rng(4)
    true = [list(rng.uniform(0.002, 0.05, n)) for n in (5, 20, 60, 12)]
    latency = np.array([sum(t) for t in true]) * 1.3 + 0.012  # whole runs 1.3x the kernels, 12 us per run
    profiled = [[k + 0.004 for k in t] for t in true]  # the profiler adds 4 us to every kernel
    assert fit.profiler_cost(profiled, latency, 0.012) == pytest.approx(0.004, abs=2e-4)


def test_group_of_maps_classes_to_kernel_families() -> None:
    assert [fit.group_of(c) for c in ("conv1x1", "dwconv_nchw", "gemv_int8", "conv_integer_odd", "quant:QuantizeLinear",
                                      "gemv", "dwconv")] == ["conv", "nchw", "int8", "integer", "memory", "gemm", "dwconv"]


def test_measure_run_overhead_is_a_few_microseconds() -> None:
    assert 0.0005 < micro.measure_run_overhead_ms(runs=50) < 0.2


def test_measured_layers_put_fused_nchwc_kernel_time_on_the_convs(tiny_cnn: ModelHandle) -> None:
    from optim.hardware.targets import estimate

    layers = estimate(tiny_cnn, "host_measured").layers.set_index("node")
    graph = tiny_cnn.model.graph
    convs = [n.name for n in graph.node if n.op_type == "Conv"]
    relus = [n.name for n in graph.node if n.op_type == "Relu"]
    assert (layers.loc[convs, "measured_ms"] > 0).all()  # blocked conv kernels (Relu fused in) map to their conv
    assert (layers.loc[relus, "measured_ms"] == 0).all()


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
    assert {"conv", "gemv"} <= set(profile["classes"])  # the reference models end in one batch-1 Linear
    assert list(profile["holdout"]["errors_pct"]) == [held_out.name]
    assert np.isfinite(profile["holdout"]["errors_pct"][held_out.name])


def test_cached_build_reuses_a_built_calibration_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from optim.hardware.calibration import models

    monkeypatch.setenv("OPTIM_DATA_DIR", str(tmp_path))
    first = models.cached_build("ref:fc_autoencoder:0.5")
    assert list((tmp_path / "hardware" / "models").glob("*.onnx"))

    def no_build(spec: str) -> None:
        raise AssertionError(f"{spec} was rebuilt")

    monkeypatch.setattr(models, "build", no_build)
    again = models.cached_build("ref:fc_autoencoder:0.5")
    assert again.name == first.name == "fc_autoencoder_w0.5"
    assert again.model.SerializeToString() == first.model.SerializeToString()


def test_kernel_minima_takes_each_kernels_fastest_run() -> None:
    from optim.hardware.calibration.kernels import kernel_minima

    runs = [{"cat": "Session", "name": "model_run", "ts": t, "dur": 100} for t in (0, 200, 400)]
    nodes = [{"cat": "Node", "name": "conv_kernel_time", "ts": t + 10, "dur": d} for t, d in ((0, 50), (200, 30), (400, 40))]
    nodes += [{"cat": "Node", "name": "relu_kernel_time", "ts": t + 70, "dur": 5} for t in (0, 200, 400)]
    got = kernel_minima(runs + nodes, skip_runs=1)  # the first run is the warm-up
    assert got == {"conv": pytest.approx(0.030), "relu": pytest.approx(0.005)}


def test_a_thread_clock_reading_of_zero_is_not_taken_as_a_latency(monkeypatch) -> None:
    handle = reference_model("fc_autoencoder", 0.5)
    real = micro.timed_runs

    def stalled_clock(run_once, **kw):  # the CPU clock did not advance over some runs
        times = real(run_once, **kw)
        return np.where(np.arange(len(times)) % 2 == 0, 0.0, times) if kw.get("clock") == "cpu" else times

    monkeypatch.setattr(micro, "timed_runs", stalled_clock)
    assert micro.measured_latency_ms(handle, budget_s=0.02, stat="min") > 0
    monkeypatch.setattr(micro, "timed_runs", lambda run_once, **kw: np.zeros(5) if kw.get("clock") == "cpu"
                        else real(run_once, **kw))
    assert micro.measured_latency_ms(handle, budget_s=0.02, stat="min") > 0  # all zero: wall clock instead


def test_a_thread_clock_that_advanced_only_partly_is_not_the_minimum(monkeypatch) -> None:
    # seen here: a 150 us model read 18 us once, a 24 us MLP 4 us; the fastest run must not be such a reading
    handle = reference_model("fc_autoencoder", 0.5)
    real = micro.timed_runs
    quiet = micro.measured_latency_ms(handle, budget_s=0.05, stat="min")

    def partly_stalled(run_once, **kw):
        times = real(run_once, **kw)
        if kw.get("clock") == "cpu":
            times[len(times) // 2] *= 0.1
        return times

    monkeypatch.setattr(micro, "timed_runs", partly_stalled)
    assert micro.measured_latency_ms(handle, budget_s=0.05, stat="min") > 0.4 * quiet


def test_fit_class_takes_weights_read_from_dram_at_copy_bandwidth_off_before_fitting() -> None:
    rows = _rows(60)
    dram = np.where(np.arange(len(rows)) % 2 == 0, 0.5 * rows["bytes"], 0.0)
    rows["dram_bytes"] = dram
    # the in-cache part of the bytes moves at bw x 1.5 (what is fitted), the DRAM part at the copy bandwidth
    rows["ms"] = rows["ms"] - dram / (20e9 * 1.5) * 1e3 + dram / 20e9 * 1e3
    got = fit.fit_class(rows, 100e9, 20e9, prior_weight=0.0)
    assert got["eff_memory"] == pytest.approx(1.5, rel=0.02)
    assert got["eff_compute"] == pytest.approx(0.6, rel=0.02)


def test_fit_factors_weighs_every_calibration_model_alike_not_by_its_time() -> None:
    # rows are weighted by their share of their own model's time: two 0.1 ms models agreeing on a class's
    # cost outweigh one 3 ms model that disagrees (weighted by absolute time, the 3 ms model set it alone)
    def model(name: str, seed: int, scale: float, e_c: float) -> pd.DataFrame:
        rows = _rows(12, seed, e_c=e_c, over_us=0.0, out_ns=0.0).assign(op_class="gemm", model=name)
        rows["ops"] *= scale
        rows["bytes"] *= 1e-3
        rows["ms"] = rows["ops"] / (100e9 * e_c) * 1e3
        return rows

    table = pd.concat([model("big", 1, 100.0, 0.5), model("small", 2, 0.01, 1.0), model("small2", 3, 0.01, 1.0)],
                      ignore_index=True)
    got = fit.fit_factors(table, 100e9, 20e9)["gemm"]
    assert got["eff_compute"] == pytest.approx(1.0, rel=0.1)  # the big model alone would give 0.5


def test_a_standalone_clip_borrows_relus_cost_not_the_elementwise_average() -> None:
    from optim.hardware.device import parent_class

    assert parent_class("elementwise:Clip") == "elementwise:Relu"
    assert parent_class("elementwise:Relu") == "elementwise" and parent_class("elementwise:Mul") == "elementwise"
    relu = _rows(12, 4, e_c=1e9, e_m=4.0, over_us=0.3, out_ns=0.0).assign(op_class="elementwise:Relu")
    mul = _rows(12, 5, e_c=1e9, e_m=0.8, over_us=1.0, out_ns=0.0).assign(op_class="elementwise:Mul")
    clip = _rows(3, 6, e_c=1e9, e_m=4.0, over_us=0.3, out_ns=0.0).assign(op_class="elementwise:Clip")
    got = fit.fit_factors(pd.concat([relu, mul, clip], ignore_index=True), 100e9, 20e9)
    assert got["elementwise:Clip"]["fit"] == "scaled parent"
    assert got["elementwise:Clip"]["eff_memory"] == pytest.approx(4.0, rel=0.15)  # Relu's, not the family's
