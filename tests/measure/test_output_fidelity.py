"""Fidelity that fits the output (optim.measure.fidelity): output kinds, all-output cosine/SQNR, collapse; the
sweep, the shared decisions and the flags judge detectors by cosine, never by argmax agreement."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest
import torch

from optim.analysis import select
from optim.handle import ModelHandle
from optim.io.export import torch_to_onnx
from optim.io.model_data import synthetic_dataset
from optim.measure.core import evaluate, predict_outputs
from optim.measure.fidelity import Reference, classify_output, fidelity, output_fidelity, output_kinds
from optim.present.views import add_flags
from optim.sweep.run import SweepConfig, run_sweep
from optim.sweep.store import Store

F32, I64 = np.dtype(np.float32), np.dtype(np.int64)


@pytest.mark.parametrize(("name", "shape", "dtype", "producer", "kind"), [
    ("logits", ("batch", 2), F32, "Gemm", "class_logits"),
    ("probabilities", ("N", 10), F32, "Softmax", "class_logits"),
    ("output_label", ("N",), I64, "ArgMax", "labels"),
    ("output0", (1, 84, 8400), F32, "Concat", "other"),
    ("boxes", ("N", 100, 4), F32, "Concat", "boxes"),
    ("pred_boxes", (1, 10, 4), F32, "Sigmoid", "boxes"),
    ("scores", ("N", 100, 80), F32, "Sigmoid", "scores"),
    ("sigmoid_0.tmp_0", ("N", 1, 160, 160), F32, "Sigmoid", "map"),
    ("pooler_output", ("batch", 64), F32, "Tanh", "embedding"),
    ("683", ("N", 512), F32, "LpNormalization", "embedding"),
    ("last_hidden_state", ("batch", "sequence", 64), F32, "Add", "sequence"),
    ("softmax_11.tmp_0", ("N", 40, 6625), F32, "Softmax", "sequence"),
    ("value", ("N", 1), F32, "Gemm", "other"),
])
def test_classify_output_names_the_kind_from_shape_dtype_name_and_producer(
        name: str, shape: tuple, dtype: np.dtype, producer: str, kind: str) -> None:
    assert classify_output(name, shape, dtype, producer) == kind


def test_classify_output_reads_rank2_scores_as_detector_scores_only_beside_boxes() -> None:
    assert classify_output("scores", ("N", 100), F32, "Sigmoid", has_boxes=True) == "scores"
    assert classify_output("scores", ("N", 100), F32, "Gemm", has_boxes=False) == "class_logits"


def test_output_kinds_reads_raw_heads_beside_a_softmax_head_as_regressions() -> None:
    from onnx import TensorProto, helper

    def out(name: str, n: int) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", n])

    nodes = [helper.make_node("Identity", ["x"], ["box"]), helper.make_node("Identity", ["x"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["prob"])]
    graph = helper.make_graph(nodes, "cascade", [out("x", 4)], [out("box", 4), out("logits", 4), out("prob", 4)])
    kinds = output_kinds(helper.make_model(graph))  # an MTCNN stage: box regression beside face/no-face
    assert kinds == {"box": "boxes", "logits": "class_logits", "prob": "class_logits"}
    graph.output[0].name = nodes[0].output[0] = "dense_2"
    assert output_kinds(helper.make_model(graph))["dense_2"] == "other"


def _detector_outputs(n: int = 64, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"boxes": rng.uniform(0, 320, (n, 50, 4)), "scores": rng.uniform(0, 1, (n, 50, 3))}


KINDS = {"boxes": "boxes", "scores": "scores"}


def test_output_fidelity_judges_detectors_by_cosine_without_agreement() -> None:
    ref = _detector_outputs()
    out = {k: v * (1 + 1e-3 * np.random.default_rng(1).standard_normal(v.shape)) for k, v in ref.items()}
    f = output_fidelity(ref, out, KINDS)
    assert f.metric == "cosine" and f.top1_agreement is None
    assert 0.999 < f.cosine <= 1.0 and f.cosine_lo <= f.cosine <= f.cosine_hi
    assert 40 < f.sqnr_db < 80 and f.rel_error < 0.01 and not f.collapsed
    assert f.kinds == "boxes:boxes, scores:scores"


def test_output_fidelity_takes_the_worst_output_and_flags_a_collapse_naming_it() -> None:
    ref = _detector_outputs()
    out = {"boxes": ref["boxes"].copy(), "scores": np.random.default_rng(5).uniform(0, 1, ref["scores"].shape) - 0.5}
    f = output_fidelity(ref, out, KINDS)
    assert f.collapsed and f.worst_output == "scores"
    assert f.cosine < 0.9  # the identical boxes do not hide the broken scores
    assert f.sqnr_db < 10


def test_output_fidelity_collapses_when_an_output_is_rescaled_although_its_cosine_is_perfect() -> None:
    ref = _detector_outputs(16)
    f = output_fidelity(ref, {"boxes": ref["boxes"] * 3, "scores": ref["scores"]}, KINDS)
    assert f.cosine == pytest.approx(1.0) and f.rel_error == pytest.approx(2.0) and f.collapsed


def test_output_fidelity_collapses_when_the_variant_outputs_inf() -> None:
    ref = _detector_outputs(8)
    out = {k: v.copy() for k, v in ref.items()}
    out["scores"][0, 0, 0] = np.inf  # FP16 overflow
    assert output_fidelity(ref, out, KINDS).collapsed


def test_output_fidelity_matches_classic_agreement_for_class_outputs() -> None:
    rng = np.random.default_rng(2)
    ref = rng.standard_normal((200, 10))
    out = ref + rng.standard_normal(ref.shape) * 0.8
    f = output_fidelity({"logits": ref}, {"logits": out}, {"logits": "class_logits"})
    old = fidelity(ref, out)
    assert f.metric == "agreement" and f.top1_agreement == pytest.approx(old.top1_agreement)
    assert f.cosine == pytest.approx(old.cosine) and f.rel_error == pytest.approx(old.rel_error)
    assert not f.collapsed  # a classifier is judged by agreement, not by the cosine threshold


def test_output_fidelity_pairs_outputs_by_position_when_a_variant_renamed_them() -> None:
    ref = _detector_outputs(4)
    f = output_fidelity(ref, {"o1": ref["boxes"], "o2": ref["scores"]}, KINDS)
    assert f.cosine == pytest.approx(1.0) and f.metric == "cosine"


class _Detector(torch.nn.Module):
    """A detector-shaped head: a conv backbone, per-anchor boxes (N, A, 4) and scores (N, A, C). ``scale`` < 1
    stores the box weights that much smaller and scales the boxes back up: below FP16's smallest subnormal
    (6e-8) the weights flush to zero, like the tiny activations of a text-detection map."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                        torch.nn.Conv2d(8, 8, 3, stride=2, padding=1), torch.nn.ReLU())
        self.box = torch.nn.Conv2d(8, 4, 1)
        self.cls = torch.nn.Conv2d(8, 3, 1)
        with torch.no_grad():
            self.box.weight *= scale
            self.box.bias *= scale
        self.scale = scale

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)
        boxes = (self.box(h) * (1 / self.scale)).flatten(2).transpose(1, 2)
        scores = torch.sigmoid(self.cls(h)).flatten(2).transpose(1, 2)
        return boxes, scores


