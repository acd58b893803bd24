"""Pass registry and the context a pass runs in.

Each technique lives in its own module under ``optim/passes`` and registers itself by name with
:func:`register`. A pass is a pure function ``run(handle, config, ctx) -> handle`` over a frozen
config dataclass; the UI builds its controls from the config's fields (``metadata["help"]``,
``metadata["choices"]`` or ``metadata["min"]``/``metadata["max"]``).
"""

from __future__ import annotations

import dataclasses
import importlib
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

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

    def make_config(self, **values: Any) -> Any:
        """The pass's config from explicit field values; a key the config has no field for is a ConfigError
        naming it (never dropped). Cross-field rules are the config's own ``__post_init__``."""
        names = [f.name for f in self.fields()]
        unknown = [k for k in values if k not in names]
        if unknown:
            raise ConfigError(f"{self.name}: no setting {', '.join(map(repr, unknown))}; its settings are "
                              f"{', '.join(names)}.")
        return self.config_cls(**values)


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


def literal_choices(hint: Any) -> tuple[Any, ...] | None:
    """The allowed values of a ``Literal[...]`` (or ``Literal[...] | None``) annotation, else None."""
    if typing.get_origin(hint) is Literal:
        return typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        inner = [literal_choices(a) for a in typing.get_args(hint) if a is not type(None)]
        if len(inner) == 1 and inner[0] is not None:
            return inner[0]
    return None


@lru_cache(maxsize=64)
def _literal_fields(cls: type) -> tuple[tuple[str, tuple[Any, ...], bool], ...]:
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        choices = literal_choices(hints[f.name])
        if choices is not None:
            out.append((f.name, choices, type(None) in typing.get_args(hints[f.name])))
    return tuple(out)


def check_literals(config: Any) -> None:
    """Raise ConfigError naming the field when a ``Literal``-typed field of a config holds another value."""
    for name, choices, optional in _literal_fields(type(config)):
        value = getattr(config, name)
        if not (optional and value is None):
            check_choice(name, value, choices)


def check_applies(config: Any, mode_field: str, applies: dict[str, tuple[Any, ...]],
                  defaults: dict[str, Any]) -> None:
    """Fields that only apply to some values of ``mode_field`` default to None: setting one under another mode
    is a ConfigError naming it; under a mode it applies to, a None takes its default from ``defaults``."""
    mode = getattr(config, mode_field)
    for name, modes in applies.items():
        value = getattr(config, name)
        if mode in modes:
            if value is None:
                object.__setattr__(config, name, defaults[name])
        elif value is not None:
            raise ConfigError(f"{name} does not apply to {mode_field} {mode!r} (only to "
                              f"{', '.join(map(repr, modes))}): leave it unset.")


# Pass modules register themselves on import; list them here once they exist.
PASS_MODULES = (
    "optim.passes.prune_structured",
    "optim.passes.prune_unstructured",
    "optim.passes.quantize",
    "optim.passes.optimize_graph",
    "optim.passes.distill",
)


def _load_all() -> None:
    """Import the pass modules (torch and ORT tools): only when a pass is first asked for, so that importing the
    registry (the sweep, the api) stays cheap."""
    for mod in PASS_MODULES:
        importlib.import_module(mod)
