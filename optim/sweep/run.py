"""Sweep: build and measure a grid of compressed variants, one stored row per variant.

Grid: pruning ratios × bit-widths × pruning kinds × optimisation levels. Ratio 0 means "not pruned" and
appears once per bit-width (kind "none"); the baseline (ratio 0, 32 bits) always comes first and its
logits are the reference for every variant's fidelity. Each variant is built (prune → quantize, see
:mod:`optim.sweep.executors`; the optimisation level is the ORT session level of its latency), measured
(accuracy ± Wilson interval, fidelity, latency with one intra-op thread, bytes, parameters, MACs, per-node
profile) and committed to the store in its own transaction: a killed sweep resumes, a re-run is instant.

Bits map: 32 → no quantization, 16 → FP16, 8 → INT8 static when calibration data is given (else INT8
dynamic), 4 → INT4, 2/3/5/6/7 → simulated ("fake") weights.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from optim.errors import ConfigError
from optim.graph.summary import summarize
from optim.handle import ModelHandle
from optim.io.model_data import check_compatible
from optim.io.splits import distillation_data
from optim.measure import core as measure
from optim.measure.fidelity import Reference, fidelity_record, output_kinds
from optim.measure.model import measure_model
from optim.measure.session import OPT_LEVELS as SESSION_LEVELS
from optim.sweep.executors import (
    Executor,
    Variant,
    VariantBuilder,
    engine_fingerprint,
    error_text,
    fitted,
    is_cancel,
)
from optim.sweep.node import node_columns
from optim.sweep.store import Store, jsonable, stable_id

NOT_IDENTITY = frozenset({"target_device"})
KINDS = ("structured", "unstructured", "auto")  # auto: per-layer structured ratios from sensitivity
OPT_LEVELS = tuple(SESSION_LEVELS)  # the ORT level names, from the one session configuration
BITS = (2, 3, 4, 5, 6, 7, 8, 16, 32)


def _f(help_: str, **meta: Any) -> dict[str, Any]:
    return {"help": help_, **meta}


@dataclass(frozen=True)
class SweepConfig:
    """What a sweep varies and how it measures; all fields but ``target_device`` identify the sweep."""

    ratios: tuple[float, ...] = field(default=(0.0, 0.25, 0.5, 0.75), metadata=_f("Pruning ratios (0 = none).", min=0.0, max=0.95))
    bits: tuple[int, ...] = field(default=(32, 16, 8, 4), metadata=_f("Bit-widths; 2/3/5/6/7 are simulated.", choices=list(BITS)))
    prune_kinds: tuple[str, ...] = field(default=KINDS[:2], metadata=_f(
        "Pruning kinds; 'auto' = structured with per-layer ratios planned from a sensitivity analysis.",
        choices=list(KINDS)))
    opt_levels: tuple[str, ...] = field(default=("all",), metadata=_f("ONNX Runtime graph optimisation levels.", choices=list(OPT_LEVELS)))
    importance: str = field(default="l2", metadata=_f("Pruning importance criterion (passed to the pruning passes)."))
    quant_format: str = field(default="auto", metadata=_f("INT8: auto = the fastest configuration on this CPU whose "
        "fidelity holds (searched); qdq / qoperator = static U8S8.", choices=["auto", "qdq", "qoperator"]))
    latency_threads: int = field(default=1, metadata=_f("Intra-op threads for latency.", min=1, max=64))
    latency_budget_s: float = field(default=0.3, metadata=_f("Seconds of timed runs per variant.", min=0.01, max=60.0))
    eval_limit: int | None = field(default=None, metadata=_f("Evaluate on at most this many test samples.", min=1))
    target_device: str | None = field(default=None, metadata=_f("Catalog device for estimates (informational)."))
    profile_runs: int = field(default=10, metadata=_f("Profiled runs for the per-node table.", min=1, max=1000))
    distill: bool = field(default=False, metadata=_f("Also build a distilled copy of every pruned variant "
                                                     "(fine-tuned to mimic the original)."))
    distill_budget_s: float = field(default=30.0, metadata=_f("Seconds of distillation per pruned model.",
                                                              min=1.0, max=3600.0))
    distill_epochs: int = field(default=3, metadata=_f("Distillation epochs (upper bound).", min=1, max=50))
    auto_bits: bool = field(default=False, metadata=_f(
        "Add an automatic per-layer mixed-precision variant (sensitivity-based, packed size of uniform INT4)."))

    def __post_init__(self) -> None:
        for name in ("ratios", "bits", "prune_kinds", "opt_levels"):
            value = getattr(self, name)
            if isinstance(value, (str, int, float)):
                value = (value,)
            value = tuple(dict.fromkeys(value))  # de-duplicate, keep order
            if not value:
                raise ConfigError(f"{name} must list at least one value.")
            object.__setattr__(self, name, value)
        object.__setattr__(self, "ratios", tuple(float(r) for r in self.ratios))
        object.__setattr__(self, "bits", tuple(int(b) for b in self.bits))
        for r in self.ratios:
            if not 0.0 <= r <= 0.95:
                raise ConfigError(f"ratios: each pruning ratio must be between 0 and 0.95, got {r}.")
        _check_all("bits", self.bits, BITS)
        _check_all("prune_kinds", self.prune_kinds, KINDS)
        _check_all("opt_levels", self.opt_levels, OPT_LEVELS)
        _check_all("quant_format", (self.quant_format,), ("auto", "qdq", "qoperator"))
        if self.latency_threads < 1 or self.latency_budget_s <= 0 or self.profile_runs < 1:
            raise ConfigError("latency_threads and profile_runs must be ≥ 1 and latency_budget_s > 0.")
        if self.eval_limit is not None and self.eval_limit < 1:
            raise ConfigError(f"eval_limit must be ≥ 1 or empty, got {self.eval_limit}.")
        if not 1.0 <= self.distill_budget_s <= 3600.0 or not 1 <= self.distill_epochs <= 50:
            raise ConfigError("distill_budget_s must be 1–3600 s and distill_epochs 1–50.")

    def variants(self) -> list[Variant]:
        """The grid, baseline first; ratio 0 appears once per bit-width and level (kind "none")."""
        out = [Variant("none", 0.0, 32, self.opt_levels[0])]
        distilled = (False, True) if self.distill else (False,)
        for level in self.opt_levels:
            for bits in self.bits:
                out.append(Variant("none", 0.0, bits, level))
            if self.auto_bits:
                out.append(Variant("none", 0.0, 0, level))
            for kind in self.prune_kinds:
                for ratio in (r for r in self.ratios if r > 0):
                    for kd in distilled:
                        for bits in self.bits:
                            out.append(Variant(kind, ratio, bits, level, kd))
        return list(dict.fromkeys(out))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def identity(self) -> dict[str, Any]:
        """The fields that change what is built or measured (``target_device`` only labels estimates,
        which are computed when results are read, so switching it reuses the stored sweep)."""
        return {k: v for k, v in self.to_dict().items() if k not in NOT_IDENTITY}


def _check_all(name: str, values: Sequence[Any], allowed: Sequence[Any]) -> None:
    bad = [v for v in values if v not in allowed]
    if bad:
        raise ConfigError(f"{name}: {bad} not allowed; choose from {list(allowed)}.")


@dataclass(frozen=True)
class SweepProgress:
    fraction: float
    current: str
    done: int
    total: int
    eta_s: float | None
    sweep_id: str = ""


ProgressFn = Callable[[SweepProgress], None]


def sweep_id_for(handle: ModelHandle, test: Any, calib: Any, config: SweepConfig, train: Any = None) -> str:
    """Stable id of (model content, test data, calibration data, configuration, engine code; with
    distillation also the training data).

    The engine fingerprint (source of the passes and of the measurement code) is part of the id so
    that changing, say, the INT8 activation type starts a new sweep instead of returning results built
    the old way.
    """
    kd = (train.content_hash,) if config.distill and train is not None else ()
    return stable_id(handle.content_hash, test.content_hash, calib.content_hash if calib is not None else None,
                     config.identity(), engine_fingerprint(), *kd)  # fmt: skip


def run_sweep(
    handle: ModelHandle,
    test: Any,
    calib: Any | None,
    config: SweepConfig,
    store: Store,
    progress: ProgressFn | None = None,
    cancel: Callable[[], bool] | None = None,
    executor: Executor | None = None,
    train: Any | None = None,
) -> str:
    """Build, measure and store every variant of ``config``; returns the sweep id.

    ``train`` (inputs, labels optional) feeds distillation when ``config.distill`` is on; it is required then,
    and its rows whose input is also a test input are dropped (the student never sees evaluation rows).
    Variants already in the store for the same (model, data, config) are not recomputed. ``cancel``
    returning True stops after the current variant (the sweep is marked "cancelled"; finished variants
    stay). A variant that fails is stored with status "failed" and its error; the sweep goes on.
    """
    _check_data(handle, test)
    if config.distill:
        train = distillation_data(train, test)
    sid = sweep_id_for(handle, test, calib, config, train)
    grid = config.variants()
    with_level = len(config.opt_levels) > 1
    store.put_model(handle)
    store.put_dataset(test)
    if calib is not None:
        store.put_dataset(calib)
    store.create_sweep(sid, handle.content_hash, test.content_hash, getattr(calib, "content_hash", None),
                       handle.name, config.identity(), total=len(grid))  # fmt: skip
    done_keys = store.finished_keys(sid)
    todo = [v for v in grid if v.key not in done_keys]
    report = _Reporter(progress, sid, len(grid), len(grid) - len(todo))
    if not todo:
        store.finish_sweep(sid, "done")
        report.final()
        return sid
    eval_set = test.subset(config.eval_limit) if config.eval_limit else test
    ref = _reference_logits(store, sid, handle, eval_set)
    cancel = cancel or (lambda: False)
    distill = {"epochs": config.distill_epochs, "budget_s": config.distill_budget_s}
    builder = VariantBuilder(handle, calib, config.importance, config.quant_format, should_cancel=cancel,
                             train=train, distill=distill)  # fmt: skip
    executor = fitted(executor, handle.size_bytes)  # big models: build and measure one variant at a time
    seq = {v.key: i for i, v in enumerate(grid)}
    if hasattr(executor, "run_variants"):  # builds and measures elsewhere (optim.sweep.ray_executor)
        results = executor.run_variants(SweepWork(handle, calib, train, eval_set, ref, config), todo, cancel)
    else:
        results = _measured_here(builder, executor, todo, eval_set, ref, config, cancel, report.start, with_level)
    try:
        for v, (row, layers, model_bytes) in results:  # only the driver writes; kept even if cancel came meanwhile
            row.update(variant_id=stable_id(sid, v.key), sweep_id=sid, variant_key=v.key, seq=seq[v.key],
                       label=v.label(with_level))  # fmt: skip
            store.put_variant(row, layers, model_bytes)
            report.finished(v.label(with_level))
    finally:
        results.close()
    if cancel() and len(store.finished_keys(sid)) < len(grid):
        store.finish_sweep(sid, "cancelled")
        return sid
    store.finish_sweep(sid, "done")
    report.final()
    return sid


@dataclass(frozen=True)
class SweepWork:
    """What an executor that builds and measures variants elsewhere needs (``run_variants(work, todo, cancel)``
    yields ``(variant, variant_row(...))`` in any order; sent once per sweep)."""

    handle: ModelHandle
    calib: Any
    train: Any
    eval_set: Any
    ref: dict[str, np.ndarray]  # the baseline's outputs by name (a measure.fidelity.Reference: with kinds)
    config: SweepConfig


def _measured_here(builder: VariantBuilder, executor: Executor, todo: list[Variant], eval_set: Any, ref: Any,
                   config: SweepConfig, cancel: Callable[[], bool], started: Callable[[str], None],
                   with_level: bool) -> Iterator[tuple[Variant, tuple[dict[str, Any], Any, bytes | None]]]:  # fmt: skip
    """Builds from ``executor.map_builds`` measured on this machine; stops at a cancel."""
    builder.plan(todo)  # intermediate models are dropped after their last use (memory: one at a time)
    builds = executor.map_builds(lambda v: _timed(builder.build, v), todo)
    try:
        for v, built in builds:
            if cancel() or (isinstance(built, BaseException) and is_cancel(built)):
                return
            started(v.label(with_level))
            yield v, variant_row(v, built, eval_set, ref, config, executor)
            builder.release(v)  # stored by now
    finally:
        builds.close()


def _timed(fn: Callable[[Variant], ModelHandle], v: Variant) -> tuple[ModelHandle, float]:
    t0 = time.perf_counter()
    return fn(v), time.perf_counter() - t0


def _check_data(handle: ModelHandle, test: Any) -> None:
    check_compatible(handle, test)


def _ref_name(sid: str) -> str:
    return f"ref_logits_{sid}"


def _reference_logits(store: Store, sid: str, handle: ModelHandle, eval_set: Any) -> dict[str, np.ndarray]:
    """The baseline's per-sample outputs on the evaluation set by name (every output: fidelity covers them
    all), computed once per sweep and kept for resumes (output i as ``ref_logits_<sid>[_i]``)."""
    names = [o.name for o in handle.model.graph.output]
    keys = [_ref_name(sid) + (f"_{i}" if i else "") for i in range(len(names))]
    marker = store.get_array(_ref_name(sid) + "_kept")  # which outputs have a sample axis
    if marker is not None:
        kept = {names[int(i)]: store.get_array(keys[int(i)]) for i in marker if int(i) < len(names)}
        if all(v is not None for v in kept.values()):
            return Reference(kept, output_kinds(handle.model))
    ref = Reference(measure.predict_outputs(handle, eval_set.x, feeds=getattr(eval_set, "feeds", None),
                                            constants=getattr(eval_set, "constants", None)), output_kinds(handle.model))
    for i, name in enumerate(names):
        if name in ref:
            store.put_array(keys[i], ref[name])
    store.put_array(_ref_name(sid) + "_kept", np.array([i for i, n in enumerate(names) if n in ref], np.int64))
    return ref


def variant_row(
    v: Variant, built: tuple[ModelHandle, float] | BaseException, eval_set: Any, ref: Any, config: SweepConfig,
    executor: Any,
) -> tuple[dict[str, Any], pd.DataFrame | None, bytes | None]:  # fmt: skip
    """One variant's store row, layers and model bytes, measured here (``executor.quiet()`` guards timing)."""
    row: dict[str, Any] = {"prune_kind": v.prune_kind, "prune_ratio": v.ratio, "bits": v.bits,
                           "opt_level": v.opt_level, "build_s": 0.0, "measure_s": 0.0,
                           "distilled": int(v.distilled), **node_columns()}  # fmt: skip
    if isinstance(built, BaseException):
        row.update(status="failed", error=f"build: {error_text(built)}")
        return row, None, None
    handle, row["build_s"] = built
    t0 = time.perf_counter()
    try:
        base = (v.ratio, v.bits, v.distilled) == (0, 32, False)  # the baseline: its outputs are the reference
        measured, layers = measure_variant(handle, eval_set, ref, config, v.opt_level, executor, ref if base else None)
    except Exception as err:  # noqa: BLE001 - failures are data in a sweep
        row.update(status="failed", error=f"measure: {error_text(err)}", measure_s=time.perf_counter() - t0)
        return row, None, None
    row.update(measured, status="ok", error=None, measure_s=time.perf_counter() - t0)
    return row, layers, handle.model_bytes


