"""Byte and time budgets: how many samples go into one call, how many runs a measurement makes.

Memory (issue 14: a 224² ResNet-50 sweep peaked at 46× the model): evaluation and calibration feed the
model in batches sized so that one call's inputs, outputs and activations stay within a byte budget.
Activations are estimated from the input — ``ACTIVATION_FACTOR`` × the input bytes per sample —
because ONNX Runtime's planner reuses buffers: measured live activations were 7.3× the input on a 224²
ResNet-50 (4.4 MB per sample at batch 64) and about 8× on a BERT-base encoder at 128 tokens. Outputs are
measured on the first (one-sample) call, so a segmentation head with large outputs gets small batches.

Calibration is different: ONNX Runtime's calibrator makes every intermediate tensor a graph output (its
range is reduced per batch), and a 224² ResNet-50 calibrated at batch 16 grew by 210 MB per sample — twice
the sum of all its activations (106 MB). ``calibration_batch`` therefore sizes calibration calls from
the model's total activation bytes per sample (``optim.graph.summary``: sum of node outputs).

Time: ``runs_within`` turns a measured per-run cost and a time budget into a repeat count, so a large
model is timed a few times and a small one many times, in about the same wall time.
"""

from __future__ import annotations

import ctypes
import gc
import math
from typing import Any

import numpy as np

from optim.graph.summary import summarize
from optim.handle import ModelHandle

EVAL_BYTES = 256 * 2**20  # inputs + activations + outputs of one evaluation/calibration call
ACTIVATION_FACTOR = 16
MAX_BATCH = 64


def sample_bytes(x: np.ndarray) -> int:
    """Bytes of one sample of ``x`` (N × ...)."""
    return int(x.dtype.itemsize * math.prod(x.shape[1:]))


def batch_for(in_bytes: int, out_bytes: int = 0, budget: int = EVAL_BYTES, max_batch: int = MAX_BATCH) -> int:
    """Samples per call so that input, estimated activations and output bytes stay within ``budget``."""
    per = max(1, in_bytes * (1 + ACTIVATION_FACTOR) + out_bytes)
    return int(max(1, min(max_batch, budget // per)))


def activation_bytes(model: Any) -> int:
    """Sum of every node output's bytes for one sample (float32), from the graph summary's shapes."""
    return per_sample_cost(model)[0]


def per_sample_cost(model: Any) -> tuple[int, int]:
    """(activation bytes, MACs) of one sample, from the graph summary."""
    handle = model if isinstance(model, ModelHandle) else ModelHandle(model, "budget")
    s = summarize(handle)
    return int(s.layers["act_out_elems"].fillna(0).sum()) * 4, int(s.macs)


CALIB_MACS = 128e9  # calibration compute: a 224² ResNet-50 (4.1 GMACs) gets 32 samples, the digits ResNet all
CALIB_MIN = 32


def calibration_samples(requested: int, macs: int) -> int:
    """How many calibration samples to use: ``requested``, fewer when they would exceed :data:`CALIB_MACS`
    (ORT's calibrator runs the graph unoptimised with every tensor reduced: ≈ 3.5× a 1-thread inference per
    sample on ResNet-50), never fewer than :data:`CALIB_MIN`. Depends only on the graph, so it is reproducible."""
    if macs <= 0:
        return requested
    return int(min(requested, max(CALIB_MIN, CALIB_MACS // macs)))


def calibration_batch(in_bytes: int, act_bytes: int, budget: int = EVAL_BYTES, max_batch: int = 32) -> int:
    """Samples per calibration call: ORT keeps ≈ 2 × all activations of each sample of a call alive."""
    return int(max(1, min(max_batch, budget // max(1, in_bytes + 2 * act_bytes))))


def trim_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc ``malloc_trim``; elsewhere a no-op).

    Between sweep variants: models, sessions and torch tensors of the last variant are freed, but glibc
    keeps the pages, so the next variant's peak would stack on the last one's fragments.
    """
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def runs_within(cost_s: float, budget_s: float, min_runs: int = 1, max_runs: int = 10_000) -> int:
    """Repeat count whose total time is about ``budget_s`` at ``cost_s`` per run, within [min_runs, max_runs]."""
    if cost_s <= 0:
        return max_runs
    return int(max(min_runs, min(max_runs, budget_s // cost_s)))
