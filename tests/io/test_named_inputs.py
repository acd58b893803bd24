"""Multi-input evaluation data (optim.io.named_inputs): an npz with one array per model input plus y feeds a
BERT-shaped classifier; names, shapes, batch sizes and token ids are checked against the model, each mismatch one
sentence naming the input; labelled text classification gets accuracy with its interval, in the sweep too."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from optim.analysis import select
from optim.errors import DataFormatError, FileTooLargeError, MissingInputError, ShapeMismatchError
from optim.handle import ModelHandle
from optim.io.model_data import load_data_for
from optim.io.shapes import synthesize_inputs
from optim.jobs import codec
from optim.measure.core import evaluate, wilson_interval
from optim.sweep.run import SweepConfig, run_sweep
from optim.sweep.store import Store

VOCAB, SEQ, DIM, CLASSES = 50, 8, 6, 3


def _text_classifier() -> ModelHandle:
    """input_ids/attention_mask/token_type_ids → masked mean of word + type embeddings → 3 logits."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((VOCAB, DIM)).astype(np.float32), "word"),
             numpy_helper.from_array(rng.standard_normal((2, DIM)).astype(np.float32) * 3, "types"),
             numpy_helper.from_array(rng.standard_normal((DIM, CLASSES)).astype(np.float32), "w"),
             numpy_helper.from_array(np.zeros(CLASSES, np.float32), "b"),
             numpy_helper.from_array(np.array([2], np.int64), "axis2"),
             numpy_helper.from_array(np.array([1], np.int64), "axis1")]
    nodes = [helper.make_node("Gather", ["word", "input_ids"], ["we"]),
             helper.make_node("Gather", ["types", "token_type_ids"], ["te"]),
             helper.make_node("Add", ["we", "te"], ["emb"]),
             helper.make_node("Cast", ["attention_mask"], ["m"], to=TensorProto.FLOAT),
             helper.make_node("Unsqueeze", ["m", "axis2"], ["m3"]),
             helper.make_node("Mul", ["emb", "m3"], ["masked"]),
             helper.make_node("ReduceSum", ["masked", "axis1"], ["summed"], keepdims=0),
             helper.make_node("ReduceSum", ["m3", "axis1"], ["count"], keepdims=0),
             helper.make_node("Div", ["summed", "count"], ["pooled"]),
             helper.make_node("MatMul", ["pooled", "w"], ["mm"]),
             helper.make_node("Add", ["mm", "b"], ["logits"])]
    ins = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", SEQ])
           for n in ("input_ids", "attention_mask", "token_type_ids")]
    out = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", CLASSES])]
    model = helper.make_model(helper.make_graph(nodes, "text", ins, out, inits), opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return ModelHandle(model, "text-classifier")


def _tokens(n: int = 60, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, SEQ + 1, n)
    mask = (np.arange(SEQ)[None, :] < lengths[:, None]).astype(np.int64)
    types = ((np.arange(SEQ)[None, :] >= lengths[:, None] // 2) & (mask == 1)).astype(np.int64)
    return {"input_ids": rng.integers(0, VOCAB, (n, SEQ)) * mask, "attention_mask": mask, "token_type_ids": types}


def _oracle(handle: ModelHandle, feeds: dict[str, np.ndarray]) -> np.ndarray:
    """Class predictions straight from ONNX Runtime (the reference the measured accuracy is checked against)."""
    sess = ort.InferenceSession(handle.model_bytes, providers=["CPUExecutionProvider"])
    return np.argmax(sess.run(None, feeds)[0], axis=1)


def _npz(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


@pytest.fixture(scope="module")
def text() -> ModelHandle:
    return _text_classifier()


def test_named_npz_feeds_every_input_and_labelled_text_gets_accuracy_with_interval(text: ModelHandle) -> None:
    toks = _tokens()
    y = _oracle(text, toks)
    y[:12] = (y[:12] + 1) % CLASSES  # 12 of 60 wrong: accuracy 0.8 exactly
    ds = load_data_for(text, _npz(**toks, y=y), "text.npz")
    assert ds.x_name == "input_ids" and sorted(ds.feeds) == ["attention_mask", "token_type_ids"]
    acc = evaluate(text, ds).accuracy
    assert acc.top1 == pytest.approx(48 / 60) and (acc.top1_lo, acc.top1_hi) == pytest.approx(wilson_interval(48, 60))


def test_named_npz_uses_the_files_mask_not_a_synthesised_one(text: ModelHandle) -> None:
    toks = _tokens()
    with_mask = _oracle(text, toks)
    ones = _oracle(text, {**toks, "attention_mask": np.ones_like(toks["attention_mask"])})
    assert (with_mask != ones).any()  # the mask matters for this model
    ds = load_data_for(text, _npz(**toks, y=with_mask), "text.npz")
    assert evaluate(text, ds).accuracy.top1 == 1.0


def test_named_npz_synthesises_only_conventional_inputs_it_lacks(text: ModelHandle) -> None:
    toks = _tokens()
    full = {"input_ids": toks["input_ids"], "attention_mask": np.ones((60, SEQ), np.int64),
            "token_type_ids": np.zeros((60, SEQ), np.int64)}  # what a file without them means
    ds = load_data_for(text, _npz(input_ids=toks["input_ids"], y=_oracle(text, full)), "ids.npz")
    assert evaluate(text, ds).accuracy.top1 == 1.0


def test_named_npz_refuses_a_file_without_the_token_ids(text: ModelHandle) -> None:
    toks = _tokens()
    with pytest.raises(MissingInputError, match=r"no array for input 'input_ids' \(token ids below 50"):
        load_data_for(text, _npz(attention_mask=toks["attention_mask"]), "mask.npz")


@pytest.mark.parametrize(("arrays", "error", "match"), [
    ({"input_ids": np.zeros((4, SEQ), np.int64), "segment": np.zeros((4, SEQ), np.int64)}, DataFormatError,
     r"'segment'.*name no input of the model.*'input_ids', 'attention_mask', 'token_type_ids'"),
    ({"input_ids": np.zeros((4, SEQ - 2), np.int64)}, ShapeMismatchError,
     r"'input_ids' has samples of shape \(6,\), but input 'input_ids' expects \(8,\)"),
    ({"input_ids": np.zeros((4, SEQ), np.int64), "attention_mask": np.ones((3, SEQ), np.int64)}, DataFormatError,
     r"'attention_mask' has 3 rows but 'input_ids' has 4"),
    ({"input_ids": np.full((4, SEQ), VOCAB, np.int64)}, DataFormatError,
     r"'input_ids' holds id 50.*table of 50 rows"),
    ({"input_ids": np.zeros((4, SEQ), np.float32)}, ShapeMismatchError, r"'input_ids' is float32.*integer"),
])
def test_named_npz_mismatch_is_one_sentence_naming_the_input(
        text: ModelHandle, arrays: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match) as info:
        load_data_for(text, _npz(**arrays), "bad.npz")
    assert ". " not in str(info.value)


def test_named_npz_array_is_bounded_from_its_header_before_it_is_read(text: ModelHandle) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        member = io.BytesIO()
        np.lib.format.write_array_header_1_0(member, {"descr": "<i8", "fortran_order": False,
                                                      "shape": (10**9, SEQ)})
        zf.writestr("input_ids.npy", member.getvalue() + b"\0" * 64)
    with pytest.raises(FileTooLargeError, match="input_ids.npy"):
        load_data_for(text, buf.getvalue(), "bomb.npz")


def test_x_only_file_refuses_a_model_whose_other_input_carries_data() -> None:
    two = _text_classifier()
    extra = helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["batch", 4])
    two.model.graph.input.append(extra)
    with pytest.raises(MissingInputError, match=r"'pixel_values' carries data.*one array per input"):
        load_data_for(two, _npz(x=np.zeros((4, SEQ), np.int64)), "x.npz")


def test_codec_carries_named_inputs_through_a_job(text: ModelHandle) -> None:
    ds = load_data_for(text, _npz(**_tokens(5), y=np.zeros(5, np.int64)), "t.npz")
    facts, blobs = codec.dataset_blobs(ds, "data")
    back = codec.dataset_from(facts, blobs, "data")
    assert back.x_name == "input_ids" and back.content_hash == ds.content_hash
    assert np.array_equal(back.feeds["attention_mask"], ds.feeds["attention_mask"])


def test_synthesize_inputs_gives_masks_ones_type_ids_zeros_and_positions_even_behind_embeddings(
        text: ModelHandle) -> None:
    feeds = synthesize_inputs(text.model, batch=3)
    assert (feeds["attention_mask"] == 1).all() and (feeds["token_type_ids"] == 0).all()
    assert feeds["input_ids"].max() < VOCAB and feeds["input_ids"].std() > 0
    model = _text_classifier().model
    model.graph.input[2].name = "position_ids"
    model.graph.node[1].input[1] = "position_ids"
    assert synthesize_inputs(model, batch=2)["position_ids"].tolist() == [[i % 2 for i in range(SEQ)]] * 2


@pytest.mark.slow
def test_sweep_on_labelled_token_data_reports_accuracy_for_every_variant(text: ModelHandle, tmp_path: Path) -> None:
    toks = _tokens(80)
    ds = load_data_for(text, _npz(**toks, y=_oracle(text, toks)), "text.npz")
    cfg = SweepConfig(ratios=(0,), bits=(32, 16, 8), prune_kinds=("structured",), latency_budget_s=0.02,
                      profile_runs=1)
    store = Store(tmp_path)
    df = select.prepare(store.variants(run_sweep(text, ds, ds.subset(32), cfg, store)))
    assert (df["status"] == "ok").all(), df["error"].tolist()
    assert (df["metric_name"] == select.ACCURACY).all() and (df["n_eval"] == 80).all()
    base = select.baseline_row(df)
    assert base["top1"] == 1.0 and base["metric_lo"] == pytest.approx(wilson_interval(80, 80)[0] * 100)
    assert df["top1"].notna().all() and df["cosine"].notna().all()


@pytest.mark.slow
def test_hf_bert_with_three_token_inputs_gets_labelled_accuracy_from_a_named_npz() -> None:
    import torch
    import transformers

    from optim.io.export import torch_to_onnx
    from optim.io.load import load

    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                  intermediate_size=64, max_position_embeddings=32, num_labels=CLASSES)
    bert = transformers.BertForSequenceClassification(cfg).eval()

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, ids: torch.Tensor, mask: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
            return self.bert(input_ids=ids, attention_mask=mask, token_type_ids=types).logits

    example = tuple(torch.zeros(1, SEQ, dtype=torch.long) for _ in range(3))
    names = ["input_ids", "attention_mask", "token_type_ids"]
    handle = load(torch_to_onnx(Logits(), example, names, ["logits"], dynamic_batch=True).SerializeToString(),
                  "bert.onnx")
    toks = _tokens(100)
    y = _oracle(handle, toks)
    y[:25] = (y[:25] + 1) % CLASSES
    ds = load_data_for(handle, _npz(**toks, y=y), "bert.npz")
    acc = evaluate(handle, ds).accuracy
    assert acc.top1 == pytest.approx(0.75) and (acc.top1_lo, acc.top1_hi) == pytest.approx(wilson_interval(75, 100))


def test_dashboard_upload_attaches_named_token_data_in_a_worker(text: ModelHandle) -> None:
    from optim import api

    loaded = api.load_upload(text.model_bytes, "text.onnx")
    assert "agreement" in loaded.judged_by  # no labels yet, one class output
    toks = _tokens(20)
    with_data = api.attach_data(loaded, _npz(**toks, y=_oracle(text, toks)), "text.npz")
    assert with_data.has_labels and with_data.judged_by.startswith("labelled samples (top-1 accuracy)")
    assert with_data.test.x_name == "input_ids" and sorted(with_data.test.feeds) == ["attention_mask",
                                                                                     "token_type_ids"]
    with pytest.raises(MissingInputError, match="'input_ids'"):
        api.attach_data(loaded, _npz(attention_mask=toks["attention_mask"]), "mask.npz")


@pytest.mark.slow
def test_cli_sweep_reads_named_npz_and_refuses_a_missing_input_in_one_line(
        text: ModelHandle, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from optim.__main__ import main

    onnx.save(text.model, tmp_path / "text.onnx")
    toks = _tokens(40)
    np.savez(tmp_path / "text.npz", **toks, y=_oracle(text, toks))
    argv = ["sweep", str(tmp_path / "text.onnx"), "--data", str(tmp_path / "text.npz"), "--ratios", "0",
            "--bits", "32,8", "--kinds", "structured", "--budget", "0.02", "--store", str(tmp_path / "s"),
            "--profile-runs", "1"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Pareto set (top-1 accuracy" in out and "dense · FP32" in out and "100.00%" in out
    np.savez(tmp_path / "mask.npz", attention_mask=toks["attention_mask"])
    argv[3] = str(tmp_path / "mask.npz")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "'input_ids'" in err[0]