def _detector(scale: float = 1.0) -> ModelHandle:
    model = torch_to_onnx(_Detector(scale).eval(), (torch.randn(1, 3, 16, 16),), ["images"], ["boxes", "scores"],
                          dynamic_batch=True)
    return ModelHandle(model, f"detector-{scale:g}")


def test_evaluate_judges_by_the_originals_output_kinds_which_travel_with_the_reference() -> None:
    import pickle

    h = _detector()
    ds = synthetic_dataset(h, 6)
    ref = Reference(predict_outputs(h, ds.x), {"boxes": "class_logits", "scores": "class_logits"})
    back = pickle.loads(pickle.dumps(ref))  # as it travels to a Ray worker
    assert back.kinds == ref.kinds and set(back) == {"boxes", "scores"}
    assert evaluate(h, ds, reference_logits=back).fidelity.metric == "agreement"  # the reference's kinds, not h's
    assert evaluate(h, ds, reference_logits=dict(ref)).fidelity.metric == "cosine"


def test_evaluate_covers_every_output_of_a_detector() -> None:
    h = _detector()
    ds = synthetic_dataset(h, 12)
    ref = predict_outputs(h, ds.x)
    assert list(ref) == ["boxes", "scores"] and ref["boxes"].shape == (12, 64, 4)
    assert output_kinds(h.model) == {"boxes": "boxes", "scores": "scores"}
    ev = evaluate(h, ds, reference_logits=ref)
    assert ev.fidelity.metric == "cosine" and ev.fidelity.cosine == pytest.approx(1.0)
    assert set(ev.outputs) == {"boxes", "scores"}


