"""Fake passes for sweep tests: fast, deterministic, and they log each build to a counter file.

Used in-process (registered with monkeypatch), by the SIGKILL test's child process and by Ray workers
(``register`` is their setup hook). ``$OPTIM_FAKE_CONTROL`` names a folder whose files steer a running fake:
``delay`` (seconds per call), ``crash-<mode>.once`` (the quantize call for that mode ends its process once; the
file is removed) and ``crash-<mode>.always``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from onnx import numpy_helper

from optim.errors import PassUnavailableError
from optim.handle import ModelHandle
from optim.passes import base

FAKE_NAMES = {"structured": "fake_prune_s", "unstructured": "fake_prune_u", "quantize": "fake_quantize"}


def _log(event: str) -> None:
    path = os.environ.get("OPTIM_FAKE_COUNTER")
    if path:
        with Path(path).open("a") as f:
            f.write(event + "\n")
            f.flush()
    delay = float(os.environ.get("OPTIM_FAKE_DELAY", "0"))
    control = os.environ.get("OPTIM_FAKE_CONTROL")
    if control and (Path(control) / "delay").exists():
        delay = float((Path(control) / "delay").read_text())
    if delay:
        time.sleep(delay)


def _maybe_crash(mode: str) -> None:
    control = os.environ.get("OPTIM_FAKE_CONTROL")
    if not control:
        return
    once, always = Path(control) / f"crash-{mode}.once", Path(control) / f"crash-{mode}.always"
    if always.exists():
        os._exit(3)
    try:
        once.unlink()
    except FileNotFoundError:
        return
    os._exit(3)


def _map_weights(handle: ModelHandle, fn) -> object:  # noqa: ANN001
    m = handle.copy_model()
    for init in m.graph.initializer:
        a = numpy_helper.to_array(init)
        if a.ndim >= 2:
            init.CopyFrom(numpy_helper.from_array(fn(a.copy()).astype(a.dtype), init.name))
    return m


@dataclass(frozen=True)
class FakePruneConfig:
    ratio: float = 0.0
    importance: str = "l2"


def fake_prune(kind: str):  # noqa: ANN201
    def run(handle: ModelHandle, cfg: FakePruneConfig, ctx: base.PassContext | None = None) -> ModelHandle:
        _log(f"prune {kind} {cfg.ratio:g}")

        def zero_smallest(a: np.ndarray) -> np.ndarray:
            flat = a.reshape(-1)
            flat[np.argsort(np.abs(flat))[: int(len(flat) * cfg.ratio)]] = 0
            return flat.reshape(a.shape)

        return handle.derive(_map_weights(handle, zero_smallest), f"fake prune {kind} {cfg.ratio}",
                             prune_ratio=cfg.ratio, prune_kind=kind, sparsity=cfg.ratio)  # fmt: skip

    return run


@dataclass(frozen=True)
class FakeQuantConfig:
    mode: str = "int8_static"
    bits: int = 4
    quant_format: str = "qdq"


def fake_quantize(handle: ModelHandle, cfg: FakeQuantConfig, ctx: base.PassContext | None = None) -> ModelHandle:
    _log(f"quantize {cfg.mode} {cfg.bits}")
    _maybe_crash(cfg.mode)
    if cfg.mode == "int4":
        raise PassUnavailableError("fake int4 is not available for this model: try 8 bits.")
    bits = {"fp16": 16, "int8_static": 8, "int8_dynamic": 8}.get(cfg.mode, cfg.bits)
    levels = 2 ** (bits - 1) - 1

    def rounded(a: np.ndarray) -> np.ndarray:
        scale = max(float(np.abs(a).max()), 1e-8) / levels
        return np.round(a / scale) * scale

    size = handle.size_bytes * bits // 32
    return handle.derive(_map_weights(handle, rounded), f"fake quantize {cfg.mode}", bits=bits,
                         executable=cfg.mode != "fake", effective_size_bytes=size,
                         calibrated=ctx is not None and ctx.calib is not None)  # fmt: skip


def specs() -> dict[str, base.PassSpec]:
    return {
        FAKE_NAMES["structured"]: base.PassSpec(FAKE_NAMES["structured"], "t", "d", FakePruneConfig, fake_prune("structured")),
        FAKE_NAMES["unstructured"]: base.PassSpec(FAKE_NAMES["unstructured"], "t", "d", FakePruneConfig, fake_prune("unstructured")),
        FAKE_NAMES["quantize"]: base.PassSpec(FAKE_NAMES["quantize"], "t", "d", FakeQuantConfig, fake_quantize),
    }  # fmt: skip


def register() -> None:
    """Ray worker setup hook: the fakes by name, and only them (the worker skips importing torch-based passes;
    the driver's task says which passes to use)."""
    base._REGISTRY.update(specs())
    base._load_all = lambda: None


def install_globally() -> None:
    """For a child process: register the fakes and point the sweep at them."""
    from optim.sweep import executors as sweep_exec

    base._REGISTRY.update(specs())
    base._load_all = lambda: None  # the child needs only the fakes: skip importing torch-based passes
    sweep_exec.PASS_NAMES.update(FAKE_NAMES)
