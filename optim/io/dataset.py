"""The :class:`Dataset` value object: a model's inputs (one array, or one per input by name) and labels."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from optim.errors import DataFormatError

__all__ = ["Dataset"]


@dataclass(frozen=True, eq=False)
class Dataset:
    """Inputs ``x`` (float32, ``(N, *model_input_shape[1:])``, or integer token ids), optional int64 labels ``y``.

    Multi-input data (an ``.npz`` with one array per model input): ``x`` feeds the input named ``x_name`` (None:
    the model's first input) and ``feeds`` holds the arrays of further inputs by name, N rows each; ``constants``
    the values of inputs without a sample axis (a 0-d sample rate or threshold), fed whole in every call."""

    x: np.ndarray
    y: np.ndarray | None
    name: str
    class_names: list[str] | None = None
    x_name: str | None = None
    feeds: dict[str, np.ndarray] | None = None
    constants: dict[str, np.ndarray] | None = None  # inputs without a sample axis (a 0-d ``sr``): whole, every call

    def __post_init__(self) -> None:
        if self.x.ndim < 1:
            raise DataFormatError(f"Dataset {self.name!r}: x must have a sample axis, got a scalar.")
        if self.y is not None and len(self.y) != len(self.x):
            raise DataFormatError(
                f"Dataset {self.name!r}: {len(self.x)} inputs but {len(self.y)} labels; they must match."
            )
        for key, arr in (self.feeds or {}).items():
            if arr.ndim < 1 or len(arr) != len(self.x):
                raise DataFormatError(f"Dataset {self.name!r}: array {key!r} has {len(arr) if arr.ndim else 0} rows "
                                      f"but {self.x_name or 'x'!r} has {len(self.x)}; every input array needs one "
                                      "row per sample (the same first dimension).")

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @cached_property
    def content_hash(self) -> str:
        """sha256 (hex) over shapes, dtypes and bytes of ``x``, ``y``, the named input arrays and constants."""
        h = hashlib.sha256()
        named = [(k, v) for k, v in sorted((self.feeds or {}).items())]
        if self.x_name is not None or named:  # single-array sets keep the hash they always had
            h.update(f"named:{self.x_name}:{[k for k, _ in named]}".encode())
        if self.constants:
            h.update(f"constants:{sorted(self.constants)}".encode())
            named += sorted(self.constants.items())
        for arr in (self.x, self.y, *(v for _, v in named)):
            if arr is None:
                h.update(b"none")
                continue
            a = np.ascontiguousarray(arr)
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(a.tobytes())
        return h.hexdigest()

    def subset(self, n: int, seed: int = 0) -> Dataset:
        """``n`` samples drawn without replacement (seeded; sorted order); the whole set if ``n >= len``."""
        if n >= len(self):
            return self
        idx = np.sort(np.random.default_rng(seed).choice(len(self), size=max(n, 0), replace=False))
        return self.take(idx, f"{self.name}[{n}]")

    def take(self, idx: np.ndarray, name: str | None = None) -> Dataset:
        """The samples at integer positions ``idx`` (every per-sample array indexed alike)."""
        idx = np.asarray(idx, dtype=np.int64)
        y = None if self.y is None else self.y[idx]
        feeds = None if self.feeds is None else {k: v[idx] for k, v in self.feeds.items()}
        return Dataset(x=self.x[idx], y=y, name=name or self.name, class_names=self.class_names,
                       x_name=self.x_name, feeds=feeds, constants=self.constants)
