"""Structured pruning of models with recurrent layers (ONNX LSTM / GRU / RNN): the recurrent layer and the
channels it consumes stay whole, every other prunable layer is pruned, and the variant says which were kept."""

from __future__ import annotations

import numpy as np
import onnx
import ort_runner
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from quant_helpers import dataset
from torch import nn

from optim.errors import PassUnavailableError
from optim.handle import ModelHandle
from optim.io.export import torch_to_onnx
from optim.passes._prune.onnx2torch import to_torch
from optim.passes.base import PassContext
from optim.passes.prune_structured import StructuredPruneConfig, run
from optim.passes.quantize import QuantizeConfig
from optim.passes.quantize import run as quantize

RECURRENT = ("LSTM", "GRU", "RNN")


class ConvRecurrent(nn.Module):
    """Conv(4→32) → Conv(32→24) → LSTM/GRU/RNN(24→16) → Linear(16→48) → Linear(48→5), sequence first."""

    def __init__(self, kind: str = "lstm") -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv1d(4, 32, 3, padding=1), nn.Conv1d(32, 24, 3, padding=1)
        self.rnn = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[kind](24, 16)
        self.f1, self.f2 = nn.Linear(16, 48), nn.Linear(48, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (batch, 4, time)
        h = torch.relu(self.c2(torch.relu(self.c1(x)))).permute(2, 0, 1)
        y, _ = self.rnn(h)
        return self.f2(torch.relu(self.f1(y)))


def _proto(kind: str) -> onnx.ModelProto:
    torch.manual_seed(0)
    return torch_to_onnx(ConvRecurrent(kind).eval(), [torch.randn(2, 4, 10)], input_names=["x"],
                         output_names=["y"], dynamic_batch=True)


def _weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Weight arrays by (op of the node using it, input position): ``Conv:1`` lists every conv's weight."""
    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    out: dict[str, list[np.ndarray]] = {}
    for n in model.graph.node:
        for k, name in enumerate(n.input):
            if name in init:
                out.setdefault(f"{n.op_type}:{k}", []).append(init[name])
    return out


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_prune_keeps_recurrent_layer_and_its_inputs_and_prunes_the_rest(kind: str) -> None:
    proto = _proto(kind)
    op = kind.upper()
    out = run(ModelHandle(proto, kind), StructuredPruneConfig(ratio=0.5, recalibrate=False))
    onnx.checker.check_model(out.model)
    x = np.random.default_rng(0).standard_normal((2, 4, 10)).astype(np.float32)
    y0, y1 = ort_runner.run_first(proto, x), ort_runner.run_first(out.model, x)
    assert y1.shape == y0.shape == (10, 2, 5) and np.isfinite(y1).all()
    before, after = _weights(proto), _weights(out.model)
    conv0, conv1 = before["Conv:1"], after["Conv:1"]
    assert conv1[0].shape[0] == 16 < conv0[0].shape[0] == 32  # c1 feeds only c2: pruned
    assert conv1[1].shape == (24, 16, 3)  # c2 feeds the recurrent layer: outputs kept, inputs follow c1
    for k in (1, 2, 3):  # W, R, B of the recurrent layer: exported back unchanged
        np.testing.assert_allclose(after[f"{op}:{k}"][0], before[f"{op}:{k}"][0], atol=1e-6)
    mlp0 = sorted(w.shape for w in before["MatMul:1"])
    mlp1 = sorted(w.shape for w in after["MatMul:1"])
    assert mlp0 == [(16, 48), (48, 5)] and mlp1 == [(16, 24), (24, 5)]  # hidden units after it pruned
    sp = out.meta["structured_pruning"]
    assert sp["params_after"] < sp["params_before"]
    note = out.meta["variant_note"]
    assert note == sp["kept_whole"][0] and f"{op} layer '/rnn/{op}'" in note and "/c2/Conv" in note
    assert note.count(".") == 1 and note.endswith(".")
    assert [n.name for n in out.model.graph.node if n.op_type == op] == [f"/rnn/{op}"]


def test_prune_bidirectional_lstm_keeps_a_dynamic_batch() -> None:
    """torch writes Reshape(Y, [0, 0, -1]) after a bidirectional layer (batch on dim 1): it must not fix the batch."""

    class BiLSTM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1, self.rnn, self.f1 = nn.Conv1d(4, 16, 3, padding=1), nn.LSTM(16, 8, bidirectional=True), nn.Linear(16, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y, _ = self.rnn(torch.relu(self.c1(x)).permute(2, 0, 1))
            return self.f1(y)

    torch.manual_seed(0)
    proto = torch_to_onnx(BiLSTM().eval(), [torch.randn(2, 4, 10)], input_names=["x"], output_names=["y"],
                          dynamic_batch=True)
    out = run(ModelHandle(proto, "bilstm"), StructuredPruneConfig(ratio=0.0))
    assert out.meta["structured_pruning"]["dynamic_batch"] is True
    x = np.random.default_rng(0).standard_normal((3, 4, 10)).astype(np.float32)
    np.testing.assert_allclose(ort_runner.run_first(out.model, x), ort_runner.run_first(proto, x), atol=1e-5)


def test_prune_with_lstm_and_taylor_importance_uses_gradients_through_it() -> None:
    proto = _proto("lstm")
    out = run(ModelHandle(proto, "lstm"), StructuredPruneConfig(ratio=0.5, importance="taylor"))
    x = np.ones((1, 4, 10), np.float32)
    assert ort_runner.run_first(out.model, x).shape == (10, 1, 5)
    assert out.meta["structured_pruning"]["params_after"] < out.meta["structured_pruning"]["params_before"]


@pytest.mark.slow
def test_int8_of_the_pruned_lstm_model_runs_and_keeps_the_note() -> None:
    pruned = run(ModelHandle(_proto("lstm"), "lstm"), StructuredPruneConfig(ratio=0.5))
    x = np.random.default_rng(3).standard_normal((32, 4, 10)).astype(np.float32)
    cfg = QuantizeConfig(mode="int8_auto", search_budget_s=0.0, probe_budget_s=0.05, calib_samples=32)
    out = quantize(pruned, cfg, PassContext(calib=dataset(x)))
    assert ort_runner.run_first(out.model, x[:2]).shape == (10, 2, 5)
    assert out.meta["variant_note"].endswith(pruned.meta["variant_note"])
    assert "LSTM layer '/rnn/LSTM'" in out.meta["variant_note"]


def _single(op: str, direction: str, layout: int, seed: int, **extra: object) -> onnx.ModelProto:
    """One ONNX recurrent node with random weights, states as graph inputs: X, initial_h (and initial_c)."""
    rng = np.random.default_rng(seed)
    gates, hidden, feat, dirs = {"LSTM": 4, "GRU": 3, "RNN": 1}[op], 5, 3, 2 if direction == "bidirectional" else 1
    w = rng.standard_normal((dirs, gates * hidden, feat)).astype(np.float32) * 0.5
    r = rng.standard_normal((dirs, gates * hidden, hidden)).astype(np.float32) * 0.5
    b = rng.standard_normal((dirs, 2 * gates * hidden)).astype(np.float32) * 0.5
    attrs = {"hidden_size": hidden, "direction": direction, "layout": layout, **extra}
    if op == "GRU":
        attrs.setdefault("linear_before_reset", 1)
    states = ["h0", "c0"] if op == "LSTM" else ["h0"]
    node = helper.make_node(op, ["X", "W", "R", "B", "", *states], ["Y", "Yh"], name="rec0", **attrs)
    seq, batch = 6, 2
    x_shape = [batch, seq, feat] if layout else [seq, batch, feat]
    s_shape = [batch, dirs, hidden] if layout else [dirs, batch, hidden]
    y_shape = [batch, seq, dirs, hidden] if layout else [seq, dirs, batch, hidden]
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, x_shape),
         *[helper.make_tensor_value_info(s, TensorProto.FLOAT, s_shape) for s in states]],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, y_shape),
         helper.make_tensor_value_info("Yh", TensorProto.FLOAT, s_shape)],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(r, "R"), numpy_helper.from_array(b, "B")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], ir_version=8)


