"""Measurement: ONNX Runtime sessions, predictions, accuracy with intervals, fidelity, latency, node profile.

Every number the dashboard shows as "measured" comes from here. Settings that change the numbers
(thread counts, graph-optimisation level, batch, runs) are explicit parameters and are recorded in the
returned dataclasses, so a page can always print how a number was obtained.

Why this is hand-written: ONNX Runtime gives a session, a run call and a Chrome-trace profile, but no
library on this stack turns those into the quantities we need (Wilson intervals for top-1/top-5,
fidelity between two models' logits, a time-budgeted latency loop with median/p90, a per-node table
reconciled with the whole-run time). ``onnxruntime.transformers``' benchmark helpers target NLP models
and average over runs; scikit-learn has accuracy but no intervals.

Profile names: with ``opt_level="disable"`` ONNX Runtime runs the graph as written, so the profiled node
names are exactly the ONNX node names (``/layer1/conv1/Conv``) and time maps one-to-one onto layers.
With "basic"/"extended"/"all" nodes get fused and renamed (``..._nchwc``, ``ReorderOutput``); such a
profile shows what fusion did but no longer maps onto the original graph node by node.

Measurement stability (see STACK_NOTES.md and ``benchmarks/measurement_stability.py``): with one intra-op
thread successive medians agree within a few per cent; with two threads on a shared two-core machine they
can differ by ±50 %. Latency therefore defaults to one thread.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from optim.errors import ShapeMismatchError
from optim.measure.budget import batch_for, sample_bytes
from optim.measure.session import (  # noqa: F401  (re-exported: callers configure sessions here)
    OPT_LEVELS,
    ModelLike,
    fixed_batch,
    graph_inputs,
    is_symbolic,
    make_session,
    model_bytes,
    model_proto,
    np_dtype,
    other_inputs,
)
from optim.measure.timing import Latency, NodeProfile, latency, profile_nodes  # noqa: F401


def _check_x(x: np.ndarray, shape: list[Any], name: str) -> None:
    want = tuple(shape[1:])
    got = tuple(x.shape[1:])
    ok = len(want) == len(got) and all(is_symbolic(w) or w == g for w, g in zip(want, got, strict=False))
    if not ok:
        raise ShapeMismatchError(
            f"Data samples have shape {got} but model input '{name}' expects {tuple(shape)} "
            f"(first dim = batch); reshape or resize the data to match."
        )


def predict(
    handle: ModelLike, x: np.ndarray, batch_size: int | None = None, threads: int = 2, opt_level: str = "all",
    session: Any = None,
) -> np.ndarray:
    """Run the model's first input over ``x`` and return its first output stacked over samples (N × ...).

    Evaluates ``batch_size`` samples per call when the model's batch dim is symbolic (default: as many as
    fit :data:`optim.measure.budget.EVAL_BYTES` of inputs, activations and outputs, at most 64); when the
    model fixes the batch (usually to 1) it is fed exactly that many samples per call (the last chunk
    zero-padded). Any further model inputs are synthesised with ``optim.io.load.synthesize_inputs``.
    ``opt_level`` matters for accuracy too: e.g. fused U8S8 int8 kernels saturate on CPUs without VNNI.
    ``session``: an open session of this model to reuse (``threads``/``opt_level`` are then its own).
    """
    sess = session if session is not None else make_session(handle, threads=threads, opt_level=opt_level)
    first = sess.get_inputs()[0]
    model = model_proto(handle)
    x = np.asarray(x)
    _check_x(x, first.shape, first.name)
    x = x.astype(np_dtype(first.type), copy=False)
    fixed = fixed_batch(model, first.shape[0])
    step = fixed or (max(1, int(batch_size)) if batch_size else 1)
    extras: dict[int, dict[str, np.ndarray]] = {}
    outs: list[np.ndarray] = []
    start = 0
    while start < len(x):
        chunk = x[start : start + step]
        n = len(chunk)
        if fixed is not None and n < fixed:
            pad = np.zeros((fixed - n, *chunk.shape[1:]), dtype=chunk.dtype)
            chunk = np.concatenate([chunk, pad])
        b = len(chunk)
        if b not in extras:
            extras[b] = other_inputs(model, b, first.name)
        out = sess.run([sess.get_outputs()[0].name], {first.name: chunk, **extras[b]})[0]
        outs.append(np.asarray(out)[:n])
        start += n
        if start == n and fixed is None and not batch_size:  # first call: one sample, now size the rest
            step = batch_for(sample_bytes(x), sample_bytes(outs[0]))
    if not outs:
        return np.zeros((0,), dtype=np.float32)
    return np.concatenate(outs)


# --- accuracy and fidelity -----------------------------------------------------------------------
def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for ``k`` successes in ``n`` trials (default 95 %); (0, 1) when n == 0."""
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = k / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return lo, hi


