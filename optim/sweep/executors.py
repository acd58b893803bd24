"""How a sweep builds its variants: pass composition, shared intermediate results, the executor.

A variant is built as prune → quantize; its optimisation level is the ONNX Runtime session level its
latency is measured at (ORT applies the same rewrite ``optimize_graph`` would save to a file). Pruned
models are shared by every bit-width of the same (kind, ratio) and quantised models by every
optimisation level, so each intermediate model is built once (memoised, one lock per key so parallel builders never duplicate work).

The executor is a small interface (on a cluster, :class:`optim.sweep.ray_executor.RayExecutor` runs whole
variants as Ray tasks through ``run_variants`` instead): ``map_builds(build, items)`` yields ``(item, result_or_exception)`` in submission order, and
``quiet()`` is a context manager the sweep holds while it times latency, during which no build
runs on this machine. The local executor builds ahead in a thread pool (passes spend their time in
ORT/torch native code, which releases the GIL) while accuracy is evaluated, and pauses for latency.

The local executor is written here because it is glue between our passes and our store on one machine;
scaling out uses Ray (optional ``cluster`` extra) rather than anything home-made.
"""

from __future__ import annotations

import hashlib
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from optim.analysis.labels import variant_label
from optim.errors import CancelledError, ConfigError, OptimError, runtime_reason
from optim.handle import ModelHandle
from optim.measure.budget import trim_memory
from optim.passes.base import PassContext, get_pass

T = TypeVar("T")
R = TypeVar("R")

# Which registered pass plays each role; tests swap in fakes through this mapping.
PASS_NAMES: dict[str, str] = {
    "structured": "prune_structured",
    "unstructured": "prune_unstructured",
    "quantize": "quantize",
}


@dataclass(frozen=True)
class Variant:
    """One grid point. ``prune_kind`` is "none" exactly when ``ratio`` is 0."""

    prune_kind: str
    ratio: float
    bits: int  # 0 = automatic per-layer mixed precision (size of uniform INT4)
    opt_level: str
    distilled: bool = False

    @property
    def key(self) -> str:
        return f"{self.prune_kind}:{self.ratio:g}:{self.bits}:{self.opt_level}" + (":kd" if self.distilled else "")

    def label(self, with_level: bool = False) -> str:
        return variant_label(self.prune_kind, self.ratio, self.bits, self.distilled,
                             self.opt_level if with_level else None)


def error_text(err: BaseException) -> str:
    """What a failed variant shows: the user-facing message, or (a defect of ours) one line naming the
    exception type, prefixed ``internal error``."""
    if isinstance(err, OptimError):
        return str(err)
    return f"internal error ({type(err).__name__}): {runtime_reason(err)}"


# --- executors -----------------------------------------------------------------------------------
class Executor(Protocol):
    def map_builds(self, build: Callable[[T], R], items: Sequence[T]) -> Iterator[tuple[T, R | BaseException]]:
        """Run ``build`` on each item; yield (item, result or the exception it raised) in item order."""
        ...

    def quiet(self) -> AbstractContextManager[None]:
        """While held, no build runs on the machine that measures latency."""
        ...


class SerialExecutor:
    """Builds each variant just before it is measured, in the calling thread."""

    def map_builds(self, build: Callable[[T], R], items: Sequence[T]) -> Iterator[tuple[T, R | BaseException]]:
        for item in items:
            try:
                yield item, build(item)
            except Exception as err:  # noqa: BLE001 - failures are data in a sweep
                yield item, err

    def quiet(self) -> AbstractContextManager[None]:
        return nullcontext()