@pytest.mark.parametrize("op", RECURRENT)
@pytest.mark.parametrize(("direction", "layout"), [("forward", 0), ("reverse", 1), ("bidirectional", 0),
                                                   ("bidirectional", 1)])
def test_converted_recurrent_layer_matches_onnxruntime(op: str, direction: str, layout: int) -> None:
    """Gate order, directions and states as ONNX Runtime computes them (it runs only layout 0: a batch-first
    layer is compared with the same weights at layout 0 on transposed data)."""
    import onnxruntime as ort

    seq_first = _single(op, direction, 0, seed=len(op))
    rng = np.random.default_rng(1)
    feeds = {vi.name: rng.standard_normal([d.dim_value for d in vi.type.tensor_type.shape.dim]).astype(np.float32)
             for vi in seq_first.graph.input}
    sess = ort.InferenceSession(seq_first.SerializeToString(), providers=["CPUExecutionProvider"])
    want = sess.run(None, feeds)
    if layout:  # (seq, batch) → (batch, seq); states (dirs, batch) → (batch, dirs); Y (seq, dirs, batch) → (batch, seq, dirs)
        feeds = {k: np.ascontiguousarray(v.swapaxes(0, 1)) for k, v in feeds.items()}
        want = [want[0].transpose(2, 0, 1, 3), want[1].swapaxes(0, 1)]
    with torch.no_grad():
        got = to_torch(_single(op, direction, layout, seed=len(op)))(*[torch.from_numpy(v) for v in feeds.values()])
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g.numpy(), w, atol=1e-5)


@pytest.mark.parametrize(("op", "extra", "why"), [
    ("LSTM", {"clip": 1.0}, "clip"),
    ("LSTM", {"activations": ["Sigmoid", "Relu", "Tanh"]}, "activations Sigmoid, Relu, Tanh"),
    ("GRU", {"linear_before_reset": 0}, "linear_before_reset=0"),
    ("LSTM", {"input_forget": 1}, "input_forget=1"),
])
def test_recurrent_layer_torch_cannot_express_is_refused_naming_operator_and_layer(op: str, extra: dict,
                                                                                   why: str) -> None:
    model = _single(op, "forward", 0, seed=0, **extra)
    with pytest.raises(PassUnavailableError, match=rf"{op} layer 'rec0'.*{why}") as info:
        to_torch(model)
    assert "\n" not in str(info.value)
