"""What a Ray worker runs for :mod:`optim.sweep.ray_executor`: build stages, whole variants, the node gate.

Everything here runs in a Ray worker process on some node; it gets plain rows and model bytes back to the
driver and never touches the store. ``build_stage`` makes an intermediate model shared by several variants
(pruned, distilled, or quantised when several optimisation levels share it); ``run_variant`` does the last
build step, then evaluates, times and profiles through :func:`optim.sweep.run.variant_row`, as on one
machine. :class:`NodeGate` is the per-node form of the local executor's ``quiet()``.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

from optim.errors import CancelledError, OptimError
from optim.handle import ModelHandle
from optim.passes.base import get_pass
from optim.sweep import executors as sweep_exec
from optim.sweep.executors import Variant, VariantBuilder, engine_fingerprint, error_text, make_config
from optim.sweep.run import SweepWork, variant_row

T = TypeVar("T")
R = TypeVar("R")
LOCK_DIR = Path(tempfile.gettempdir())


class NodeGate:
    """Per-node rule: timing runs alone on its node (exclusive ``flock``) while other tasks build or evaluate
    (shared). A turnstile file makes a waiting timer block new work so it never starves."""

    def __init__(self, mode: str = "node", lock_dir: Path = LOCK_DIR) -> None:
        self.mode = mode
        self._turn, self._rw = lock_dir / "optim-ray-turn.lock", lock_dir / "optim-ray-quiet.lock"
        self._fd: int | None = None
        self.wait_s = self.quiet_s = 0.0  # seconds waiting for the node to go quiet / timing alone on it

    @contextmanager
    def working(self) -> Iterator[None]:
        """Build/evaluate section (shared with other workers on this node; ``quiet()`` may end it early)."""
        if self.mode != "node":
            yield
            return
        self._fd = os.open(self._rw, os.O_RDWR | os.O_CREAT, 0o666)
        try:  # a task cancelled while it waits for the turn must not keep its shared lock (the node would hang)
            with self._holding(self._turn, fcntl.LOCK_EX):
                fcntl.flock(self._fd, fcntl.LOCK_SH)
            yield
        finally:
            self._release()

    @contextmanager
    def quiet(self) -> Iterator[None]:
        """Timing section: waits for the node's builds/evaluations in progress; none starts meanwhile."""
        if self.mode != "node":
            yield
            return
        self._release()
        fd = os.open(self._rw, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            t0 = _now()
            with self._holding(self._turn, fcntl.LOCK_EX):
                fcntl.flock(fd, fcntl.LOCK_EX)
            t1 = _now()
            self.wait_s += t1 - t0
            try:
                yield
            finally:
                self.quiet_s += _now() - t1
        finally:
            os.close(fd)  # closing drops the lock

    def _release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    @contextmanager
    def _holding(self, path: Path, how: int) -> Iterator[None]:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, how)
            yield
        finally:
            os.close(fd)


@dataclass(frozen=True)
class RemoteWork:
    """The sweep's shared inputs as sent to the object store once: the work, the pass names the driver uses
    (tests swap in fakes), the driver's engine fingerprint and the timing rule."""

    work: SweepWork
    pass_names: dict[str, str]
    fingerprint: str
    quiet: str = "node"


@dataclass(frozen=True)
class Built:
    """An intermediate model (or the message of the error that stopped it) and the seconds charged with it."""

    handle: ModelHandle | None
    seconds: float = 0.0
    error: str | None = None


@lru_cache(maxsize=1)
def worker_fingerprint() -> str:
    return engine_fingerprint()


def _builder(rw: RemoteWork, base: ModelHandle) -> VariantBuilder:
    sweep_exec.PASS_NAMES.update(rw.pass_names)  # this worker process builds what the driver asked for
    w, cfg = rw.work, rw.work.config
    distill = {"epochs": cfg.distill_epochs, "budget_s": cfg.distill_budget_s}
    return VariantBuilder(base, w.calib, cfg.importance, cfg.quant_format, train=w.train, distill=distill)


def _apply(rw: RemoteWork, parent: ModelHandle, step: tuple[Any, ...]) -> ModelHandle:
    """One build step on ``parent``: ("prune", kind, ratio), ("distill",) or ("quant", bits)."""
    if step[0] == "prune":
        return _builder(rw, parent).pruned(step[1], step[2])
    if step[0] == "distill":  # the teacher is the sweep's original model
        builder = _builder(rw, rw.work.handle)
        return get_pass("distill").run(parent, make_config("distill", **builder.distill_settings), builder.ctx)
    # A builder whose base is the parent: its unpruned variant at ``bits`` is the parent quantised (or, for 0,
    # given per-layer bit-widths), so quantisation goes through the same code as on one machine.
    return _builder(rw, parent).quantized("none", 0.0, step[1])


def build_stage(rw: RemoteWork, parent: Built, step: tuple[Any, ...], charge_parent: bool) -> Built:
    """Ray task: an intermediate model shared by several variants (errors come back as data)."""
    if parent.error is not None:
        return parent
    gate = NodeGate(rw.quiet)
    with gate.working():
        t0 = _now()
        try:
            out = _apply(rw, parent.handle, step)
        except CancelledError:
            raise
        except Exception as err:  # noqa: BLE001 - every variant built on it fails alike, with this message
            return Built(None, error=error_text(err))
    return Built(out, _now() - t0 + (parent.seconds if charge_parent else 0.0))


def run_variant(rw: RemoteWork, parent: Built, v: Variant, quant_step: bool, charge_parent: bool) -> dict[str, Any]:
    """Ray task: build (the last step), evaluate, time and profile one variant; returns plain data."""
    gate, start = NodeGate(rw.quiet), _now()
    with gate.working():
        built: tuple[ModelHandle, float] | BaseException
        if parent.error is not None:
            built = OptimError(parent.error)
        else:
            t0 = _now()
            try:
                handle = _apply(rw, parent.handle, ("quant", v.bits)) if quant_step else parent.handle
                built = (handle, _now() - t0 + (parent.seconds if charge_parent else 0.0))
            except CancelledError:
                raise
            except Exception as err:  # noqa: BLE001 - failures are data in a sweep
                built = err
        w = rw.work
        row, layers, model_bytes = variant_row(v, built, w.eval_set, w.ref, w.config, gate)
    timing = {"task_s": _now() - start, "wait_s": gate.wait_s, "quiet_s": gate.quiet_s}
    return {"row": row, "layers": None if layers is None else layers.to_dict("split"), "model_bytes": model_bytes,
            "fingerprint": worker_fingerprint(), "timing": timing}  # fmt: skip


def _now() -> float:
    return time.perf_counter()


def call(fn: Callable[[T], R], item: T) -> R:
    return fn(item)
