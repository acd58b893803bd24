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
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from optim.errors import ShapeMismatchError
from optim.measure.budget import batch_for, sample_bytes
from optim.measure.fidelity import (  # noqa: F401  (re-exported: fidelity lived here)
    Fidelity,
    as_rows,
    bootstrap_mean_interval,
    fidelity,
    output_fidelity,
    output_kinds,
)
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


Feeds = Mapping[str, np.ndarray]


def predict(
    handle: ModelLike, x: np.ndarray, batch_size: int | None = None, threads: int = 2, opt_level: str = "all",
    session: Any = None, feeds: Feeds | None = None, constants: Feeds | None = None,
) -> np.ndarray:
    """Run the model's first input over ``x`` and return its first output stacked over samples (N × ...).

    Evaluates ``batch_size`` samples per call when the model's batch dim is symbolic (default: as many as
    fit :data:`optim.measure.budget.EVAL_BYTES` of inputs, activations and outputs, at most 64); when the
    model fixes the batch (usually to 1) it is fed exactly that many samples per call (the last chunk
    zero-padded). ``feeds``: arrays for further inputs by name (N samples each, sliced like ``x``); any input
    in neither is synthesised with ``optim.io.load.synthesize_inputs``. ``constants``: values of inputs without a
    sample axis (a 0-d sample rate), fed whole in every call.
    ``opt_level`` matters for accuracy too: e.g. fused U8S8 int8 kernels saturate on CPUs without VNNI.
    ``session``: an open session of this model to reuse (``threads``/``opt_level`` are then its own).
    """
    sess = session if session is not None else make_session(handle, threads=threads, opt_level=opt_level)
    out = _run_batches(sess, model_proto(handle), x, batch_size, feeds, [sess.get_outputs()[0].name], strict=True,
                       constants=constants)
    return next(iter(out.values()))


def predict_outputs(
    handle: ModelLike, x: np.ndarray, batch_size: int | None = None, threads: int = 2, opt_level: str = "all",
    session: Any = None, feeds: Feeds | None = None, constants: Feeds | None = None,
) -> dict[str, np.ndarray]:
    """Every per-sample output (leading dim = the batch fed, the same other dims in every call) stacked over
    samples, by name in graph order; outputs without a sample axis (a scalar, detections of a whole batch) are
    left out. Arguments as :func:`predict`."""
    sess = session if session is not None else make_session(handle, threads=threads, opt_level=opt_level)
    names = [o.name for o in sess.get_outputs()]
    return _run_batches(sess, model_proto(handle), x, batch_size, feeds, names, strict=False, constants=constants)


def _run_batches(sess: Any, model: Any, x: np.ndarray, batch_size: int | None, feeds: Feeds | None,
                 names: list[str], strict: bool, constants: Feeds | None = None) -> dict[str, np.ndarray]:
    inputs = {i.name: i for i in sess.get_inputs()}
    first = sess.get_inputs()[0]
    x = np.asarray(x)
    _check_x(x, first.shape, first.name)
    given = {first.name: x.astype(np_dtype(first.type), copy=False)}
    for name, arr in (feeds or {}).items():
        if name not in inputs or name == first.name:
            raise ShapeMismatchError(f"Data array {name!r} names no further input of the model (inputs: "
                                     f"{', '.join(inputs)}); rename it to one of them or drop it.")
        if len(arr) != len(x):
            raise ShapeMismatchError(f"Data array {name!r} has {len(arr)} samples but {first.name!r} has {len(x)}; "
                                     "every input array needs one row per sample.")
        given[name] = np.asarray(arr).astype(np_dtype(inputs[name].type), copy=False)
    whole = {}
    for name, arr in (constants or {}).items():
        if name not in inputs or name in given:
            raise ShapeMismatchError(f"Data value {name!r} names no further input of the model (inputs: "
                                     f"{', '.join(inputs)}); rename it to one of them or drop it.")
        whole[name] = np.asarray(arr).astype(np_dtype(inputs[name].type), copy=False)
    fixed = fixed_batch(model, first.shape[0])
    step = fixed or (max(1, int(batch_size)) if batch_size else 1)
    extras: dict[int, dict[str, np.ndarray]] = {}
    outs: dict[str, list[np.ndarray]] = {n: [] for n in names}
    start = 0
    while start < len(x):
        chunk = {k: v[start : start + step] for k, v in given.items()}
        n = len(chunk[first.name])
        if fixed is not None and n < fixed:
            chunk = {k: np.concatenate([v, np.zeros((fixed - n, *v.shape[1:]), v.dtype)]) for k, v in chunk.items()}
        b = len(chunk[first.name])
        if b not in extras:
            extras[b] = {k: v for k, v in other_inputs(model, b, first.name).items() if k not in given and k not in whole}
            extras[b].update(whole)
        got = sess.run(names, {**chunk, **extras[b]})
        for name, value in zip(names, got, strict=True):
            if name not in outs:
                continue
            arr = np.asarray(value)
            if not strict and (arr.ndim == 0 or arr.shape[0] != b or (outs[name] and
                                                                      outs[name][0].shape[1:] != arr.shape[1:])):
                del outs[name]  # not one row per sample: nothing to compare sample by sample
                continue
            outs[name].append(arr[:n])
        start += n
        if start == n and fixed is None and not batch_size:  # first call: one sample, now size the rest
            step = batch_for(sum(sample_bytes(v) for v in given.values()),
                             sum(sample_bytes(v[0]) for v in outs.values() if v))
    if not len(x):
        return {n: np.zeros((0,), dtype=np.float32) for n in names[:1]} if strict else {}
    return {k: np.concatenate(v) for k, v in outs.items()}


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


