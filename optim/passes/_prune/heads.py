"""Attention-head pruning on a converted ONNX graph (``onnx2torch.OnnxModule``).

Why our own code: torch-pruning finds heads only on ``nn.MultiheadAttention`` or on modules that
carry ``num_heads``; a converted ONNX graph has neither — heads exist only as constants in Reshape
nodes. Here an attention block is recognised structurally: a projection Linear fed (through
Transpose/Reshape) by ``MatMul(softmax(scores), V)``, where ``scores = MatMul(Q, Kᵀ)`` and Q, K, V
come (through Reshape/Transpose/Split/Gather) from Linear layers — either three separate ones or one
fused ``qkv`` layer laid out as (3, heads, head_dim). Removing head ``h`` deletes its rows from Q, K
and V and its columns from the projection, and rewrites the reference shapes of the Reshapes
involved so that ``heads`` becomes ``heads'``.

Safety: the result is checked numerically. Removing a head is exactly equivalent to zeroing that
head's V rows in the unpruned model (its attention output becomes zero, so it adds nothing through
the projection); if the pruned module does not reproduce that masked model, nothing is changed.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from optim.passes._prune.onnx2torch import OnnxModule

_THROUGH = {"Transpose", "Reshape", "Identity", "Cast", "Split", "Gather", "Squeeze", "Unsqueeze", "Slice"}
_SCORE_OPS = {"Softmax", "Mul", "Div", "Add", "Sub", "Where", "Cast", "Identity", "Transpose"}


@dataclass
class _Block:
    q: str
    k: str
    v: str
    proj: str
    heads: int
    head_dim: int
    reshapes_split: list[int]
    reshapes_merge: list[int]


def _producers(m: OnnxModule) -> dict[str, int]:
    return {o: i for i, (_, _, _, outs) in enumerate(m.steps) for o in outs}


def _walk(m: OnnxModule, prod: dict[str, int], name: str, through: set[str],
          reshapes: list[int]) -> int | None:
    """Follow ``name`` upstream through ``through`` ops (first data input); return the step index reached."""
    seen = 0
    while name in prod and seen < 32:
        i = prod[name]
        kind, node, ins, _ = m.steps[i]
        if kind.startswith("layer:") or node.op_type not in through:
            return i
        if node.op_type == "Reshape":
            reshapes.append(i)
        name, seen = ins[0], seen + 1
    return None


def _layer(m: OnnxModule, i: int | None) -> str | None:
    if i is None or not m.steps[i][0].startswith("layer:"):
        return None
    key = m.steps[i][0][6:]
    return key if isinstance(m.layers[key], nn.Linear) else None


def _find_block(m: OnnxModule, prod: dict[str, int], i: int) -> _Block | None:
    proj = _layer(m, i)
    merge: list[int] = []
    j = _walk(m, prod, m.steps[i][2][0], {"Transpose", "Reshape", "Identity"}, merge)
    if proj is None or j is None or m.steps[j][0] != "op" or m.steps[j][1].op_type != "MatMul" or len(merge) != 1:
        return None
    ref = m._ref_shapes.get(merge[0])
    if ref is None or len(ref[0]) < 2 or ref[0][-2] * ref[0][-1] != ref[1][-1]:
        return None
    heads, head_dim = ref[0][-2], ref[0][-1]
    split: list[int] = []
    v = _layer(m, _walk(m, prod, m.steps[j][2][1], _THROUGH, split))
    s = _walk(m, prod, m.steps[j][2][0], _SCORE_OPS, [])
    if v is None or s is None or m.steps[s][0] != "op" or m.steps[s][1].op_type != "MatMul":
        return None
    q = _layer(m, _walk(m, prod, m.steps[s][2][0], _THROUGH, split))
    k = _layer(m, _walk(m, prod, m.steps[s][2][1], _THROUGH, split))
    if q is None or k is None or heads < 2:
        return None
    return _Block(q, k, v, proj, heads, head_dim, sorted(set(split)), merge)


def find_attention_blocks(m: OnnxModule) -> list[_Block]:
    prod = _producers(m)
    out = []
    for i, (kind, _, _, _) in enumerate(m.steps):
        block = _find_block(m, prod, i) if kind.startswith("layer:") else None
        if block is not None:
            out.append(block)
    return out


def _rows(b: _Block, width: int, heads: list[int]) -> list[int]:
    """Output rows of a Q/K/V layer (``width`` outputs) that belong to ``heads``."""
    d = b.heads * b.head_dim
    parts = width // d  # 1 for separate q/k/v layers, 3 for a fused qkv layer
    return [p * d + h * b.head_dim + r for p in range(parts) for h in heads for r in range(b.head_dim)]


def _head_scores(m: OnnxModule, b: _Block, importance: str, rng: np.random.Generator) -> np.ndarray:
    if importance == "random":
        return rng.random(b.heads)
    p = 1 if importance == "l1" else 2
    score = np.zeros(b.heads)
    for h in range(b.heads):
        for name in {b.q, b.k, b.v}:
            w = m.layers[name].weight.detach()
            score[h] += float(w[_rows(b, w.shape[0], [h])].abs().pow(p).sum())
        cols = list(range(h * b.head_dim, (h + 1) * b.head_dim))
        score[h] += float(m.layers[b.proj].weight.detach()[:, cols].abs().pow(p).sum())
    return score


def _select_rows(layer: nn.Linear, keep: list[int]) -> None:
    layer.weight = nn.Parameter(layer.weight.detach()[keep].clone())
    if layer.bias is not None:
        layer.bias = nn.Parameter(layer.bias.detach()[keep].clone())
    layer.out_features = len(keep)


def _rescale_refs(m: OnnxModule, b: _Block, new_heads: int) -> None:
    def fix(shape: tuple[int, ...], split_side: bool) -> tuple[int, ...]:
        s = list(shape)
        if split_side:  # (..., heads, head_dim) somewhere: the heads dim sits right before head_dim
            pos = max(p for p in range(len(s) - 1) if s[p] == b.heads and s[p + 1] == b.head_dim)
            s[pos] = new_heads
        else:  # flattened feature dim last
            s[-1] = s[-1] // b.heads * new_heads
        return tuple(s)

    for idx in b.reshapes_split:
        ref_in, ref_out = m._ref_shapes[idx]
        m._ref_shapes[idx] = (fix(ref_in, False), fix(ref_out, True))
    for idx in b.reshapes_merge:
        ref_in, ref_out = m._ref_shapes[idx]
        m._ref_shapes[idx] = (fix(ref_in, True), fix(ref_out, False))


def _apply(m: OnnxModule, b: _Block, drop: list[int], removed: dict[str, set[int]]) -> None:
    for name in dict.fromkeys([b.q, b.k, b.v]):
        layer = m.layers[name]
        gone = set(_rows(b, layer.out_features, drop))
        removed[f"layers.{name}"] = gone
        _select_rows(layer, [r for r in range(layer.out_features) if r not in gone])
    proj = m.layers[b.proj]
    cols = [c for c in range(proj.in_features) if c // b.head_dim not in drop]
    proj.weight = nn.Parameter(proj.weight.detach()[:, cols].clone())
    proj.in_features = len(cols)
    _rescale_refs(m, b, b.heads - len(drop))


def _mask_v(m: OnnxModule, b: _Block, drop: list[int]) -> None:
    layer = m.layers[b.v]
    d = b.heads * b.head_dim
    rows = [r for r in _rows(b, layer.out_features, drop) if layer.out_features == d or r >= 2 * d]
    with torch.no_grad():
        layer.weight[rows] = 0.0
        if layer.bias is not None:
            layer.bias[rows] = 0.0


def prune_heads(m: OnnxModule, ratio: float, importance: str, x: list[torch.Tensor], seed: int = 0
                ) -> tuple[OnnxModule, dict[str, set[int]], int]:
    """Remove ``round(heads × ratio)`` heads per attention block (at least one head stays).

    Returns (module to use, removed output rows per layer name, heads removed). The module is the
    input module edited in place when the numerical check passes, else an untouched copy of it.
    """
    blocks = find_attention_blocks(m)
    plan = []
    rng = np.random.default_rng(seed)
    for b in blocks:
        n = min(b.heads - 1, int(round(b.heads * ratio)))
        if n > 0:
            plan.append((b, sorted(np.argsort(_head_scores(m, b, importance, rng))[:n].tolist())))
    if not plan:
        return m, {}, 0
    backup, masked = copy.deepcopy(m), copy.deepcopy(m)
    for b, drop in plan:
        _mask_v(masked, b, drop)
    removed: dict[str, set[int]] = {}
    try:
        for b, drop in plan:
            _apply(m, b, drop, removed)
        with torch.no_grad():
            want, got = masked(*x), m(*x)
        ok = torch.allclose(got, want, atol=1e-4, rtol=1e-3)
    except (RuntimeError, ValueError, IndexError):
        ok = False
    if not ok:
        return backup, {}, 0
    return m, removed, sum(len(drop) for _, drop in plan)