def measure_variant(
    handle: ModelHandle, eval_set: Any, ref: Any, config: SweepConfig, opt_level: str,
    executor: Any = None, known: Any = None,
) -> tuple[dict[str, Any], pd.DataFrame]:  # fmt: skip
    """Accuracy/fidelity (2 threads, batched), latency and per-layer profile (quiet machine), size, MACs.

    The profile runs at the variant's own ``opt_level`` (that of its latency), at most ``profile_runs`` runs,
    fewer when they would not fit twice the latency budget at the measured cost (``measure.model``).
    """
    m = measure_model(handle, eval_set, ref, threads=config.latency_threads, opt_level=opt_level,
                      budget_s=config.latency_budget_s, warmup=2, min_runs=5, profile_runs=config.profile_runs,
                      quiet=executor.quiet() if executor is not None else None, known=known)
    ev, lat, prof = m.evaluation, m.latency, m.profile
    params, macs, layers = _summary_columns(handle, prof.table)
    meta = handle.meta
    acc, fid = ev.accuracy, ev.fidelity
    size = handle.size_bytes
    row = {
        "executable": bool(meta.get("executable", True)),
        "top1": acc.top1 if acc else None, "top1_lo": acc.top1_lo if acc else None,
        "top1_hi": acc.top1_hi if acc else None, "top5": acc.top5 if acc else None,
        "n_eval": len(eval_set),
        **fidelity_record(fid),
        "latency_ms": lat.median_ms, "latency_p90_ms": lat.p90_ms, "latency_runs": lat.runs,
        "size_bytes": size, "effective_size_bytes": int(meta.get("effective_size_bytes") or size),
        "params": params, "macs": macs, "sparsity": meta.get("sparsity"),
        "compressed_bytes": meta.get("compressed_bytes"), "notes": meta.get("variant_note"),
        "meta_json": json.dumps(_meta_record(meta, lat, prof), default=str),
        **node_columns(),  # the machine that measured it (latencies compare only within one node_hw)
    }  # fmt: skip
    return row, layers