class LocalExecutor:
    """Builds up to ``lookahead`` variants ahead in ``workers`` threads; builds pause during ``quiet()``."""

    def __init__(self, workers: int = 1, lookahead: int = 2) -> None:
        if workers < 1 or lookahead < 1:
            raise ConfigError(f"workers and lookahead must be ≥ 1, got {workers} and {lookahead}.")
        self.workers, self.lookahead = workers, lookahead
        self._gate = threading.Lock()

    def _guarded(self, build: Callable[[T], R], item: T) -> R:
        with self._gate:
            return build(item)

    def map_builds(self, build: Callable[[T], R], items: Sequence[T]) -> Iterator[tuple[T, R | BaseException]]:
        pending: deque[tuple[T, Future[R]]] = deque()
        todo = iter(items)
        with ThreadPoolExecutor(self.workers, thread_name_prefix="optim-build") as pool:
            try:
                while True:
                    while len(pending) < self.lookahead and (item := next(todo, _END)) is not _END:
                        pending.append((item, pool.submit(self._guarded, build, item)))
                    if not pending:
                        return
                    item, fut = pending.popleft()
                    err = fut.exception()
                    yield item, (err if err is not None else fut.result())
            finally:  # consumer stopped early (cancel): drop what has not started
                for _, fut in pending:
                    fut.cancel()

    @contextmanager
    def quiet(self) -> Iterator[None]:
        with self._gate:
            yield


_END: Any = object()
BUILD_AHEAD_MAX_BYTES = 128 * 2**20


def fitted(executor: Any, model_bytes: int) -> Any:
    """The executor a sweep of a ``model_bytes`` model uses: ``executor`` (default: a :class:`LocalExecutor`), but a
    local one building ahead becomes one that builds each variant only after the last is measured once the model
    exceeds ``BUILD_AHEAD_MAX_BYTES``: a build's working set (torch copies, quantiser, candidate sessions) would
    stack on the measured variant's sessions (BERT-base, 342 MB: 4.4–5.0 GB peak against 1 GB + 8× model)."""
    executor = executor if executor is not None else LocalExecutor()
    if isinstance(executor, LocalExecutor) and executor.lookahead > 1 and model_bytes > BUILD_AHEAD_MAX_BYTES:
        return LocalExecutor(executor.workers, lookahead=1)
    return executor


# --- building ------------------------------------------------------------------------------------
def make_config(pass_name: str, **values: Any) -> Any:
    """The registered pass's config built from explicit field values: a key the config has no field for is a
    ConfigError naming it, and the config's own checks reject inapplicable combinations (never dropped)."""
    return get_pass(pass_name).make_config(**values)


FINGERPRINT_PACKAGES = ("io", "graph", "measure", "passes", "analysis", "sweep", "hardware")


