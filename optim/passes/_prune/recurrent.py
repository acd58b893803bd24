"""ONNX ``LSTM`` / ``GRU`` / ``RNN`` → torch's ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` for the converter.

Structured pruning keeps a recurrent layer whole: its gates couple every hidden unit with four (LSTM) or three
(GRU) weight blocks and with the state inputs/outputs, which torch-pruning cannot follow through a converted
graph. So the layer is converted (weights reordered from ONNX's gate order to torch's), marked unsafe with
the channels it consumes, and exported back by torch's exporter as the same ONNX operator with the same
weights. The layers before it that do not feed its input channels, and the layers after it, are pruned as
usual. What cannot be mapped onto torch's layers (peepholes, ``clip``, ``input_forget``, custom activations,
``GRU`` with ``linear_before_reset=0``, a ``sequence_lens`` input, weights computed in the graph) is refused
in one sentence naming the operator and the layer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import onnx
import torch
from torch import nn

from optim.errors import PassUnavailableError
from optim.passes._prune.onnx2torch_ops import attrs

RECURRENT_OPS = frozenset({"LSTM", "GRU", "RNN"})
# ONNX gate blocks → torch's order: LSTM iofc → ifco (i, f, g, o); GRU zrh → rzn; RNN has one block
GATE_ORDER = {"LSTM": (0, 2, 3, 1), "GRU": (1, 0, 2), "RNN": (0,)}
DEFAULT_ACTIVATIONS = {"LSTM": ("Sigmoid", "Tanh", "Tanh"), "GRU": ("Sigmoid", "Tanh"), "RNN": ("Tanh",)}


def describe(node: onnx.NodeProto) -> str:
    """``LSTM layer '/rnn/LSTM'`` — how notes and refusals name a recurrent layer."""
    return f"{node.op_type} layer '{node.name or node.output[0]}'"


class Recurrent(nn.Module):
    """One ONNX recurrent node: ``forward(X, initial_h, initial_c)`` → ``(Y, Y_h[, Y_c])`` in ONNX layout."""

    def __init__(self, op: str, rnn: nn.RNNBase, layout: int, reverse: bool) -> None:
        super().__init__()
        self.op, self.rnn, self.layout, self.reverse = op, rnn, layout, reverse
        self.onnx_name = ""
        self.opaque = False  # while torch-pruning traces: hide the recurrence (see ``forward``)

    def forward(self, x: torch.Tensor, h0: torch.Tensor | None = None, c0: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, ...]:
        if not self.opaque:
            return self._run(x, h0, c0)
        # torch-pruning traces autograd graphs: torch's GRU/RNN decompose into ops it maps channels through
        # (and fails on), so it sees the outputs as one element-wise function of the inputs instead, and no
        # parameter of the layer (distillation still trains them: ``opaque`` is on only while pruning)
        with torch.no_grad():
            outs = self._run(*(None if t is None else t.detach() for t in (x, h0, c0)))
        live = [t.sum() for t in (x, h0, c0) if t is not None and t.requires_grad]
        return tuple(o + sum(live) * 0.0 for o in outs) if live else outs

    def _run(self, x: torch.Tensor, h0: torch.Tensor | None, c0: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        if self.layout:  # (B, T, I) and states (B, D, H) → torch's (T, B, I) and (D, B, H)
            x = x.transpose(0, 1)
            h0 = None if h0 is None else h0.transpose(0, 1)
            c0 = None if c0 is None else c0.transpose(0, 1)
        if self.reverse:
            x = torch.flip(x, [0])
        if self.op == "LSTM":
            if h0 is not None or c0 is not None:
                h0 = torch.zeros_like(c0) if h0 is None else h0
                c0 = torch.zeros_like(h0) if c0 is None else c0
                y, (hn, cn) = self.rnn(x, (h0.contiguous(), c0.contiguous()))
            else:
                y, (hn, cn) = self.rnn(x)
            states = [hn, cn]
        else:
            y, hn = self.rnn(x, None if h0 is None else h0.contiguous())
            states = [hn]
        if self.reverse:
            y = torch.flip(y, [0])
        steps, batch = y.shape[0], y.shape[1]
        dirs = 2 if self.rnn.bidirectional else 1
        y = y.reshape(steps, batch, dirs, self.rnn.hidden_size)
        if self.layout:
            return (y.permute(1, 0, 2, 3), *[s.transpose(0, 1) for s in states])
        return (y.permute(0, 2, 1, 3), *states)


def recurrent_layer(node: onnx.NodeProto, const: Callable[[str], torch.Tensor | None]) -> Recurrent:
    """Convert ``node`` (an ``RECURRENT_OPS`` node); refuse in one sentence naming it where torch cannot."""
    op = node.op_type
    at = attrs(node)
    ins = [*node.input, *[""] * (8 - len(node.input))]

    def refuse(why: str) -> PassUnavailableError:
        return PassUnavailableError(
            f"Structured pruning cannot keep {describe(node)} as it is: {why}. Use unstructured pruning or "
            "quantization for this model instead.")

    w, r = const(ins[1]), const(ins[2])
    b = const(ins[3]) if ins[3] else None
    if w is None or r is None or (ins[3] and b is None):
        raise refuse("its weights are computed in the graph, not stored")
    if ins[4]:
        raise refuse("it takes a sequence_lens input (padded batches), which torch's layers do not")
    if op == "LSTM" and ins[7]:
        peep = const(ins[7])
        if peep is None or bool(peep.abs().sum() > 0):
            raise refuse("it has peephole weights")
    direction = _text(at.get("direction", "forward"))
    dirs = 2 if direction == "bidirectional" else 1
    acts = tuple(_text(a) for a in at.get("activations", ())) or DEFAULT_ACTIVATIONS[op] * dirs
    expected = DEFAULT_ACTIVATIONS[op] * dirs
    relu_rnn = op == "RNN" and acts == ("Relu",) * dirs
    if acts != expected and not relu_rnn:
        raise refuse(f"its activations {', '.join(acts)} differ from torch's")
    if "clip" in at:
        raise refuse("it clips its cell state (clip attribute)")
    if at.get("input_forget", 0):
        raise refuse("it couples its input and forget gates (input_forget=1)")
    if op == "GRU" and not at.get("linear_before_reset", 0):
        raise refuse("it applies the reset gate before the linear transform (linear_before_reset=0)")
    hidden = int(at.get("hidden_size", r.shape[-1]))
    cls: Any = {"LSTM": nn.LSTM, "GRU": nn.GRU, "RNN": nn.RNN}[op]
    kw = {"nonlinearity": "relu" if relu_rnn else "tanh"} if op == "RNN" else {}
    rnn = cls(int(w.shape[-1]), hidden, bias=b is not None, bidirectional=dirs == 2, **kw)
    order = GATE_ORDER[op]
    for d in range(dirs):
        suffix = "_reverse" if d == 1 else ""
        getattr(rnn, f"weight_ih_l0{suffix}").data.copy_(_reorder(w[d].float(), order, hidden))
        getattr(rnn, f"weight_hh_l0{suffix}").data.copy_(_reorder(r[d].float(), order, hidden))
        if b is not None:
            n = len(order) * hidden
            getattr(rnn, f"bias_ih_l0{suffix}").data.copy_(_reorder(b[d, :n].float(), order, hidden))
            getattr(rnn, f"bias_hh_l0{suffix}").data.copy_(_reorder(b[d, n:].float(), order, hidden))
    layer = Recurrent(op, rnn.eval(), int(at.get("layout", 0)), direction == "reverse")
    layer.onnx_name = describe(node)
    return layer


def _reorder(t: torch.Tensor, order: tuple[int, ...], hidden: int) -> torch.Tensor:
    return torch.cat([t[k * hidden:(k + 1) * hidden] for k in order], dim=0)


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def state_inputs(node: onnx.NodeProto) -> list[str]:
    """The inputs a :class:`Recurrent` layer reads: X, initial_h, initial_c ("" where absent)."""
    ins = [*node.input, *[""] * (8 - len(node.input))]
    return [ins[0], ins[5], ins[6] if node.op_type == "LSTM" else ""]