@dataclass(frozen=True)
class Accuracy:
    """Top-1 (and top-5 when there are ≥ 5 classes) as fractions with 95 % Wilson intervals."""

    top1: float
    top1_lo: float
    top1_hi: float
    top5: float | None
    top5_lo: float | None
    top5_hi: float | None
    n: int


def _as_rows(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return a.reshape(len(a), -1) if a.ndim != 2 else a


def accuracy(logits: np.ndarray, y: np.ndarray) -> Accuracy:
    """Top-1/top-5 accuracy of ``logits`` (N × classes) against integer labels ``y`` (N,)."""
    scores = _as_rows(logits)
    y = np.asarray(y).astype(np.int64).reshape(-1)
    if len(scores) != len(y):
        raise ShapeMismatchError(f"{len(scores)} predictions but {len(y)} labels; use the matching label set.")
    n = len(y)
    k1 = int(np.sum(np.argmax(scores, axis=1) == y)) if n else 0
    lo1, hi1 = wilson_interval(k1, n)
    top5 = lo5 = hi5 = None
    if scores.shape[1] >= 5 and n:
        top = np.argpartition(-scores, 4, axis=1)[:, :5]
        k5 = int(np.sum(np.any(top == y[:, None], axis=1)))
        top5 = k5 / n
        lo5, hi5 = wilson_interval(k5, n)
    return Accuracy(k1 / n if n else 0.0, lo1, hi1, top5, lo5, hi5, n)


@dataclass(frozen=True)
class Fidelity:
    """How closely a variant's outputs follow the reference's (no labels needed)."""

    top1_agreement: float
    cosine: float
    rel_error: float
    cosine_lo: float | None = None  # 95 % bootstrap interval of the mean row cosine
    cosine_hi: float | None = None


def fidelity(ref_logits: np.ndarray, logits: np.ndarray) -> Fidelity:
    """Top-1 agreement, mean row cosine similarity and relative error ||ref − x|| / ||ref||."""
    a, b = _as_rows(ref_logits), _as_rows(logits)
    if a.shape != b.shape:
        raise ShapeMismatchError(f"Reference outputs {a.shape} and variant outputs {b.shape} differ in shape.")
    if len(a) == 0:
        return Fidelity(1.0, 1.0, 0.0)
    agree = float(np.mean(np.argmax(a, axis=1) == np.argmax(b, axis=1)))
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    dots = np.sum(a * b, axis=1)
    both_zero = (na == 0) & (nb == 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = np.where(both_zero, 1.0, np.where((na == 0) | (nb == 0), 0.0, dots / (na * nb)))
    ref_norm = float(np.linalg.norm(a))
    diff = float(np.linalg.norm(a - b))
    rel = diff / ref_norm if ref_norm > 0 else (0.0 if diff == 0 else math.inf)
    cos = np.clip(cos, -1.0, 1.0)
    lo, hi = bootstrap_mean_interval(cos)
    return Fidelity(agree, float(np.mean(cos)), rel, lo, hi)


def bootstrap_mean_interval(values: np.ndarray, resamples: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95 % percentile-bootstrap interval of the mean of ``values`` (seeded: the same inputs give the same
    interval); the cosine has no closed-form interval like Wilson's for counts."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size < 2:
        m = float(v.mean()) if v.size else 1.0
        return m, m
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for start in range(0, resamples, 100):  # 100 resamples at a time bounds the index array
        n = min(100, resamples - start)
        means[start:start + n] = v[rng.integers(0, v.size, size=(n, v.size))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


@dataclass(frozen=True)
class Evaluation:
    accuracy: Accuracy | None
    fidelity: Fidelity | None
    logits: np.ndarray


def evaluate(
    handle: ModelLike, dataset: Any, reference_logits: np.ndarray | None = None, opt_level: str = "all"
) -> Evaluation:
    """Predict ``dataset.x``; accuracy when the dataset has labels, fidelity when a reference is given."""
    logits = predict(handle, dataset.x, opt_level=opt_level)
    acc = accuracy(logits, dataset.y) if getattr(dataset, "y", None) is not None else None
    fid = fidelity(reference_logits, logits) if reference_logits is not None else None
    return Evaluation(acc, fid, logits)


# latency and per-node profiling live in a sibling file to keep this one short; re-exported here.

__all__ = [
    "OPT_LEVELS", "Accuracy", "Evaluation", "Fidelity", "Latency", "NodeProfile", "accuracy", "evaluate",
    "bootstrap_mean_interval", "fidelity", "latency", "make_session", "predict", "profile_nodes", "wilson_interval",
]
