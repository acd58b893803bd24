"""Fit this machine's efficiency and overhead factors from ONNX Runtime per-node profiles, validate
them on held-out models and write the CPU's profile (:mod:`optim.hardware.profiles`).

1. Micro-benchmarks (one thread): peak FP32 from an ORT MatMul, memory bandwidth from a large copy.
2. Per-kernel profiles (``measure.profile_nodes`` at ORT_ENABLE_ALL, the level latency is measured at)
   of the calibration models; fused kernels are mapped back to the conv/gemm they compute
   (:func:`optim.hardware.model.ortplan.row_keys`, on :func:`optim.measure.layer_profile.map_kernels`)
   and joined with the summary's per-node MACs and bytes.
   ONNX Runtime's layout reorders (named only ``ReorderOutput_token_N``) are shared among the reorders
   :mod:`optim.hardware.model.ortcpu` predicts; odd-width calibration models cover the non-NCHWc conv paths.
3. Per op class (conv, conv_nchw, conv1x1_nchw, dwconv, dwconv_nchw, gemm, elementwise, reorder, shape)
   a least-squares fit of
   ``max(ops / (peak × e_c), bytes / (bw × e_m)) + overhead`` to the node times, in log space and
   pulled gently towards priors so a class with few nodes stays sane (``scipy.optimize.least_squares``).
4. Whole-model correction: the per-run overhead is measured on an empty graph; profiling inflates
   each kernel by its own timer cost, so a kernel-time scale and a per-kernel profiler cost are fitted
   to the measured whole-model latencies of the same models (bounded linear least squares).
5. Held-out validation: models the fit never saw (:data:`.models.HOLDOUT_SPECS`) are estimated and
   measured; their signed residuals are stored in the profile and become the host estimate's band.
Every stage reports progress (``progress(fraction, stage)``) and checks ``cancel()`` between models,
so :mod:`.job` can run it in the background. No library fits a roofline to ORT traces, hence this module.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from optim.errors import CancelledError
from optim.handle import ModelHandle
from optim.hardware import host, profiles
from optim.hardware.calibration import models
from optim.hardware.calibration.fit import (
    BOUNDS,
    GROUPS,
    fit_factors,
    fit_group_scales,
    group_of,
    profiler_cost,
)
from optim.hardware.calibration.kernels import profiled_rows, table_from_rows
from optim.hardware.calibration.micro import (
    measure_bandwidth_gbs,
    measure_peak_gflops,
    measure_run_overhead_ms,
    measured_latency_ms,
)
from optim.hardware.model.estimator import estimate_with_device
from optim.hardware.model.host_device import host_device
from optim.hardware.model.ortplan import Kernel

Progress = Callable[[float, str], None]
OVERHEAD_RANGE = (0.5, 1.25)  # the fitted per-run overhead, as a multiple of the measured one


@dataclass(frozen=True)
class CalibrationConfig:
    """What one calibration measures: model specs to fit and to hold out, and how hard to measure."""

    fit: tuple[str, ...] = models.FIT_SPECS
    holdout: tuple[str, ...] = models.HOLDOUT_SPECS
    repeats: int = 4
    runs: int = 5
    latency_rounds: int = 3
    late_rounds: int = 2  # more rounds after profiling: a model's fastest run is looked for over the whole calibration
    latency_budget_s: float = 0.15  # per model and round (see robust_latency_ms)


def _noop(fraction: float, stage: str) -> None:
    return None


def estimate_host(handle: ModelHandle, profile: dict[str, Any] | None, plan: list[Kernel] | None = None) -> float:
    """Estimated ms for ``handle`` on this machine under ``profile`` (without touching the saved file)."""
    return estimate_with_device(handle, host_device(profile), plan=plan).total_ms


def _profile_dict(peak: float, bw: float, classes: dict[str, Any], names: Sequence[str]) -> dict[str, Any]:
    fp = host.fingerprint()
    return {
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "model_version": profiles.MODEL_VERSION, "fingerprint": fp, "fingerprint_key": host.host_key(fp),
        "cpu_model": fp["cpu_model"],
        "peak_fp32": {"value": round(peak, 2), "unit": "GFLOPS", "tag": "measured",
                      "source": "single-thread ONNX Runtime MatMul 256x256 FP32, best of a 0.4 s loop by thread CPU time"},
        "bandwidth": {"value": round(bw, 2), "unit": "GB/s", "tag": "measured",
                      "source": "single-thread 64 MiB numpy copy (read + write), best of 5 by thread CPU time"},
        "classes": classes, "calibration_models": list(names), "run_overhead_us": 0.0,
        "opt_level": "all", "threads": 1, "cost_form": "additive",
    }


def robust_latency_ms(handles: Sequence[ModelHandle], rounds: int, on_round: Callable[[int], None] | None = None,
                      budget_s: float = 0.15) -> np.ndarray:
    """Whole-model latency of each model: the fastest run over ``rounds`` interleaved rounds, so a burst of
    load from other processes inflates at most the rounds it overlaps, not one model's only reading.

    On this project's shared machines the host itself switches between a fast and a slow state every few
    tens of milliseconds (one session of resnet8 at width 0.5: fastest run 139 us in one stretch, 170-190 us
    in the others; MobileNetV2-digits 352 vs 475 us), so what finds the quiet latency is the total time
    spent on a model (``rounds`` x ``budget_s``), not the number of sessions: 10 x 0.05 s read up to 1.5x
    higher minima than 5 x 0.15 s."""
    best = np.full(len(handles), np.inf)
    for r in range(max(1, rounds)):
        for i, h in enumerate(handles):
            best[i] = min(best[i], measured_latency_ms(h, budget_s=budget_s, min_runs=10, stat="min"))
        if on_round is not None:
            on_round(r)
    return best


def profile_models(handles: Sequence[ModelHandle], cfg: CalibrationConfig, progress: Progress,
                   cancel: Callable[[], bool]) -> list[tuple[dict[str, float], list[Kernel]]]:
    """Per-row profiled minima and kernel plan of each model (:func:`.kernels.profiled_rows`)."""
    raw = []
    for i, h in enumerate(handles):
        if cancel():
            raise CancelledError("Calibration cancelled.")
        progress(0.15 + 0.5 * i / len(handles), f"profiling {h.name} ({i + 1}/{len(handles)})")
        raw.append(profiled_rows(h, cfg.repeats, cfg.runs))
    return raw


def fit_profile(handles: Sequence[ModelHandle], measured: np.ndarray, peak: float, bw: float, run_over: float,
                raw: Sequence[tuple[dict[str, float], list[Kernel]]]) -> dict[str, Any]:
    """Per-class fit and whole-model correction for ``handles`` from their profiles (see the module docstring)."""
    delta = profiler_cost([list(r.values()) for r, _ in raw], measured, run_over)
    tables = [table_from_rows(h, r, plan, target_ms=m - run_over, profiler_cost_ms=delta)
              for h, (r, plan), m in zip(handles, raw, measured, strict=True)]
    profile = profile_from_tables(handles, tables, measured, peak, bw, run_over, [plan for _, plan in raw])
    profile["profiler_debias_us"] = round(delta * 1e3, 3)
    return profile


def profile_from_tables(handles: Sequence[ModelHandle], tables: Sequence[pd.DataFrame], measured: np.ndarray,
                        peak: float, bw: float, run_over: float, plans: Sequence[list[Kernel]] | None = None
                        ) -> dict[str, Any]:
    """The profile fitted to measured rows (:func:`.kernels.node_table`) and whole-model latencies
    (``plans``: the kernels each model's profiling session ran, reused instead of asking ORT again)."""
    plans = list(plans) if plans is not None else [None] * len(handles)
    table = pd.concat(tables, ignore_index=True)
    profile = _profile_dict(peak, bw, fit_factors(table, peak * 1e9, bw * 1e9), [h.name for h in handles])
    profile["profile_wall_inflation"] = {h.name: round(t.attrs["wall_inflation"], 3)
                                         for h, t in zip(handles, tables, strict=True)}
    kernels = [estimate_with_device(h, host_device(profile), plan=p).layers for h, p in zip(handles, plans, strict=True)]
    parts = np.array([[k.loc[k["op_class"].map(group_of) == g, "ms"].sum() for g in GROUPS] for k in kernels])
    counts = np.array([float((k["ms"] > 0).sum()) for k in kernels])
    scales, delta, run_over = fit_group_scales(parts, counts, measured, run_over, overhead_range=OVERHEAD_RANGE)
    for name, c in profile["classes"].items():
        s = float(scales[GROUPS.index(group_of(name))])
        c["eff_compute"], c["eff_memory"] = c["eff_compute"] / s, c["eff_memory"] / s
        c["overhead_us"] = round(max(s * c["overhead_us"], BOUNDS["overhead_us"][0]), 3)
        # the per-kernel cost is paid once per kernel, not per call; a row's fixed cost stays >= the bound
        c["kernel_us"] = round(max(delta * 1e3, BOUNDS["overhead_us"][0] - c["overhead_us"]), 3)
        c["out_ns"] = round(float(c.get("out_ns", 0.0)) * s, 5)
        c["row_ns"] = round(float(c.get("row_ns", 0.0)) * s, 5)
        c["bcast"] = round(float(c.get("bcast", 0.0)) * s, 5)
    profile["kernel_scale"] = {g: round(float(s), 4) for g, s in zip(GROUPS, scales, strict=True)}
    profile["kernel_cost_us"] = round(delta * 1e3, 3)
    profile["run_overhead_us"] = round(run_over * 1e3, 2)
    predicted = np.array([estimate_host(h, profile, p) for h, p in zip(handles, plans, strict=True)])
    errors = np.abs(predicted - measured) / measured * 100
    profile["fit_error_pct"] = round(float(np.median(errors)), 2)
    profile["fit_errors_pct"] = {h.name: round(float(e), 2) for h, e in zip(handles, errors, strict=True)}
    return profile


def holdout_residuals(profile: dict[str, Any], handles: Sequence[ModelHandle], measured: np.ndarray
                      ) -> dict[str, Any]:
    """Signed (measured / estimated - 1) x 100 of each held-out model, and their summary."""
    errors = {h.name: round(float(m / estimate_host(h, profile) - 1) * 100, 2)
              for h, m in zip(handles, measured, strict=True)}
    a = np.abs(list(errors.values())) if errors else np.array([])
    return {"errors_pct": errors, "n": len(errors),
            "within_15_pct": round(float((a <= 15).mean()), 3) if a.size else None,
            "median_abs_pct": round(float(np.median(a)), 2) if a.size else None}


def calibrate(config: CalibrationConfig | None = None, out: Path | None = None, save: bool = True,
              progress: Progress | None = None, cancel: Callable[[], bool] | None = None,
              fit_models: Sequence[ModelHandle] | None = None, holdout_models: Sequence[ModelHandle] | None = None
              ) -> dict[str, Any]:
    """Measure, fit, validate and (unless ``save`` is False) write this CPU's profile to ``out`` (default:
    its place in the data dir). ``fit_models``/``holdout_models`` replace the config's specs."""
    cfg = config or CalibrationConfig()
    report, stop = progress or _noop, cancel or (lambda: False)
    t0 = time.perf_counter()
    report(0.0, "building calibration models")
    fit = list(fit_models) if fit_models is not None else [models.cached_build(s) for s in models.expand(cfg.fit)]
    held = list(holdout_models) if holdout_models is not None else [models.cached_build(s) for s in cfg.holdout]
    report(0.05, "micro-benchmarks (peak, bandwidth, run overhead)")
    peak, bw, run_over = measure_peak_gflops(), measure_bandwidth_gbs(), measure_run_overhead_ms()
    both = [*fit, *held]
    report(0.08, "measuring whole-model latency")
    lat = robust_latency_ms(both, cfg.latency_rounds,
                            lambda r: report(0.08 + 0.07 * (r + 1) / cfg.latency_rounds, "measuring whole-model latency"),
                            budget_s=cfg.latency_budget_s)
    raw = profile_models(fit, cfg, report, stop)
    report(0.65, "measuring whole-model latency again")
    lat = np.minimum(lat, robust_latency_ms(both, cfg.late_rounds, budget_s=cfg.latency_budget_s))
    report(0.72, "fitting kernel classes")
    profile = fit_profile(fit, lat[: len(fit)], peak, bw, run_over, raw)
    report(0.9, "validating on held-out models")
    profile["holdout"] = holdout_residuals(profile, held, lat[len(fit):])
    profile["calibration_s"] = round(time.perf_counter() - t0, 1)
    if save:
        profiles.write_profile(profile, out)
    report(1.0, "done")
    return profile