def accuracy(logits: np.ndarray, y: np.ndarray) -> Accuracy:
    """Top-1/top-5 accuracy of ``logits`` (N × classes) against integer labels ``y`` (N,)."""
    scores = as_rows(logits)
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
class Evaluation:
    accuracy: Accuracy | None
    fidelity: Fidelity | None
    logits: np.ndarray
    outputs: dict[str, np.ndarray] | None = None  # every per-sample output, when fidelity covered them all


def evaluate(
    handle: ModelLike, dataset: Any, reference_logits: np.ndarray | Feeds | None = None, opt_level: str = "all",
    known: Feeds | None = None,
) -> Evaluation:
    """Predict ``dataset.x`` (and its further named inputs, ``dataset.feeds``); accuracy of the first output
    when the dataset has labels; fidelity when a reference is given: of the first output for an array, of
    every output (:func:`optim.measure.fidelity.output_fidelity`) for the original's outputs by name.
    ``known``: this model's outputs on ``dataset`` by name, already computed at ``opt_level`` (a sweep's baseline
    is its own reference): used instead of predicting them again."""
    feeds, consts = getattr(dataset, "feeds", None), getattr(dataset, "constants", None)
    outputs = None
    first_out = model_proto(handle).graph.output[0].name if known else None
    if isinstance(reference_logits, Mapping) and known and first_out in known:
        outputs = dict(known)
        logits = outputs[first_out]
        kinds = getattr(reference_logits, "kinds", None) or output_kinds(model_proto(handle))
        fid = output_fidelity(reference_logits, outputs, kinds)
    elif isinstance(reference_logits, Mapping):
        sess = make_session(handle, threads=2, opt_level=opt_level)
        outputs = predict_outputs(handle, dataset.x, session=sess, feeds=feeds, constants=consts)
        first = sess.get_outputs()[0].name
        logits = outputs[first] if first in outputs else predict(handle, dataset.x, session=sess, feeds=feeds,
                                                                 constants=consts)
        kinds = getattr(reference_logits, "kinds", None) or output_kinds(model_proto(handle))  # the original's
        fid = output_fidelity(reference_logits, outputs, kinds)
    else:
        logits = predict(handle, dataset.x, opt_level=opt_level, feeds=feeds, constants=consts)
        fid = fidelity(reference_logits, logits) if reference_logits is not None else None
    acc = accuracy(logits, dataset.y) if getattr(dataset, "y", None) is not None else None
    return Evaluation(acc, fid, logits, outputs)


# latency and per-node profiling live in a sibling file to keep this one short; re-exported here.

__all__ = [
    "OPT_LEVELS", "Accuracy", "Evaluation", "Fidelity", "Latency", "NodeProfile", "accuracy", "evaluate",
    "bootstrap_mean_interval", "fidelity", "latency", "make_session", "output_fidelity", "output_kinds", "predict",
    "predict_outputs", "profile_nodes", "wilson_interval",
]
