"""Per-kernel ONNX Runtime profiles of calibration models, as rows the host estimator prices.

Each profiling session (ORT_ENABLE_ALL, one thread, the level latency is measured at) also saves the
graph it optimised, so every profiled kernel is placed in the estimator row it belongs to
(:func:`optim.hardware.model.ortplan.row_keys`: the ONNX node a kernel computes, or its own row for a
layout reorder, inserted transpose or standalone quantize). Per kernel the minimum over the session's
runs and over sessions: on a shared machine a preempted run inflates one reading, not
the estimate of a kernel's quiet time. The rows carry the estimator's own ``ops`` and ``bytes``
(:func:`optim.hardware.model.estimator.priced_layers`), so what is fitted is what is priced.
"""

from __future__ import annotations

import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pandas as pd

from optim.handle import ModelHandle
from optim.hardware.model.estimator import priced_layers
from optim.hardware.model.host_device import host_device
from optim.hardware.model.ortplan import Kernel, plan_from_optimized, row_keys
from optim.measure.session import make_session
from optim.measure.timing import run_profiled

SUFFIX = "_kernel_time"


def kernel_minima(events: list[dict[str, Any]], skip_runs: int = 1) -> dict[str, float]:
    """Kernel name → its fastest ms per run over the trace's ``model_run`` windows (the first ``skip_runs``
    skipped): like whole-model latency, the reading least inflated by other processes."""
    runs = sorted((float(e["ts"]), float(e["ts"]) + float(e["dur"])) for e in events
                  if e.get("cat") == "Session" and e.get("name") == "model_run")[skip_runs:]
    per: dict[str, list[float]] = defaultdict(lambda: [0.0] * len(runs))
    for e in events:
        name = str(e.get("name", ""))
        if e.get("cat") != "Node" or not name.endswith(SUFFIX):
            continue
        ts = float(e["ts"])
        for i, (lo, hi) in enumerate(runs):
            if lo <= ts <= hi:
                per[name[: -len(SUFFIX)]][i] += float(e["dur"]) / 1000.0
                break
    return {k: float(np.min(v)) for k, v in per.items()} if runs else {}


def debias(ms: float, profiler_cost_ms: float) -> float:
    """A profiled kernel time less the profiler's own cost, never below a tenth of the reading."""
    return max(ms - profiler_cost_ms, 0.1 * ms)


def profiled_rows(handle: ModelHandle, repeats: int = 3, runs: int = 5) -> tuple[dict[str, float], list[Kernel]]:
    """(estimator row → ms, the kernel plan of the last session): minimum over ``repeats`` sessions."""
    best: dict[str, float] = {}
    plan: list[Kernel] = []
    for _ in range(max(1, repeats)):
        with tempfile.TemporaryDirectory(prefix="optim_cal_") as tmp:
            sess = make_session(handle.model, threads=1, opt_level="all", profile_prefix=Path(tmp) / "ort",
                                optimized_path=Path(tmp) / "optimized.onnx")
            optimized = onnx.load(str(Path(tmp) / "optimized.onnx"), load_external_data=False)
            events = run_profiled(sess, handle.model, runs)
        plan = plan_from_optimized(handle.model, optimized)
        keys = row_keys(handle.model, plan)
        rows: dict[str, float] = defaultdict(float)
        for kernel, ms in kernel_minima(events).items():
            rows[keys.get(kernel, f"unplanned({kernel})")] += ms
        for key, ms in rows.items():
            best[key] = min(best.get(key, np.inf), ms)
    return best, plan


def node_table(handle: ModelHandle, repeats: int = 3, runs: int = 5, target_ms: float | None = None,
               device_profile: dict[str, Any] | None = None) -> pd.DataFrame:
    """Measured rows of one model with the estimator's class, ops and bytes for each.

    With ``target_ms`` (the model's quiet whole-run time less the per-run overhead) the row times are
    rescaled to sum to it: the profiler times kernels in wall-clock, inflated by a different factor in
    every profiling session on a shared machine, while the shares between kernels are stable."""
    measured, plan = profiled_rows(handle, repeats, runs)
    return table_from_rows(handle, measured, plan, target_ms, device_profile)


def table_from_rows(handle: ModelHandle, measured: dict[str, float], plan: list[Kernel],
                    target_ms: float | None = None, device_profile: dict[str, Any] | None = None,
                    profiler_cost_ms: float = 0.0) -> pd.DataFrame:
    """:func:`node_table` from already measured rows (see there); ``profiler_cost_ms`` (what ORT's profiler
    adds to every kernel it times, :func:`.fit.profiler_cost`) is taken off each row first."""
    layers, _path, _ = priced_layers(handle, host_device(device_profile), plan=plan)
    df = layers[["node", "op_type", "op_class", "ops", "bytes", "out_elems", "macs", "calls", "out_rows", "bcast_ops",
                 "dram_bytes"]].copy()
    df["ms"] = df["node"].map({k: debias(v, profiler_cost_ms) for k, v in measured.items()})
    df = df[df["ms"].notna() & (df["ms"] > 0)].reset_index(drop=True)
    unmapped = float(sum(debias(v, profiler_cost_ms) for k, v in measured.items() if k not in set(layers["node"])))
    df["model"] = handle.name
    factor = 1.0
    if target_ms is not None and df["ms"].sum() + unmapped > 0:
        factor = max(target_ms, 1e-6) / (df["ms"].sum() + unmapped)
        df["ms"] = df["ms"] * factor
    df.attrs["unmapped_ms"] = unmapped * factor
    df.attrs["wall_inflation"] = 1.0 / factor
    return df
