"""Pass registry and the context a pass runs in.

Each technique lives in its own module under ``optim/passes`` and registers itself by name with
:func:`register`. A pass is a pure function ``run(handle, config, ctx) -> handle`` over a frozen
config dataclass; the UI builds its controls from the config's fields (``metadata["help"]``,
``metadata["choices"]`` or ``metadata["min"]``/``metadata["max"]``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from optim.errors import CancelledError, ConfigError
from optim.handle import ModelHandle


@dataclass
class PassContext:
    """What a pass may need beyond its config: data and the progress/cancel hooks of the caller."""

    calib: Any = None  # optim.io.data.Dataset used for calibration (INT8 static), or None
    train: Any = None  # optim.io.data.Dataset used for fine-tuning / distillation, or None
    teacher: Any = None  # ModelHandle of the original model (distillation, fidelity), or None
    progress: Callable[[float, str], None] | None = None
    should_cancel: Callable[[], bool] | None = None

    def report(self, fraction: float, message: str) -> None:
        if self.progress is not None:
            self.progress(min(max(fraction, 0.0), 1.0), message)

    def check_cancel(self) -> None:
        if self.should_cancel is not None and self.should_cancel():
            raise CancelledError("Cancelled by the user. Finished variants are kept; start again to resume.")


RunFn = Callable[[ModelHandle, Any, PassContext | None], ModelHandle]


@dataclass(frozen=True)
class PassSpec:
    name: str
    title: str
    description: str
    config_cls: type
    run: RunFn

    def fields(self) -> list[dataclasses.Field]:
        return list(dataclasses.fields(self.config_cls))


_REGISTRY: dict[str, PassSpec] = {}


def register(name: str, config_cls: type, title: str, description: str) -> Callable[[RunFn], RunFn]:
    """Decorator: ``@register("quantize", QuantizeConfig, "Quantization", "...")`` on the run function."""

    def deco(fn: RunFn) -> RunFn:
        _REGISTRY[name] = PassSpec(name, title, description, config_cls, fn)
        return fn

    return deco


def get_pass(name: str) -> PassSpec:
    _load_all()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"Unknown pass {name!r}. Available: {', '.join(sorted(_REGISTRY))}.") from None


def list_passes() -> list[PassSpec]:
    _load_all()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def check_range(name: str, value: float, lo: float, hi: float) -> None:
    """Raise ConfigError naming the field when ``value`` is outside [lo, hi]."""
    if not (lo <= value <= hi):
        raise ConfigError(f"{name} must be between {lo} and {hi}, got {value}.")


def check_choice(name: str, value: Any, choices: list[Any] | tuple[Any, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {list(choices)}, got {value!r}.")


# Pass modules register themselves on import; list them here once they exist.
PASS_MODULES = (
    "optim.passes.prune_structured",
    "optim.passes.prune_unstructured",
    "optim.passes.quantize",
    "optim.passes.optimize_graph",
    "optim.passes.distill",
)


def _load_all() -> None:
    import importlib

    for mod in PASS_MODULES:
        importlib.import_module(mod)
