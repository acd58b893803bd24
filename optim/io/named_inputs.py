"""Evaluation data for models with several inputs: arrays keyed by input name, checked against the model.

An ``.npz`` holds one array per model input, named like the input (``input_ids``, ``attention_mask``,
``token_type_ids``), plus an optional ``y``; a classic ``x`` array feeds the model's first input. :func:`bind`
checks every name against the model's inputs, every array's sample shape and dtype against its input, token
ids against the embedding they index, and decides what to do with inputs the file does not give: an input
whose synthesised value is a convention (masks of ones, type ids zeros, positions 0…T−1, a sample rate —
:func:`optim.io.shapes.constant_role`) is synthesised; one that carries data (token ids, pixels, audio,
recurrent state) must be in the file, and the message says which. An input without a sample axis (a scalar
sample rate or threshold, :func:`per_call`) takes a 0-d array of its name as its value for every batch
(``Dataset.constants``); absent, it is synthesised, and :func:`synthesised` says with what. Every mismatch is one
sentence naming the input, what it expects and what the file gave. The arrays' sizes were bounded from their ``.npy`` headers before anything was read
(:func:`optim.io.data_bounds.check_npz_headers`).
"""

from __future__ import annotations

import numpy as np
import onnx

from optim.errors import DataFormatError, MissingInputError, ShapeMismatchError
from optim.io.dataset import Dataset
from optim.io.shapes import (
    DEFAULT_SAMPLE_RATE,
    InputSpec,
    constant_role,
    index_ranges,
    input_specs,
    recorded_shapes,
    synthesize_inputs,
)

__all__ = ["bind", "input_arrays", "missing_inputs", "per_call", "synthesised"]