def engine_fingerprint(optim_dir: Path | None = None) -> str:
    """sha256 of every source and data file of the packages that shape a stored number.

    Part of a sweep's identity so that results built by older code are not returned as if current: an
    edit anywhere in io, graph, measure, passes, analysis, sweep or the hardware model (or ``handle.py``)
    starts a new sweep. Reading the files is a few ms; importing them would cost a torch import.
    """
    optim_dir = optim_dir or Path(__file__).resolve().parent.parent
    files = [optim_dir / "handle.py"]
    for pkg in FINGERPRINT_PACKAGES:
        files += [p for p in (optim_dir / pkg).rglob("*") if p.suffix in (".py", ".toml", ".json") and p.is_file()]
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(path.relative_to(optim_dir).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def quant_settings(bits: int, has_calib: bool, quant_format: str) -> dict[str, Any] | None:
    """Quantize-pass settings for a bit-width (None for 32 = no quantization)."""
    if bits == 32:
        return None
    if bits == 16:
        return {"mode": "fp16"}
    if bits == 8:
        if quant_format == "auto":
            return {"mode": "int8_auto"}  # without calibration data it searches the dynamic configurations
        return {"mode": "int8_static", "quant_format": quant_format} if has_calib else {"mode": "int8_dynamic"}
    if bits == 4:
        return {"mode": "int4"}
    return {"mode": "fake", "bits": bits}


class VariantBuilder:
    """Builds variants of one base model, sharing pruned and quantised intermediates between them."""

    def __init__(self, base: ModelHandle, calib: Any, importance: str, quant_format: str,
                 should_cancel: Callable[[], bool] | None = None, train: Any = None,
                 distill: dict[str, Any] | None = None) -> None:  # fmt: skip
        self.base, self.calib = base, calib
        self.importance, self.quant_format = importance, quant_format
        self.distill_settings = distill or {}
        self.ctx = PassContext(calib=calib, train=train if train is not None else calib, teacher=base,
                               should_cancel=should_cancel)  # fmt: skip
        self._memo: dict[tuple[Any, ...], ModelHandle | Exception] = {}
        self._locks: dict[tuple[Any, ...], threading.Lock] = {}
        self._lock = threading.Lock()
        self._uses: Counter[tuple[Any, ...]] | None = None
        self._int8_choice = ""  # the INT8 search's choice on the unpruned model (pruned variants reuse it)

    @staticmethod
    def model_keys(v: Variant) -> list[tuple[Any, ...]]:
        """Memo keys of the intermediate models building ``v`` goes through."""
        keys: list[tuple[Any, ...]] = []
        if v.ratio > 0:
            keys.append(("prune", v.prune_kind, v.ratio))
            if v.distilled:
                keys.append(("distill", v.prune_kind, v.ratio))
        if v.bits == 0:
            keys.append(("auto", v.prune_kind, v.ratio, v.distilled))
        elif v.bits != 32:
            keys.append(("quant", v.prune_kind, v.ratio, v.bits, v.distilled))
        return keys

    def plan(self, variants: Sequence[Variant]) -> None:
        """Announce the variants still to build, so intermediates can be dropped after their last use."""
        with self._lock:
            self._uses = Counter(k for v in variants for k in self.model_keys(v))

    def release(self, v: Variant) -> None:
        """``v`` is measured and stored: forget intermediate models no announced variant needs any more
        (a sweep would otherwise hold every pruned and quantised model until it ends)."""
        with self._lock:
            if self._uses is None:
                return
            for k in self.model_keys(v):
                self._uses[k] -= 1
                if self._uses[k] <= 0:
                    self._memo.pop(k, None)
        trim_memory()

    def _once(self, key: tuple[Any, ...], make: Callable[[], ModelHandle]) -> ModelHandle:
        with self._lock:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._memo:
                self.ctx.check_cancel()
                try:
                    self._memo[key] = make()
                except CancelledError:
                    raise
                except Exception as err:  # noqa: BLE001 - remembered: every variant built on it fails alike
                    self._memo[key] = err
            result = self._memo[key]
        if isinstance(result, BaseException):
            raise result
        return result

    def pruned(self, kind: str, ratio: float, distilled: bool = False) -> ModelHandle:
        if ratio == 0:
            return self.base
        if distilled:
            cfg = make_config("distill", **self.distill_settings)
            return self._once(("distill", kind, ratio),
                              lambda: get_pass("distill").run(self.pruned(kind, ratio), cfg, self.ctx))
        if kind == "auto":
            return self._once(("prune", kind, ratio), lambda: self.auto_pruned(ratio))
        settings: dict[str, Any] = {"ratio": ratio}
        if kind == "structured":  # unstructured pruning is by magnitude: it has no importance criterion
            settings["importance"] = self.importance
        cfg = make_config(PASS_NAMES[kind], **settings)
        return self._once(("prune", kind, ratio), lambda: get_pass(PASS_NAMES[kind]).run(self.base, cfg, self.ctx))

    def _sensitivity_data(self) -> Any:
        data = self.calib if self.calib is not None else self.ctx.train
        if data is None:
            raise ConfigError("Automatic per-layer plans need calibration data for their sensitivity analysis.")
        return data.subset(min(len(data), 256), seed=1)

    def auto_pruned(self, ratio: float) -> ModelHandle:
        """Structured pruning with per-layer ratios from a sensitivity analysis (``optim.analysis.plans``), at the
        same first-order MACs budget as uniform pruning at ``ratio`` (each layer keeps 1 − r_i of its MACs)."""
        from optim.analysis.plans import pruning_plan
        from optim.analysis.sensitivity import analyze

        def sens() -> Any:
            sub = self._sensitivity_data()
            return analyze(self.base, sub.x, sub.y, quant_bits=(), should_cancel=self.ctx.should_cancel,
                           feeds=getattr(sub, "feeds", None), constants=getattr(sub, "constants", None))

        table = self._once(("sensitivity", "prune"), sens)
        plan = pruning_plan(self.base, table, macs_fraction=1 - ratio)
        cfg = make_config(PASS_NAMES["structured"], ratio=0.0, importance=self.importance,
                          layer_ratios=tuple(sorted(plan.choices.items())))
        out = get_pass(PASS_NAMES["structured"]).run(self.base, cfg, self.ctx)
        meta = {"prune_ratio": ratio, "prune_kind": "auto", "pruning_plan": plan.choices}
        return out.derive(out.model, f"auto per-layer plan (budget = uniform {ratio:.0%})", **meta)

    def quantized(self, kind: str, ratio: float, bits: int, distilled: bool = False) -> ModelHandle:
        if bits == 0:
            return self._once(("auto", kind, ratio, distilled),
                              lambda: self.mixed_precision(self.pruned(kind, ratio, distilled)))
        settings = quant_settings(bits, self.calib is not None, self.quant_format)
        if settings is None:
            return self.pruned(kind, ratio, distilled)

        def make() -> ModelHandle:
            extra = {}
            if settings.get("mode") == "int8_auto" and ratio > 0 and self._int8_choice:
                extra["search_only"] = (self._int8_choice,)  # the unpruned model's search result, reused
            cfg = make_config(PASS_NAMES["quantize"], **settings, **extra)
            out = get_pass(PASS_NAMES["quantize"]).run(self.pruned(kind, ratio, distilled), cfg, self.ctx)
            chosen = (out.meta.get("int8_search") or {}).get("chosen")
            if ratio == 0 and chosen:
                self._int8_choice = chosen.split(" + ")[0]  # the format/type choice; layer lists are per model
            return out

        return self._once(("quant", kind, ratio, bits, distilled), make)

    def mixed_precision(self, handle: ModelHandle) -> ModelHandle:
        """Per-layer bit-widths from a sensitivity analysis on the calibration data, at the packed size of
        uniform INT4 (``optim.analysis.plans``); a simulated variant."""
        from optim.analysis.plans import apply_bit_plan, bit_plan, uniform_bytes
        from optim.analysis.sensitivity import analyze

        sub = self._sensitivity_data()
        sens = analyze(handle, sub.x, sub.y, prune_levels=(), quant_bits=(8, 4, 3, 2), should_cancel=self.ctx.should_cancel,
                       feeds=getattr(sub, "feeds", None), constants=getattr(sub, "constants", None))  # fmt: skip
        plan = bit_plan(handle, sens, uniform_bytes(handle, 4), bits_choices=(8, 4, 3, 2))
        return apply_bit_plan(handle, plan)

    def build(self, v: Variant) -> ModelHandle:
        """prune (→ distil) → quantize. The optimisation level is applied by ONNX Runtime when the latency
        session opens (the same rewrite ``optimize_graph`` saves to a file), so the stored artifact stays
        portable and its node names stay those of the ONNX graph the profile and summary describe."""
        handle = self.quantized(v.prune_kind, v.ratio, v.bits, v.distilled)
        trim_memory()  # the build's torch/ORT garbage goes back to the OS before the variant is measured
        self.ctx.check_cancel()
        return handle


def is_cancel(err: BaseException) -> bool:
    return isinstance(err, CancelledError)