@pytest.mark.slow
def test_sweep_of_a_detector_is_judged_by_cosine_and_flags_an_fp16_underflow(tmp_path: Path) -> None:
    cfg = SweepConfig(ratios=(0,), bits=(32, 16, 8), prune_kinds=("structured",), latency_budget_s=0.02,
                      profile_runs=1)
    rows = {}
    for scale in (1.0, 1e-9):
        h = _detector(scale)
        ds = synthetic_dataset(h, 24)
        store = Store(tmp_path / f"s{scale:g}")
        sid = run_sweep(h, ds, ds, cfg, store)
        rows[scale] = add_flags(store.variants(sid)).set_index("label")
    ok = rows[1.0]
    assert (ok["metric_name"] == select.COSINE).all() and ok["agreement"].isna().all()
    assert ok.loc["dense · FP16", "cosine"] > 0.999 and not ok.loc["dense · FP16", "collapsed"]
    assert ok.loc["dense · INT8", "cosine"] > 0.9 and ok.loc["dense · INT8", "sqnr_db"] > 10
    assert (ok["output_kinds"] == "boxes:boxes, scores:scores").all()
    hot = rows[1e-9]
    assert hot.loc["dense · FP16", "collapsed"] and hot.loc["dense · FP16", "status"] == "ok"
    assert "fidelity collapsed" in hot.loc["dense · FP16", "flags"]
    prepared = select.prepare(hot.reset_index())
    assert not prepared.loc[prepared["label"] == "dense · FP16", "pareto"].any()
    rec = select.recommend(prepared)
    assert rec is not None and rec["label"] != "dense · FP16"


def _rows(cosines: list[float], collapsed: list[int], latency: list[float]) -> pd.DataFrame:
    n = len(cosines)
    return pd.DataFrame({
        "variant_id": [f"v{i}" for i in range(n)], "label": [f"v{i}" for i in range(n)], "status": "ok",
        "error": None, "prune_kind": "none", "prune_ratio": 0.0, "bits": [32] + [8] * (n - 1), "opt_level": "all",
        "executable": True, "top1": np.nan, "agreement": np.nan, "cosine": cosines,
        "cosine_lo": [c - 1e-4 for c in cosines], "cosine_hi": [min(1.0, c + 1e-4) for c in cosines],
        "fidelity_metric": "cosine", "fidelity_collapsed": collapsed, "worst_output": "scores",
        "latency_ms": latency, "size_bytes": [1000] + [250] * (n - 1), "effective_size_bytes": np.nan,
        "n_eval": 64})