def _shown(names: list[str], n: int = 6) -> str:
    return ", ".join(repr(x[:60]) for x in names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def _expected(spec: InputSpec, model: onnx.ModelProto) -> tuple[int | str, ...]:
    dims = list(spec.shape[1:])
    given = recorded_shapes(model).get(spec.name)
    if given is not None and len(given) == len(spec.shape):
        dims = [d if isinstance(d, int) else given[i + 1] for i, d in enumerate(dims)]
    return tuple(dims)


def missing_inputs(model: onnx.ModelProto, given: set[str]) -> list[str]:
    """Inputs neither in ``given`` nor safely synthesised (their value carries data): what the file must add."""
    return [s.name for s in input_specs(model) if s.name not in given
            and (s.dtype.kind not in "iub" or constant_role(s.name, len(s.shape)) is None)]


def _describe(spec: InputSpec, vocab: int | None) -> str:
    what = f"token ids below {vocab}" if vocab else f"{spec.dtype} values"
    return f"{what}, shape [N, {', '.join(str(d) for d in spec.shape[1:])}]"


def _check_array(spec: InputSpec, arr: np.ndarray, model: onnx.ModelProto, vocab: int | None) -> np.ndarray:
    """One array against its input: sample shape, dtype, id range; returned in the input's dtype family."""
    want = _expected(spec, model)
    got = tuple(arr.shape[1:])
    if len(want) != len(got) or any(isinstance(w, int) and w != g for w, g in zip(want, got, strict=False)):
        raise ShapeMismatchError(f"Array {spec.name!r} has samples of shape {got}, but input {spec.name!r} expects "
                                 f"{want} (batch dimension excluded); pad or cut it to {want}.")
    if spec.dtype.kind in "iub":
        if arr.dtype.kind not in "iub":
            raise ShapeMismatchError(f"Array {spec.name!r} is {arr.dtype}, but input {spec.name!r} takes {spec.dtype} "
                                     "(integer ids or a mask); save it as an integer array.")
        if vocab and arr.size and (int(arr.min()) < 0 or int(arr.max()) >= vocab):
            bad = int(arr.min()) if int(arr.min()) < 0 else int(arr.max())
            raise DataFormatError(f"Array {spec.name!r} holds id {bad}, but input {spec.name!r} indexes a table of "
                                  f"{vocab} rows (ids 0–{vocab - 1}); tokenise with the model's own vocabulary.")
        return arr
    return np.ascontiguousarray(arr, dtype=np.float32)


def per_call(spec: InputSpec, first: InputSpec) -> bool:
    """True for an input without a sample axis: a scalar (a sample rate, a threshold), or one whose first dim is
    fixed while the first input's batch is free (or fixed to another size). Its value is fed whole in every call."""
    if not spec.shape:
        return True
    lead, batch = spec.shape[0], first.shape[0] if first.shape else None
    if isinstance(batch, str) and batch in spec.shape:
        return False  # the batch on another axis (a recurrent state [2, batch, 128]) is still per sample
    return isinstance(lead, int) and spec is not first and (not isinstance(batch, int) or lead != batch)


def _dims(shape: tuple[int | str, ...]) -> str:
    return "a scalar (shape ())" if not shape else f"shape [{', '.join(str(d) for d in shape)}]"


def _check_constant(spec: InputSpec, arr: np.ndarray, n: int) -> np.ndarray:
    """The value of an input without a sample axis: its declared shape (free dims any size) and dtype family."""
    want = spec.shape
    fits = arr.ndim == len(want) and all(not isinstance(w, int) or w == g for w, g in zip(want, arr.shape,
                                                                                          strict=False))
    family_ok = arr.dtype.kind in ("iub" if spec.dtype.kind in "iub" else "fiub")
    if not fits or not family_ok:
        example = f"np.array({DEFAULT_SAMPLE_RATE if constant_role(spec.name, 0) == 'sample_rate' else 0}, " \
            f"dtype=np.{spec.dtype})" if not want else f"an array of {_dims(want)}"
        why = "" if fits else f" (not one row per sample: the data has {n})"
        raise ShapeMismatchError(f"Array {spec.name!r} has shape {tuple(arr.shape)} and dtype {arr.dtype}, but input "
                                 f"{spec.name!r} is {_dims(want)} of {spec.dtype}, one value for every batch{why}; "
                                 f"save it as {example} under {spec.name!r}.")
    return np.array(arr, dtype=spec.dtype)  # a copy that stays 0-d (ascontiguousarray makes it 1-d)


def bind(model: onnx.ModelProto, ds: Dataset) -> Dataset:
    """``ds`` with ``x`` = the model's first input, ``feeds`` = its further per-sample inputs by name and
    ``constants`` = the values of inputs without a sample axis (a 0-d ``sr``: :func:`per_call`), checked (see
    the module docstring). A dataset of one unnamed ``x`` array and no other arrays is returned as it is (the
    classic path, checked by :func:`optim.io.model_data.check_compatible`)."""
    if ds.x_name is None and not ds.feeds and not ds.constants:
        return ds
    specs = {s.name: s for s in input_specs(model)}
    if not specs:
        raise MissingInputError("The model has no inputs; there is nothing to evaluate on data.")
    first = next(iter(specs))
    arrays = {ds.x_name or first: ds.x, **(ds.feeds or {})}
    consts = dict(ds.constants or {})
    unknown = [k for k in [*arrays, *consts] if k not in specs]
    if unknown:
        raise DataFormatError(f"The data has array(s) {_shown(unknown)} that name no input of the model (its inputs: "
                              f"{_shown(list(specs))}); rename each array to the input it feeds, or drop it.")
    calls = {k for k in specs if per_call(specs[k], specs[first])}
    for k in [k for k in arrays if k in calls and k != first]:
        consts[k] = arrays.pop(k)  # as many rows as the fixed dim: still one value for every call
    for k, a in consts.items():
        if k in calls:
            continue
        if a.ndim:
            raise DataFormatError(f"Array {k!r} has {len(a)} rows but {ds.x_name or first!r} has {len(ds.x)}; every "
                                  "input array needs one row per sample (the same first dimension).")
        raise DataFormatError(f"Array {k!r} is a single value (shape ()), but input {k!r} takes one row per sample "
                              f"({_dims(specs[k].shape)}); give {k!r} {len(ds.x)} rows.")
    vocab = index_ranges(model)
    missing = [m for m in missing_inputs(model, {*arrays, *consts}) if specs[m].shape]  # scalars: synthesised
    if missing:
        m = specs[missing[0]]
        raise MissingInputError(f"The data has no array for input {m.name!r} ({_describe(m, vocab.get(m.name))}), "
                                f"which carries data and cannot be made up; add an array named {m.name!r} to the "
                                "npz (its inputs: " + _shown(list(specs)) + ").")
    checked = {k: _check_array(specs[k], a, model, vocab.get(k)) for k, a in arrays.items()}
    if first not in checked:
        raise MissingInputError(f"The data has no array for the model's first input {first!r}; add an array named "
                                f"{first!r} to the npz.")
    fixed = {k: _check_constant(specs[k], a, len(ds.x)) for k, a in consts.items()}
    x = checked.pop(first)
    return Dataset(x=x, y=ds.y, name=ds.name, class_names=ds.class_names, x_name=first, feeds=checked or None,
                   constants=fixed or None)


def synthesised(model: onnx.ModelProto, ds: Dataset | None = None) -> list[str]:
    """What the explorer feeds each input ``ds`` does not give, in words (``'sr' = 16000 (a sample rate)``)."""
    specs = input_specs(model)
    if not specs:
        return []
    given = set() if ds is None else {ds.x_name or specs[0].name, *(ds.feeds or {}), *(ds.constants or {})}
    if all(s.name in given for s in specs):
        return []
    vocab = index_ranges(model)
    try:
        values = synthesize_inputs(model, batch=1)
    except MissingInputError:
        values = {}
    words = {"mask": "ones (nothing padded)", "type_ids": "zeros (one segment)",
             "positions": "0, 1, 2, … along the sequence"}
    out = []
    for s in (s for s in specs if s.name not in given):
        role = constant_role(s.name, len(s.shape))
        v = values.get(s.name)
        if role in words:
            what = words[role]
        elif v is None:
            what = "cannot be synthesised (give it in the data)"
        elif v.ndim == 0:
            kind = " (a sample rate)" if role == "sample_rate" else " (random N(0, 1), seed 0)" \
                if s.dtype.kind == "f" else ""
            what = f"{v.item():g}{kind}"
        elif s.name in vocab:
            what = f"random token ids below {vocab[s.name]}"
        else:
            what = "random N(0, 1) values" if s.dtype.kind == "f" else "zeros"
        out.append(f"{s.name!r} = {what}")
    return out


def input_arrays(model: onnx.ModelProto, data: object) -> dict[str, np.ndarray]:
    """Every per-sample array ``data`` gives, by the model input it feeds: ``x`` under ``x_name`` (None: the
    model's first input), then its ``feeds``. ``data`` may be a bare array (the first input's). What
    calibration and distillation feed instead of the first input alone."""
    specs = input_specs(model)
    if not specs:
        raise MissingInputError("The model has no inputs; there is nothing to feed data to.")
    x = getattr(data, "x", data)
    out = {getattr(data, "x_name", None) or specs[0].name: np.asarray(x)}
    out.update({k: np.asarray(v) for k, v in (getattr(data, "feeds", None) or {}).items()})
    known = {s.name for s in specs}
    unknown = [k for k in out if k not in known]
    if unknown:
        raise DataFormatError(f"The data has array(s) {_shown(unknown)} that name no input of the model (its inputs: "
                              f"{_shown([s.name for s in specs])}); rename each array to the input it feeds, or drop it.")
    return out
