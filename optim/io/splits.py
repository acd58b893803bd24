"""Data for distillation kept apart from the data the student is judged on.

An upload brings one data set (labelled or not). To distil on it, :func:`split_for_distillation` splits it,
seeded, into a distillation split and a held-out split that becomes the sweep's evaluation data; or the user
gives a separate training file (:func:`separate_training`). Either way every distillation row whose input
equals a held-out input is dropped (:func:`apart`; the sweep applies it too), so accuracy — or fidelity without
labels — is always measured on inputs the student never saw. The split is stated in one line
(:attr:`DistillSplit.sentence`: "N for distillation, M held out, seed S").
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from optim.errors import ConfigError
from optim.io.data import Dataset

__all__ = ["DEFAULT_SEED", "HELD_OUT_FRACTION", "MAX_DISTILL", "MIN_DISTILL", "MIN_HELD_OUT", "DistillSplit",
           "apart", "distillation_data", "row_keys", "separate_training", "split_for_distillation"]

HELD_OUT_FRACTION = 0.3  # share of the uploaded data kept for evaluation
MIN_DISTILL = 64  # rows to distil on (the pass keeps a tenth of them for early stopping)
MIN_HELD_OUT = 32  # rows to evaluate the student on
MAX_DISTILL = 8192  # the distillation split is capped; the remaining rows are held out as well
DEFAULT_SEED = 0


@dataclass(frozen=True, eq=False)
class DistillSplit:
    """The distillation data (``train``) and the held-out evaluation data (``test``) of one sweep."""

    train: Dataset
    test: Dataset
    seed: int | None  # None: the training data is a separate file
    dropped: int = 0  # distillation rows removed because their input is also a held-out input
    train_name: str = ""

    @property
    def sentence(self) -> str:
        """One line for the page and the CLI: what the student learns from and what it is judged on."""
        metric = "accuracy" if self.test.y is not None else "fidelity to the original"
        if self.seed is None:
            head = (f"{len(self.train)} for distillation (from {self.train_name or 'the training file'}), "
                    f"{len(self.test)} held out (the evaluation data)")
        else:
            head = f"{len(self.train)} for distillation, {len(self.test)} held out, seed {self.seed}"
        drop = f"; {self.dropped} distillation rows equal to held-out rows dropped" if self.dropped else ""
        return f"{head}{drop}: the student never sees the held-out rows; {metric} is measured on them."


def row_keys(x: np.ndarray, *more: np.ndarray) -> list[bytes]:
    """A digest of each sample's bytes (equal inputs give equal keys); ``more``: further per-sample arrays of the
    same rows (a multi-input sample is equal only when every one of its arrays is)."""
    arrays = [np.ascontiguousarray(a) for a in (x, *more)]
    keys = []
    for i in range(len(arrays[0])):
        h = hashlib.blake2b(digest_size=16)
        for a in arrays:
            h.update(a[i].tobytes())
        keys.append(h.digest())
    return keys


def _named_rows(ds: Dataset) -> dict[str, np.ndarray]:
    """Every per-sample array of ``ds`` by the input it feeds (``x`` under ``x_name`` or "")."""
    return {ds.x_name or "": ds.x, **(ds.feeds or {})}


def apart(train: Dataset, test: Dataset) -> tuple[Dataset, int]:
    """``train`` without the rows whose input is also in ``test``; (that data, how many were dropped).

    Multi-input data (``feeds``) compares the arrays both sets give for the same inputs (same sample shape and
    dtype): a training row whose token ids *and* masks equal a held-out row's is dropped."""
    a, b = _named_rows(train), _named_rows(test)
    common = [k for k in a if k in b and a[k].shape[1:] == b[k].shape[1:] and a[k].dtype == b[k].dtype]
    if not common or (a.keys() == b.keys() and len(common) < len(a)):
        return train, 0  # different shapes or dtypes cannot hold equal rows
    held = set(row_keys(*(b[k] for k in common)))
    keep = np.array([k not in held for k in row_keys(*(a[k] for k in common))], dtype=bool)
    if keep.all():
        return train, 0
    return train.take(np.flatnonzero(keep)), int((~keep).sum())


def distillation_data(train: Dataset | None, test: Dataset) -> Dataset:
    """What a distillation sweep trains on: ``train`` without the rows also in ``test``; ConfigError without it."""
    if train is None or not len(train):
        raise ConfigError("Distillation needs training inputs kept apart from the evaluation data: split the data "
                          "(optim.io.splits) or give a separate training file.")
    return apart(train, test)[0]


def _too_little(n: int) -> ConfigError:
    return ConfigError(f"Distillation needs at least {MIN_DISTILL + MIN_HELD_OUT} samples ({MIN_DISTILL} to distil "
                       f"on, {MIN_HELD_OUT} held out to judge the student on); this data has {n}: add samples, or "
                       "give a separate training file.")


def split_for_distillation(data: Dataset, seed: int = DEFAULT_SEED,
                           held_out: float = HELD_OUT_FRACTION) -> DistillSplit:
    """Split ``data`` (seeded permutation) into a distillation split and a held-out split.

    The held-out split has ``held_out`` of the rows (at least ``MIN_HELD_OUT``), the distillation split the rest,
    at most ``MAX_DISTILL`` (rows beyond it are held out too); both keep the data's order. Distillation rows
    equal to a held-out row are dropped. Too little data → ConfigError saying how much is needed."""
    if not 0.05 <= held_out <= 0.9:
        raise ConfigError(f"The held-out share must be between 0.05 and 0.9, got {held_out}.")
    n = len(data)
    if n < MIN_DISTILL + MIN_HELD_OUT:
        raise _too_little(n)
    n_test = max(MIN_HELD_OUT, int(round(n * held_out)))
    n_train = min(n - n_test, MAX_DISTILL)
    if n_train < MIN_DISTILL:
        raise _too_little(n)
    order = np.random.default_rng(seed).permutation(n)
    tr, te = np.sort(order[:n_train]), np.sort(order[n_train:])
    test = data.take(te, f"{data.name} (held out, seed {seed})")
    train, dropped = apart(data.take(tr, f"{data.name} (distillation, seed {seed})"), test)
    if len(train) < MIN_DISTILL:
        raise ConfigError(f"Only {len(train)} samples differ from every held-out sample; distillation needs at "
                          f"least {MIN_DISTILL}: give more distinct samples or a separate training file.")
    return DistillSplit(train=train, test=test, seed=seed, dropped=dropped)


def separate_training(train: Dataset, test: Dataset, name: str = "") -> DistillSplit:
    """A separate training file for distillation; the evaluation data stays whole and held out."""
    kept, dropped = apart(train, test)
    if len(kept) < MIN_DISTILL:
        extra = f" once the {dropped} rows also in the evaluation data are dropped" if dropped else ""
        raise ConfigError(f"Distillation needs at least {MIN_DISTILL} training samples; "
                          f"{name or 'the training file'} has {len(kept)}{extra}.")
    if len(kept) > MAX_DISTILL:
        kept = kept.subset(MAX_DISTILL)
    return DistillSplit(train=kept, test=test, seed=None, dropped=dropped, train_name=name)
