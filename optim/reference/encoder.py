"""A BERT-shaped transformer encoder in plain torch (random weights), for scale tests and benchmarks.

Layout follows BERT (Devlin et al. 2018): post-LayerNorm blocks of multi-head self-attention (separate
query/key/value projections, scaled dot-product, softmax) and a GELU MLP of 4× the width, then a tanh
pooler on the first token and a classifier. ``bert_base`` is BERT-base's shape (12 layers, hidden 768,
12 heads, MLP 3072: 85 M encoder parameters, ≈ 11 GMACs at 128 tokens); ``bert_tiny`` is a 2-layer,
hidden-64 twin for unit tests.

The graph takes the *embedded* sequence (``input``: batch × tokens × hidden, float32) rather than token
ids: the project's evaluation data is float arrays, and the embedding lookup is a gather that neither
pruning nor quantization changes. The attention is written out (Linear → reshape → transpose → MatMul →
Softmax → MatMul) so the exported ONNX looks like exported BERTs do (MatMul/Add/Reshape/Transpose/
Softmax/LayerNormalization/Erf).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class EncoderShape:
    layers: int
    hidden: int
    heads: int
    mlp: int
    tokens: int
    classes: int = 2


ENCODER_SHAPES: dict[str, EncoderShape] = {
    "bert_base": EncoderShape(layers=12, hidden=768, heads=12, mlp=3072, tokens=128),
    "bert_tiny": EncoderShape(layers=2, hidden=64, heads=4, mlp=256, tokens=16),
}


class SelfAttention(nn.Module):
    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, hidden // heads
        self.query, self.key, self.value = nn.Linear(hidden, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, hidden)

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        b, n, _ = t.shape
        return t.reshape(b, n, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self._split(self.query(x)), self._split(self.key(x)), self._split(self.value(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim)
        ctx = torch.matmul(torch.softmax(scores, dim=-1), v).transpose(1, 2)
        return self.out(ctx.reshape(x.shape[0], x.shape[1], -1))


class EncoderBlock(nn.Module):
    def __init__(self, hidden: int, heads: int, mlp: int) -> None:
        super().__init__()
        self.attention = SelfAttention(hidden, heads)
        self.norm1 = nn.LayerNorm(hidden, eps=1e-12)
        self.fc1, self.fc2 = nn.Linear(hidden, mlp), nn.Linear(mlp, hidden)
        self.norm2 = nn.LayerNorm(hidden, eps=1e-12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.attention(x))
        return self.norm2(x + self.fc2(nn.functional.gelu(self.fc1(x))))


class Encoder(nn.Module):
    def __init__(self, shape: EncoderShape) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*(EncoderBlock(shape.hidden, shape.heads, shape.mlp) for _ in range(shape.layers)))
        self.pooler = nn.Linear(shape.hidden, shape.hidden)
        self.classifier = nn.Linear(shape.hidden, shape.classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.blocks(x)
        return self.classifier(torch.tanh(self.pooler(y[:, 0])))


def build_encoder(name: str, seed: int = 0) -> nn.Module:
    """The torch module for an encoder shape of :data:`ENCODER_SHAPES` (eval mode; weights N(0, 0.02) as BERT)."""
    shape = ENCODER_SHAPES[name]
    torch.manual_seed(seed)
    module = Encoder(shape)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * 0.02)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.02)
    return module.eval()


def example_shape(name: str, batch: int = 1) -> tuple[int, int, int]:
    s = ENCODER_SHAPES[name]
    return batch, s.tokens, s.hidden