def test_prepare_names_cosine_and_keeps_collapsed_variants_off_front_and_recommendation() -> None:
    df = select.prepare(_rows([1.0, 0.995, 0.03], [0, 0, 1], [10.0, 6.0, 2.0]))
    assert (df["metric_name"] == select.COSINE).all()
    assert df.loc[0, "metric_lo"] == pytest.approx(select.COSINE_SAME * 100)
    assert df["pareto"].tolist() == [True, True, False]  # v2 is the fastest but collapsed
    assert select.recommend(df)["variant_id"] == "v1"  # 99.5 % of the original: not significantly below
    _, best = select.apply_constraints(df, max_ms=3.0)
    assert best is None


def test_add_flags_says_which_output_collapsed() -> None:
    flags = add_flags(_rows([1.0, 0.03], [0, 1], [10.0, 2.0]))["flags"].tolist()
    assert "fidelity collapsed" not in flags[0]
    assert "fidelity collapsed (cosine 0.030 on output 'scores')" in flags[1]


def test_with_metric_keeps_agreement_for_rows_stored_before_output_kinds() -> None:
    old = _rows([1.0, 0.9], [0, 0], [10.0, 5.0]).drop(columns=["fidelity_metric", "fidelity_collapsed"])
    old["agreement"] = [1.0, 0.97]
    df = select.with_metric(old)
    assert (df["metric_name"] == select.AGREEMENT).all() and not df["collapsed"].any()


def test_sensitivity_of_a_detector_is_measured_in_output_cosine() -> None:
    from optim.analysis.sensitivity import analyze

    h = _detector()
    df = analyze(h, synthetic_dataset(h, 8).x, prune_levels=(0.75,), quant_bits=(8,))
    assert df.attrs["metric_name"] == "output cosine" and df.attrs["baseline"] == 100.0
    assert df["agreement"].isna().all() and (df["drop"] >= 0).all()
    by = df.groupby("kind")["drop"].max()
    assert by["prune"] > by["quant"] > 0  # zeroing 75 % of a layer's channels hurts more than 8-bit weights


def test_evaluate_uses_known_outputs_instead_of_predicting_them() -> None:
    h = _detector()
    ds = synthetic_dataset(h, 8)
    ref = Reference(predict_outputs(h, ds.x), output_kinds(h.model))
    fresh, reused = evaluate(h, ds, reference_logits=ref), evaluate(h, ds, reference_logits=ref, known=ref)
    assert reused.fidelity == fresh.fidelity and np.array_equal(reused.logits, ref["boxes"])
    shifted = {k: v + 1.0 for k, v in ref.items()}  # outputs that differ from what the model computes
    ev = evaluate(h, ds, reference_logits=ref, known=shifted)
    assert np.array_equal(ev.logits, shifted["boxes"]) and ev.fidelity.cosine < fresh.fidelity.cosine
    partial = evaluate(h, ds, reference_logits=ref, known={"scores": ref["scores"]})  # no first output: predicted
    assert np.allclose(partial.logits, ref["boxes"])


def test_sweep_baseline_row_is_measured_from_the_reference(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from optim.measure import model as measure_model_mod

    h = _detector()
    ds = synthetic_dataset(h, 8)
    seen: list[bool] = []
    real = measure_model_mod.evaluate

    def spy(handle, data, reference_logits=None, known=None):  # noqa: ANN001, ANN202
        seen.append(known is not None)
        return real(handle, data, reference_logits=reference_logits, known=known)

    monkeypatch.setattr(measure_model_mod, "evaluate", spy)
    cfg = SweepConfig(ratios=(0.0,), bits=(32, 16), prune_kinds=("structured",), latency_budget_s=0.02, profile_runs=2)
    store = Store(tmp_path)
    df = store.variants(run_sweep(h, ds, None, cfg, store))
    assert sorted(seen) == [False, True]  # FP32 baseline reuses the reference; FP16 is evaluated
    assert df.set_index("bits").loc[32, "cosine"] == pytest.approx(1.0)
