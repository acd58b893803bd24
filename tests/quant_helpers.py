"""Helpers shared by the quantization / pruning / graph-optimisation tests (models with real weight mass)."""

from __future__ import annotations

import numpy as np
import ort_runner
import torch

from optim.handle import ModelHandle
from optim.io.export import torch_to_onnx

try:  # the project's Dataset; a stand-in with the same fields keeps these tests independent of it
    from optim.io.data import Dataset
except ImportError:  # pragma: no cover
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Dataset:  # type: ignore[no-redef]
        x: np.ndarray
        y: np.ndarray | None
        name: str
        class_names: list[str] | None = None


class WideCNN(torch.nn.Module):
    """Conv-BN-ReLU ×3 + linear, ~240 k parameters: enough weight mass for size ratios to mean something."""

    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.BatchNorm2d(32), torch.nn.ReLU(),
            torch.nn.Conv2d(32, 64, 3, stride=2, padding=1), torch.nn.BatchNorm2d(64), torch.nn.ReLU(),
            torch.nn.Conv2d(64, 128, 3, padding=1), torch.nn.BatchNorm2d(128), torch.nn.ReLU(),
            torch.nn.Conv2d(128, 128, 3, padding=1), torch.nn.BatchNorm2d(128), torch.nn.ReLU(),
        )
        self.fc = torch.nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean((2, 3)))


def wide_cnn(dynamic_batch: bool = True) -> ModelHandle:
    torch.manual_seed(3)
    proto = torch_to_onnx(WideCNN().eval(), [torch.randn(1, 3, 16, 16)], dynamic_batch=dynamic_batch)
    return ModelHandle(model=proto, name="wide_cnn")


def wide_mlp() -> ModelHandle:
    torch.manual_seed(4)
    net = torch.nn.Sequential(
        torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10)
    ).eval()
    return ModelHandle(model=torch_to_onnx(net, [torch.randn(1, 64)], dynamic_batch=True), name="wide_mlp")


class ConvTokens(torch.nn.Module):
    """A conv stem whose pixels become tokens for two linear layers on 3-D tensors (exported as MatMul): a mixed
    Conv + MatMul graph, MatMul/Gemm ≈ 0.4 of the MACs (a hybrid CNN/transformer in miniature)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 64, 3, padding=1)
        self.mix = torch.nn.Linear(64, 16)
        self.out = torch.nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = torch.relu(self.stem(x)).flatten(2).transpose(1, 2)  # (batch, 256, 64)
        return self.out(torch.relu(self.mix(tokens)).mean(1))


def conv_tokens() -> ModelHandle:
    torch.manual_seed(5)
    proto = torch_to_onnx(ConvTokens().eval(), [torch.randn(1, 3, 16, 16)], dynamic_batch=True)
    return ModelHandle(model=proto, name="conv_tokens")


def dataset(x: np.ndarray) -> Dataset:
    return Dataset(x=x.astype(np.float32), y=None, name="calib")


def run_model(handle: ModelHandle, x: np.ndarray) -> np.ndarray:
    """Logits for ``x``, fed one sample at a time when the model fixes batch 1."""
    sess = ort_runner.session(handle)
    inp = sess.get_inputs()[0]
    if isinstance(inp.shape[0], int) and inp.shape[0] == 1:
        return np.concatenate([sess.run(None, {inp.name: x[i : i + 1]})[0] for i in range(len(x))])
    return sess.run(None, {inp.name: x})[0]


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float((a.argmax(1) == b.argmax(1)).mean())


def damaged(handle: ModelHandle, scale: float, seed: int = 0) -> ModelHandle:
    """The same graph with multiplicative noise on every weight tensor (a student to distil)."""
    from onnx import numpy_helper

    rng = np.random.default_rng(seed)
    model = handle.copy_model()
    for i, init in enumerate(model.graph.initializer):
        w = numpy_helper.to_array(init)
        if w.dtype == np.float32 and w.ndim >= 2:
            noisy = w * (1 + scale * rng.standard_normal(w.shape)).astype(np.float32)
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(noisy, init.name))
    return handle.derive(model, "damage")