def _summary_columns(handle: ModelHandle, profile: pd.DataFrame) -> tuple[int | None, int | None, pd.DataFrame]:
    """Params, MACs and the per-node profile joined with the summary's per-layer columns."""
    s = summarize(handle)
    cols = [c for c in ("node", "op_type", "macs", "flops", "params", "weight_bytes") if c in s.layers.columns]
    timed = [c for c in ("node", "ms", "share", "provider", "kernels") if c in profile.columns]
    layers = s.layers[cols].merge(profile[timed], on="node", how="outer")
    if "op_type" in profile.columns:
        ops = profile.set_index("node")["op_type"]
        layers["op_type"] = layers["op_type"].fillna(layers["node"].map(ops))
    layers = layers.sort_values("ms", ascending=False, na_position="last", kind="stable")
    return int(s.params), int(s.macs), layers.reset_index(drop=True)


def _meta_record(meta: dict[str, Any], lat: Any, prof: Any) -> dict[str, Any]:
    """The variant's whole history/meta plus the measurement settings, as stored JSON."""
    record = jsonable(meta)
    record["latency"] = {k: getattr(lat, k, None) for k in ("threads", "opt_level", "runs", "budget_s", "warmup",
                                                            "batch_mode", "provider", "mean_ms", "clock")}  # fmt: skip
    record["profile"] = {"node_sum_ms": prof.node_sum_ms, "run_ms": prof.run_ms, "coverage": prof.coverage,
                         "runs": prof.runs, "opt_level": getattr(prof, "opt_level", None),
                         "mapped": "kernels" in prof.table.columns}  # fmt: skip
    return record


class _Reporter:
    """Progress with an ETA from the variants computed in this run (resumed ones cost nothing)."""

    def __init__(self, fn: ProgressFn | None, sid: str, total: int, done: int) -> None:
        self.fn, self.sid, self.total, self.done = fn, sid, total, done
        self.spent: list[float] = []
        self.t0 = time.perf_counter()

    def _emit(self, current: str) -> None:
        if self.fn is None:
            return
        eta = None
        if self.spent:
            elapsed = time.perf_counter() - self.t0
            eta = elapsed / len(self.spent) * (self.total - self.done)
        self.fn(SweepProgress(self.done / max(self.total, 1), current, self.done, self.total, eta, self.sid))

    def start(self, label: str) -> None:
        self._emit(label)

    def finished(self, label: str) -> None:
        self.done += 1
        self.spent.append(time.perf_counter())
        self._emit(label)

    def final(self) -> None:
        self.done = self.total
        self._emit("")
