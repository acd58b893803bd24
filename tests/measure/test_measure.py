"""Tests for optim.measure.core: intervals, accuracy, fidelity, prediction, latency and the node profile."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort
import pytest
import torch

from optim.errors import ConfigError, ShapeMismatchError
from optim.handle import ModelHandle
from optim.io.export import torch_to_onnx
from optim.measure.core import (
    accuracy,
    evaluate,
    fidelity,
    latency,
    make_session,
    predict,
    profile_nodes,
    wilson_interval,
)
from optim.measure.timing import parse_profile, run_profiled


@pytest.fixture(scope="module")
def tiny_cnn_dynamic(tiny_cnn_module: torch.nn.Module) -> ModelHandle:
    proto = torch_to_onnx(tiny_cnn_module, [torch.randn(1, 3, 16, 16)], dynamic_batch=True)
    return ModelHandle(model=proto, name="tiny_cnn_dyn")


# --- wilson_interval ---------------------------------------------------------------------------
def test_wilson_interval_matches_hand_computation_when_half_correct() -> None:
    lo, hi = wilson_interval(50, 100)
    assert lo == pytest.approx(0.40383, abs=1e-4)
    assert hi == pytest.approx(0.59617, abs=1e-4)


def test_wilson_interval_starts_at_zero_when_no_successes() -> None:
    lo, hi = wilson_interval(0, 100)
    z2n = 1.96**2 / 100
    assert lo == 0.0
    assert hi == pytest.approx(z2n / (1 + z2n), rel=1e-9)


def test_wilson_interval_ends_at_one_when_all_successes() -> None:
    lo, hi = wilson_interval(100, 100)
    z2n = 1.96**2 / 100
    assert hi == 1.0
    assert lo == pytest.approx(1 - z2n / (1 + z2n), rel=1e-9)


def test_wilson_interval_is_uninformative_when_n_is_zero() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_wilson_interval_raises_when_k_exceeds_n() -> None:
    with pytest.raises(ValueError):
        wilson_interval(5, 4)


# --- accuracy ----------------------------------------------------------------------------------
def test_accuracy_counts_top1_and_top5_on_constructed_logits() -> None:
    # 4 samples, 6 classes: the label ranks 1st, 1st, 4th, 6th.
    logits = np.array(
        [
            [9, 1, 2, 3, 4, 5],
            [0, 9, 1, 2, 3, 4],
            [5, 4, 3, 9, 0, 1],
            [5, 4, 3, 2, 1, 0],
        ],
        dtype=np.float32,
    )
    y = np.array([0, 1, 2, 5])
    acc = accuracy(logits, y)
    assert acc.n == 4
    assert acc.top1 == pytest.approx(0.5)
    assert (acc.top1_lo, acc.top1_hi) == pytest.approx(wilson_interval(2, 4))
    assert acc.top5 == pytest.approx(0.75)
    assert (acc.top5_lo, acc.top5_hi) == pytest.approx(wilson_interval(3, 4))
    assert acc.top1_lo <= acc.top1 <= acc.top1_hi


def test_accuracy_top5_includes_third_ranked_label() -> None:
    logits = np.array([[1, 2, 3, 4, 5, 6, 7]], dtype=np.float32)  # label 4 ranks 3rd
    acc = accuracy(logits, np.array([4]))
    assert acc.top1 == 0.0
    assert acc.top5 == 1.0


def test_accuracy_top5_is_none_when_fewer_than_five_classes() -> None:
    acc = accuracy(np.eye(4, dtype=np.float32), np.arange(4))
    assert acc.top1 == 1.0
    assert acc.top5 is None and acc.top5_lo is None and acc.top5_hi is None


def test_accuracy_raises_when_label_count_differs() -> None:
    with pytest.raises(ShapeMismatchError):
        accuracy(np.zeros((3, 5)), np.zeros(4))


# --- fidelity ----------------------------------------------------------------------------------
def test_fidelity_is_perfect_when_outputs_identical() -> None:
    a = np.random.default_rng(0).standard_normal((50, 10))
    f = fidelity(a, a.copy())
    assert f.top1_agreement == 1.0
    assert f.cosine == pytest.approx(1.0)
    assert f.rel_error == 0.0


def test_fidelity_measures_perturbation() -> None:
    a = np.array([[1.0, 0.0], [0.0, 1.0]])
    b = np.array([[1.0, 0.0], [1.0, 0.0]])  # second row flipped: argmax differs, orthogonal
    f = fidelity(a, b)
    assert f.top1_agreement == 0.5
    assert f.cosine == pytest.approx(0.5)  # mean of cos 1 and cos 0
    assert f.rel_error == pytest.approx(math.sqrt(2) / math.sqrt(2))


def test_fidelity_rel_error_scales_with_noise() -> None:
    a = np.random.default_rng(1).standard_normal((100, 10))
    f = fidelity(a, a * 1.1)
    assert f.rel_error == pytest.approx(0.1)
    assert f.cosine == pytest.approx(1.0)
    assert f.top1_agreement == 1.0


def test_fidelity_raises_when_shapes_differ() -> None:
    with pytest.raises(ShapeMismatchError):
        fidelity(np.zeros((3, 5)), np.zeros((3, 4)))


# --- sessions and prediction -------------------------------------------------------------------
def test_make_session_sets_threads_and_level(tiny_cnn: ModelHandle) -> None:
    sess = make_session(tiny_cnn, threads=1, opt_level="disable")
    opts = sess.get_session_options()
    assert opts.intra_op_num_threads == 1
    assert opts.inter_op_num_threads == 1
    assert opts.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert opts.graph_optimization_level == ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    assert sess.get_providers() == ["CPUExecutionProvider"]


def test_make_session_raises_when_opt_level_unknown(tiny_cnn: ModelHandle) -> None:
    with pytest.raises(ConfigError, match="opt_level"):
        make_session(tiny_cnn, opt_level="max")


def test_make_session_raises_when_cuda_missing(tiny_cnn: ModelHandle) -> None:
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDA provider present")
    with pytest.raises(ConfigError, match="cpu"):
        make_session(tiny_cnn, providers=["cuda"])


def test_predict_batched_equals_one_by_one(
    tiny_cnn: ModelHandle, tiny_cnn_dynamic: ModelHandle, tiny_images: tuple[np.ndarray, np.ndarray]
) -> None:
    x = tiny_images[0][:70]
    batched = predict(tiny_cnn_dynamic, x, batch_size=64)
    single = predict(tiny_cnn, x)  # fixed batch 1: one sample per call
    assert batched.shape == single.shape == (70, 10)
    np.testing.assert_allclose(batched, single, rtol=1e-4, atol=1e-5)


def test_predict_raises_when_sample_shape_wrong(tiny_cnn: ModelHandle) -> None:
    with pytest.raises(ShapeMismatchError, match="expects"):
        predict(tiny_cnn, np.zeros((2, 3, 8, 8), np.float32))


@dataclass
class _Data:
    x: np.ndarray
    y: np.ndarray | None


def test_evaluate_gives_fidelity_only_when_no_labels(
    tiny_cnn: ModelHandle, tiny_images: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = tiny_images
    ref = evaluate(tiny_cnn, _Data(x[:20], y[:20]))
    assert ref.accuracy is not None and ref.accuracy.n == 20 and ref.fidelity is None
    unl = evaluate(tiny_cnn, _Data(x[:20], None), reference_logits=ref.logits)
    assert unl.accuracy is None
    assert unl.fidelity is not None and unl.fidelity.top1_agreement == 1.0


# --- latency -----------------------------------------------------------------------------------
def test_latency_returns_positive_median_below_p90_with_settings(tiny_cnn: ModelHandle) -> None:
    lat = latency(tiny_cnn, batch=1, threads=1, opt_level="basic", budget_s=0.05, warmup=2, min_runs=5)
    assert 0 < lat.median_ms <= lat.p90_ms
    assert lat.runs >= 5
    assert (lat.batch, lat.threads, lat.opt_level, lat.warmup) == (1, 1, "basic", 2)
    assert lat.batch_mode == "native"


def test_latency_stops_at_max_runs(tiny_cnn: ModelHandle) -> None:
    lat = latency(tiny_cnn, budget_s=10.0, min_runs=3, max_runs=7)
    assert lat.runs == 7


def test_latency_rebatches_when_model_fixes_batch_one(tiny_cnn: ModelHandle) -> None:
    lat = latency(tiny_cnn, batch=8, budget_s=0.05, min_runs=3)
    assert lat.batch == 8 and lat.batch_mode == "rebatched"
    assert lat.median_ms > 0


def test_latency_raises_when_settings_invalid(tiny_cnn: ModelHandle) -> None:
    with pytest.raises(ConfigError):
        latency(tiny_cnn, batch=0)


# --- profile_nodes -----------------------------------------------------------------------------
def test_profile_nodes_lists_every_onnx_node_when_opt_level_disable(tiny_cnn: ModelHandle) -> None:
    prof = profile_nodes(tiny_cnn, opt_level="disable", runs=10)
    names = {n.name for n in tiny_cnn.model.graph.node}
    assert set(prof.table["node"]) == names
    assert list(prof.table.columns) == ["node", "op_type", "ms", "share", "provider"]
    assert prof.table["ms"].is_monotonic_decreasing
    assert prof.table["share"].sum() == pytest.approx(1.0)
    assert 0.5 < prof.coverage <= 1.2
    assert prof.runs + prof.dropped_runs == 10 and prof.runs >= 5 and prof.opt_level == "disable"
    ops = dict(zip(prof.table["node"], prof.table["op_type"], strict=True))
    assert all(ops[n.name] == n.op_type for n in tiny_cnn.model.graph.node)


def test_parse_profile_averages_per_run_and_skips_warmup_and_stalled_runs() -> None:
    def node(name: str, ts: float, dur: float) -> dict:
        return {"cat": "Node", "name": f"{name}_kernel_time", "ts": ts, "dur": dur,
                "args": {"op_name": "Conv", "provider": "CPUExecutionProvider"}}

    events = [
        {"cat": "Session", "name": "model_run", "ts": 0, "dur": 100},  # warm-up, dropped
        node("a", 10, 90),
        {"cat": "Session", "name": "model_run", "ts": 200, "dur": 50},
        node("a", 205, 30), node("b", 240, 10),
        {"cat": "Node", "name": "a_fence_before", "ts": 204, "dur": 1},
        {"cat": "Session", "name": "model_run", "ts": 300, "dur": 50},
        node("a", 305, 20), node("b", 330, 10),
        {"cat": "Session", "name": "model_run", "ts": 400, "dur": 5000},  # preempted run: dropped
        node("a", 405, 4000), node("b", 4500, 10),
    ]
    prof = parse_profile(events)
    assert prof.runs == 2 and prof.dropped_runs == 1
    assert list(prof.table["node"]) == ["a", "b"]
    assert prof.table["ms"].tolist() == pytest.approx([0.025, 0.010])
    assert prof.run_ms == pytest.approx(0.050)
    assert prof.coverage == pytest.approx(0.035 / 0.050)


def _two_input_model(batch: int | str) -> ModelHandle:
    from onnx import TensorProto, helper

    dims = [batch, 4]
    graph = helper.make_graph(
        [helper.make_node("Mul", ["input", "scale"], ["logits"], name="mul")],
        "two_inputs",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, dims),
         helper.make_tensor_value_info("scale", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, dims)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    return ModelHandle(model=model, name="two_inputs")


def test_predict_synthesises_second_input_when_model_has_two() -> None:
    from optim.io.load import synthesize_inputs

    handle = _two_input_model("batch")
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    out = predict(handle, x, batch_size=64)
    scale = synthesize_inputs(handle.model, batch=3, seed=0)["scale"]
    np.testing.assert_allclose(out, x * scale)


def test_latency_rebatches_multi_input_model() -> None:
    lat = latency(_two_input_model(1), batch=4, budget_s=0.01, min_runs=3)
    assert lat.batch_mode == "rebatched" and lat.runs >= 3


# --- run_profiled / profile_nodes at a fused level ---------------------------------------------
def test_run_profiled_returns_one_model_run_per_call_including_warmup(tiny_cnn: ModelHandle, tmp_path) -> None:
    sess = make_session(tiny_cnn, opt_level="all", profile_prefix=tmp_path / "p")
    events = run_profiled(sess, tiny_cnn.model, runs=4)
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    assert len(runs) == 5


def test_profile_nodes_reports_fewer_kernels_than_onnx_nodes_when_fused(tiny_cnn: ModelHandle) -> None:
    prof = profile_nodes(tiny_cnn, opt_level="all", runs=3)
    assert prof.opt_level == "all"
    assert len(prof.table) < len(tiny_cnn.model.graph.node)  # Relus fused: why optim.measure.layer_profile maps back
    assert prof.table["ms"].sum() == pytest.approx(prof.node_sum_ms)


def test_timed_runs_counts_warmup_apart_and_stops_at_max_runs() -> None:
    from optim.measure.timing import timed_runs

    calls: list[int] = []
    times = timed_runs(lambda: calls.append(1), budget_s=10.0, warmup=2, min_runs=3, max_runs=5)
    assert len(times) == 5 and len(calls) == 7 and (times >= 0).all()


def test_timed_runs_cpu_clock_ignores_time_spent_sleeping() -> None:
    import time

    from optim.measure.timing import timed_runs

    wall = timed_runs(lambda: time.sleep(0.01), budget_s=0.0, warmup=0, min_runs=3, clock="wall")
    cpu = timed_runs(lambda: time.sleep(0.01), budget_s=0.0, warmup=0, min_runs=3, clock="cpu")
    assert np.median(wall) >= 9.0 and np.median(cpu) < 5.0


def test_latency_records_its_clock_and_refuses_an_unknown_one(tiny_cnn: ModelHandle) -> None:
    assert latency(tiny_cnn, budget_s=0.0, min_runs=3, clock="cpu").clock == "cpu"
    with pytest.raises(ConfigError, match="clock"):
        latency(tiny_cnn, clock="gpu")


def test_measure_model_evaluates_outside_quiet_and_times_and_profiles_inside(tiny_cnn: ModelHandle) -> None:
    from contextlib import contextmanager

    from optim.io.data import Dataset
    from optim.measure.model import measure_model

    x = np.random.default_rng(0).standard_normal((20, 3, 16, 16)).astype(np.float32)
    y = np.zeros(20, dtype=np.int64)
    entered: list[str] = []

    @contextmanager
    def quiet():  # noqa: ANN202
        entered.append("in")
        yield
        entered.append("out")

    m = measure_model(tiny_cnn, Dataset(x, y, "d"), budget_s=0.0, min_runs=3, profile_runs=2, quiet=quiet())
    assert entered == ["in", "out"]
    assert m.evaluation.accuracy.n == 20 and m.latency.runs >= 3 and m.latency.batch == 1
    assert m.profile is not None and len(m.profile.table) > 0
    bare = measure_model(tiny_cnn, budget_s=0.0, min_runs=3)
    assert bare.evaluation is None and bare.profile is None
