"""Latency and per-node profiling with ONNX Runtime (part of :mod:`optim.measure.core`, which re-exports both).

Latency: a time-budgeted loop (warm-up, then at least ``min_runs`` and at most ``max_runs`` timed runs,
stopping once ``budget_s`` has elapsed) on synthesised inputs of the model's own dtype and shape; median
and p90 are reported because a shared machine produces long-tailed timings. A model whose graph fixes
batch = 1 is measured at a larger batch by re-declaring its batch dimension symbolic ("rebatched", checked
against the original on one sample); if the graph cannot run re-batched (e.g. a hard-coded Reshape),
the batch is timed as that many single-sample runs ("sequential") and the mode is recorded.

Per-node profile: ``SessionOptions.enable_profiling`` writes a Chrome trace; node events
(``cat == "Node"``, name ``<node>_kernel_time``, ``dur`` in µs, ``args.op_name``, ``args.provider``) are
averaged per run and reconciled with the ``model_run`` events: ``coverage = node_sum_ms / run_ms``
(≈ 0.9–1.0 on real models; the rest is executor overhead between kernels, a larger share on tiny
models). The first run is a warm-up and is dropped; so are runs slower than 2× the median run, which on a
shared machine are runs where another process took the core (a 12 ms stall inside a 0.08 ms run was seen):
they would make the mean run time, and so the coverage, meaningless. ``dropped_runs`` counts them.
With ``opt_level="disable"`` (the default here) node names equal the ONNX node names; at higher levels they
are ORT's fused kernel names — ``optim.measure.layer_profile.profile_layers`` maps those back to ONNX nodes.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd

from optim.errors import ConfigError, DynamicShapeError
from optim.io.shapes import recorded_batch, synthesize_inputs
from optim.measure.session import ModelLike, fixed_batch, is_symbolic, make_session, model_proto

OUTLIER_FACTOR = 2.0  # a profiled run slower than this × the median run was disturbed (preempted): dropped
# What a timed run is measured with. "wall": elapsed time (what a user waits). "cpu": the calling thread's CPU
# time, which equals wall time for one intra-op thread on a quiet machine but is not inflated when other jobs
# preempt the process (the hardware calibration times kernels this way on shared cores).
CLOCKS: dict[str, Callable[[], int]] = {"wall": time.perf_counter_ns, "cpu": time.thread_time_ns}


@dataclass(frozen=True)
class Latency:
    """Timing of one model at one setting; every setting that changes the number is recorded."""

    median_ms: float
    p90_ms: float
    mean_ms: float
    runs: int
    batch: int
    threads: int
    opt_level: str
    budget_s: float = 1.0
    warmup: int = 3
    batch_mode: str = "native"  # "native" | "rebatched" | "sequential"
    provider: str = "CPUExecutionProvider"
    clock: str = "wall"

    @property
    def per_sample_ms(self) -> float:
        return self.median_ms / self.batch


@dataclass(frozen=True)
class NodeProfile:
    """Per-node mean time per run (``table``: node, op_type, ms, share, provider; slowest first)."""

    table: pd.DataFrame
    node_sum_ms: float
    run_ms: float
    coverage: float
    runs: int = 0
    threads: int = 1
    opt_level: str = "disable"
    dropped_runs: int = 0


def _feeds(sess: ort.InferenceSession, model: onnx.ModelProto, batch: int) -> dict[str, np.ndarray]:
    """Synthesised feeds for every input (``optim.io.shapes.synthesize_inputs``: valid token ids, masks, ...)."""
    first = sess.get_inputs()[0]
    if any(is_symbolic(d) for d in first.shape[1:]) and recorded_batch(model) is None:
        raise DynamicShapeError(
            f"Input '{first.name}' has dynamic dims {tuple(first.shape)} beyond the batch; "
            "load the model with input_shapes to fix them."
        )
    return synthesize_inputs(model, batch=batch, seed=0)


def _rebatched(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose inputs/outputs with the first input's fixed leading dim declare it symbolic."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    inits = {i.name for i in m.graph.initializer}
    inputs = [i for i in m.graph.input if i.name not in inits]
    fixed = inputs[0].type.tensor_type.shape.dim[0].dim_value
    for vi in [*inputs, *m.graph.output]:
        dims = vi.type.tensor_type.shape.dim
        if len(dims) and dims[0].HasField("dim_value") and dims[0].dim_value == fixed:
            dims[0].dim_param = "batch"
    del m.graph.value_info[:]
    return m


def _batched_session(
    handle: ModelLike, batch: int, threads: int, opt_level: str, providers: list[str] | None
) -> tuple[ort.InferenceSession, onnx.ModelProto, str]:
    """(session, model it runs, batch_mode) able to time ``batch`` samples."""
    model = model_proto(handle)
    sess = make_session(handle, threads=threads, opt_level=opt_level, providers=providers)
    lead = fixed_batch(model, sess.get_inputs()[0].shape[0])
    if lead is None or lead == batch:
        return sess, model, "native"
    if recorded_batch(model) is not None:  # shapes kept out of the graph: it runs exactly those
        return sess, model, "sequential"
    candidate = _rebatched(model)
    try:
        rsess = make_session(candidate, threads=threads, opt_level=opt_level, providers=providers)
        feeds = _feeds(rsess, candidate, batch)
        out = rsess.run(None, feeds)[0]
        one = {k: v[:1] if v.ndim and v.shape[0] == batch else v for k, v in feeds.items()}
        ref = sess.run(None, one)[0]
        if out.shape[0] == batch and np.allclose(out[:1], ref, rtol=1e-3, atol=1e-4):
            return rsess, candidate, "rebatched"
    except Exception:  # noqa: BLE001 - any failure means "cannot re-batch": fall back below
        pass
    return sess, model, "sequential"


def _check_loop(budget_s: float, warmup: int, min_runs: int, max_runs: int, clock: str) -> None:
    if min_runs < 1 or max_runs < min_runs or budget_s < 0 or warmup < 0:
        raise ConfigError(f"latency settings: need 1 ≤ min_runs ≤ max_runs, budget_s ≥ 0, warmup ≥ 0 (got "
                          f"min_runs={min_runs}, max_runs={max_runs}, budget_s={budget_s}, warmup={warmup}).")
    if clock not in CLOCKS:
        raise ConfigError(f"clock: {clock!r} is not one of {', '.join(CLOCKS)}.")


def timed_runs(run_once: Callable[[], object], budget_s: float = 1.0, warmup: int = 3, min_runs: int = 10,
               max_runs: int = 10_000, clock: str = "wall") -> np.ndarray:
    """The one latency loop: ``warmup`` untimed calls, then timed calls (ms each, on ``clock``) until at least
    ``min_runs`` are done and ``budget_s`` of wall time has passed, or ``max_runs`` are done.

    Budgeted by the measured cost: warm-up stops after a call longer than a tenth of ``budget_s``, and
    ``min_runs`` shrinks (to no fewer than 3) so the guaranteed calls fit about twice ``budget_s`` — a 400 ms
    encoder at batch 32 no longer spends minutes on 3 + 10 calls."""
    _check_loop(budget_s, warmup, min_runs, max_runs, clock)
    timer = CLOCKS[clock]
    cost = 0.0
    for _ in range(warmup):
        t0 = time.perf_counter()
        run_once()
        cost = time.perf_counter() - t0
        if cost > budget_s / 10:
            break
    if cost > 0:
        min_runs = min(min_runs, max(3, int(2 * budget_s / cost)))
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_runs:
        t0 = timer()
        run_once()
        times.append((timer() - t0) / 1e6)
        if len(times) >= min_runs and time.perf_counter() - start >= budget_s:
            break
    return np.asarray(times)


def latency(
    handle: ModelLike,
    batch: int = 1,
    threads: int = 1,
    opt_level: str = "all",
    budget_s: float = 1.0,
    warmup: int = 3,
    min_runs: int = 10,
    max_runs: int = 10_000,
    providers: list[str] | None = None,
    clock: str = "wall",
) -> Latency:
    """Median/p90/mean time (ms, on ``clock``) of one inference call at ``batch`` on synthesised inputs."""
    if batch < 1:
        raise ConfigError(f"latency settings: need batch ≥ 1, got batch={batch}.")
    _check_loop(budget_s, warmup, min_runs, max_runs, clock)
    sess, model, mode = _batched_session(handle, batch, threads, opt_level, providers)
    feeds = _feeds(sess, model, 1 if mode == "sequential" else batch)
    calls = batch if mode == "sequential" else 1

    def run_once() -> None:
        for _ in range(calls):
            sess.run(None, feeds)

    arr = timed_runs(run_once, budget_s=budget_s, warmup=warmup, min_runs=min_runs, max_runs=max_runs, clock=clock)
    return Latency(
        median_ms=float(np.median(arr)), p90_ms=float(np.percentile(arr, 90)), mean_ms=float(arr.mean()),
        runs=len(arr), batch=batch, threads=threads, opt_level=opt_level, budget_s=budget_s,
        warmup=warmup, batch_mode=mode, provider=sess.get_providers()[0], clock=clock,
    )


def _load_trace(path: str | Path) -> list[dict[str, Any]]:
    data = json.loads(Path(path).read_text())
    return data["traceEvents"] if isinstance(data, dict) else data


def _run_windows(events: list[dict[str, Any]]) -> list[tuple[float, float]]:
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    return sorted((float(e["ts"]), float(e["ts"]) + float(e["dur"])) for e in runs)


def parse_profile(events: list[dict[str, Any]], skip_runs: int = 1) -> NodeProfile:
    """Aggregate a Chrome-trace event list into a per-node table (mean ms per run, slowest first)."""
    measured = _run_windows(events)[skip_runs:]
    if not measured:
        raise ConfigError("profile: the trace holds no measured model_run; increase runs.")
    limit = OUTLIER_FACTOR * float(np.median([hi - lo for lo, hi in measured]))
    windows = [(lo, hi) for lo, hi in measured if hi - lo <= limit]
    suffix = "_kernel_time"
    rows: dict[str, dict[str, Any]] = {}
    for e in events:
        if e.get("cat") != "Node" or not str(e.get("name", "")).endswith(suffix):
            continue
        ts = float(e["ts"])
        if not any(lo <= ts <= hi for lo, hi in windows):
            continue
        node = e["name"][: -len(suffix)]
        args = e.get("args", {})
        row = rows.setdefault(node, {"op_type": args.get("op_name", ""), "us": 0.0,
                                     "provider": args.get("provider", "")})
        row["us"] += float(e["dur"])
    n = len(windows)
    run_ms = sum(hi - lo for lo, hi in windows) / n / 1000.0
    table = pd.DataFrame(
        [{"node": k, "op_type": v["op_type"], "ms": v["us"] / n / 1000.0, "provider": v["provider"]}
         for k, v in rows.items()],
        columns=["node", "op_type", "ms", "provider"],
    )
    node_sum = float(table["ms"].sum())
    table["share"] = table["ms"] / node_sum if node_sum > 0 else 0.0
    table = table[["node", "op_type", "ms", "share", "provider"]]
    table = table.sort_values(["ms", "node"], ascending=[False, True], kind="stable").reset_index(drop=True)
    coverage = node_sum / run_ms if run_ms > 0 else 0.0
    return NodeProfile(table=table, node_sum_ms=node_sum, run_ms=run_ms, coverage=coverage, runs=n,
                       dropped_runs=len(measured) - n)


def run_profiled(sess: ort.InferenceSession, model: onnx.ModelProto, runs: int) -> list[dict[str, Any]]:
    """Run a profiling session ``runs + 1`` times at its batch (1 when symbolic) and return the trace events."""
    lead = sess.get_inputs()[0].shape[0]
    feeds = _feeds(sess, model, 1 if is_symbolic(lead) else int(lead))
    for _ in range(runs + 1):
        sess.run(None, feeds)
    return _load_trace(sess.end_profiling())


def profile_nodes(
    handle: ModelLike, threads: int = 1, opt_level: str = "disable", runs: int = 20,
    providers: list[str] | None = None,
) -> NodeProfile:
    """Per-node time of ``runs`` batch-1 inferences (after one warm-up run) from ORT's profiler.

    Node names are ORT's kernel names; ``optim.measure.layer_profile.profile_layers`` maps them to ONNX nodes.
    """
    if runs < 1:
        raise ConfigError(f"runs: need at least 1 profiled run, got {runs}.")
    with tempfile.TemporaryDirectory(prefix="optim_prof_") as tmp:
        sess = make_session(handle, threads=threads, opt_level=opt_level, providers=providers,
                            profile_prefix=Path(tmp) / "ort")
        events = run_profiled(sess, model_proto(handle), runs)
    prof = parse_profile(events, skip_runs=1)
    return replace(prof, threads=threads, opt_level=opt_level)
