"""Shared fixtures: tiny models built in code (fast) so unit tests never depend on sample training."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

# A host estimate in a test must never start the ~60 s background calibration of this CPU by itself
# (tests that exercise the job start it explicitly, with a tiny configuration).
os.environ.setdefault("OPTIM_HOST_CALIBRATION", "off")

from optim.handle import ModelHandle
from optim.io.export import torch_to_onnx


class TinyCNN(torch.nn.Module):
    """Conv-BN-ReLU, a residual add, a depthwise conv, global pool, linear: the couplings pruning must respect."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(16)
        self.conv2 = torch.nn.Conv2d(16, 16, 3, padding=1)
        self.dw = torch.nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.pw = torch.nn.Conv2d(16, 32, 1)
        self.fc = torch.nn.Linear(32, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = y + torch.relu(self.conv2(y))
        y = torch.relu(self.pw(self.dw(y)))
        return self.fc(y.mean((2, 3)))


class TinyMLP(torch.nn.Module):
    def __init__(self, features: int = 12, classes: int = 4) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(features, 32), torch.nn.ReLU(), torch.nn.Linear(32, 32), torch.nn.ReLU(),
            torch.nn.Linear(32, classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TinyText(torch.nn.Module):
    """BERT-shaped inputs: int64 ``input_ids`` into an Embedding, an int64 ``attention_mask`` that zeroes padded
    tokens before a masked sum (so activations and outputs depend on the mask), two linear layers."""

    VOCAB, SEQ = 20, 6

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(self.VOCAB, 8)
        self.fc1 = torch.nn.Linear(8, 16)
        self.fc2 = torch.nn.Linear(16, classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        pooled = (self.emb(input_ids) * attention_mask.unsqueeze(-1).to(torch.float32)).sum(1)
        return self.fc2(torch.relu(self.fc1(pooled)))


def _text_tokens(n: int, seed: int = 0, pad_from: int | None = None) -> dict[str, np.ndarray]:
    """``n`` rows of token ids below TinyText.VOCAB and a mask of ones (zeros from position ``pad_from`` on)."""
    rng = np.random.default_rng(seed)
    mask = np.ones((n, TinyText.SEQ), np.int64)
    if pad_from is not None:
        mask[:, pad_from:] = 0
    return {"input_ids": rng.integers(0, TinyText.VOCAB, (n, TinyText.SEQ)).astype(np.int64), "attention_mask": mask}


@pytest.fixture(scope="session")
def text_tokens():
    """``text_tokens(n, seed=0, pad_from=None)``: TinyText's inputs by name (see ``_text_tokens``)."""
    return _text_tokens


@pytest.fixture(scope="session")
def tiny_text() -> ModelHandle:
    """ONNX handle of TinyText: inputs 'input_ids', 'attention_mask' (batch, 6) int64, output 'logits' (batch, 3)."""
    torch.manual_seed(5)
    ex = {k: torch.from_numpy(v) for k, v in _text_tokens(1).items()}
    proto = torch_to_onnx(TinyText().eval(), [ex["input_ids"], ex["attention_mask"]],
                          input_names=("input_ids", "attention_mask"), dynamic_batch=True)
    return ModelHandle(model=proto, name="tiny_text", source_format="onnx")


@pytest.fixture(scope="session")
def tiny_scalar() -> ModelHandle:
    """logits = (x @ W) * sr / 16000: inputs x float [batch, 4] and sr, an int64 scalar (a sample rate)."""
    w = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Cast", ["sr"], ["s"], to=1),
             helper.make_node("Div", ["s", "ref"], ["k"]), helper.make_node("Mul", ["h", "k"], ["logits"])]
    graph = helper.make_graph(nodes, "scaled",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4]),
                               helper.make_tensor_value_info("sr", TensorProto.INT64, [])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.float32(16000), "ref")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return ModelHandle(model, "tiny_scalar")


def _randomise_bn(module: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)


@pytest.fixture(scope="session")
def tiny_cnn_module() -> torch.nn.Module:
    torch.manual_seed(0)
    m = TinyCNN().eval()
    _randomise_bn(m, 0)
    return m


@pytest.fixture(scope="session")
def tiny_cnn(tiny_cnn_module: torch.nn.Module) -> ModelHandle:
    """ONNX handle of TinyCNN, input 'input' (1, 3, 16, 16), output 'logits' (1, 10)."""
    proto = torch_to_onnx(tiny_cnn_module, [torch.randn(1, 3, 16, 16)])
    return ModelHandle(model=proto, name="tiny_cnn", source_format="onnx")


@pytest.fixture(scope="session")
def tiny_mlp() -> ModelHandle:
    """ONNX handle of TinyMLP, input 'input' (1, 12), output 'logits' (1, 4)."""
    torch.manual_seed(1)
    proto = torch_to_onnx(TinyMLP().eval(), [torch.randn(1, 12)])
    return ModelHandle(model=proto, name="tiny_mlp", source_format="onnx")


@pytest.fixture(scope="session")
def tiny_images() -> tuple[np.ndarray, np.ndarray]:
    """(x, y): 200 random images (200, 3, 16, 16) float32 and labels in 0..9."""
    rng = np.random.default_rng(0)
    return rng.standard_normal((200, 3, 16, 16)).astype(np.float32), rng.integers(0, 10, 200)


@pytest.fixture
def store(tmp_path):
    """The results store of one test: it lives in the test's own tmp dir and goes with it (a reopened
    ``Store(tmp_path)`` sees the same rows)."""
    from optim.sweep.store import Store

    return Store(tmp_path)
