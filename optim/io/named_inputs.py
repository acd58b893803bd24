"""Evaluation data for models with several inputs: arrays keyed by input name, checked against the model.

An ``.npz`` holds one array per model input, named like the input (``input_ids``, ``attention_mask``,
``token_type_ids``), plus an optional ``y``; a classic ``x`` array feeds the model's first input. :func:`bind`
checks every name against the model's inputs, every array's sample shape and dtype against its input, token
ids against the embedding they index, and decides what to do with inputs the file does not give: an input
whose synthesised value is a convention (masks of ones, type ids zeros, positions 0…T−1, a sample rate —
:func:`optim.io.shapes.constant_role`) is synthesised; one that carries data (token ids, pixels, audio,
recurrent state) must be in the file, and the message says which. Every mismatch is one sentence naming the
input and what to do. The arrays' sizes were bounded from their ``.npy`` headers before anything was read
(:func:`optim.io.data_bounds.check_npz_headers`).
"""

from __future__ import annotations

import numpy as np
import onnx

from optim.errors import DataFormatError, MissingInputError, ShapeMismatchError
from optim.io.data import Dataset
from optim.io.shapes import InputSpec, constant_role, index_ranges, input_specs, recorded_shapes

__all__ = ["bind", "input_arrays", "missing_inputs"]


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


def bind(model: onnx.ModelProto, ds: Dataset) -> Dataset:
    """``ds`` with ``x`` = the model's first input and ``feeds`` = its further inputs by name, checked (see the
    module docstring). A dataset of one unnamed ``x`` array and no other arrays is returned as it is (the
    classic path, checked by :func:`optim.io.model_data.check_compatible`)."""
    if ds.x_name is None and not ds.feeds:
        return ds
    specs = {s.name: s for s in input_specs(model)}
    if not specs:
        raise MissingInputError("The model has no inputs; there is nothing to evaluate on data.")
    first = next(iter(specs))
    arrays = {ds.x_name or first: ds.x, **(ds.feeds or {})}
    unknown = [k for k in arrays if k not in specs]
    if unknown:
        raise DataFormatError(f"The data has array(s) {_shown(unknown)} that name no input of the model (its inputs: "
                              f"{_shown(list(specs))}); rename each array to the input it feeds, or drop it.")
    scalars = [k for k in arrays if not specs[k].shape]
    if scalars:
        raise DataFormatError(f"Input {scalars[0]!r} is a scalar (one value for every sample), not per-sample "
                              "data; drop its array from the file.")
    vocab = index_ranges(model)
    missing = [m for m in missing_inputs(model, set(arrays)) if specs[m].shape]
    if missing:
        m = specs[missing[0]]
        raise MissingInputError(f"The data has no array for input {m.name!r} ({_describe(m, vocab.get(m.name))}), "
                                f"which carries data and cannot be made up; add an array named {m.name!r} to the "
                                "npz (its inputs: " + _shown(list(specs)) + ").")
    checked = {k: _check_array(specs[k], a, model, vocab.get(k)) for k, a in arrays.items()}
    if first not in checked:
        raise MissingInputError(f"The data has no array for the model's first input {first!r}; add an array named "
                                f"{first!r} to the npz.")
    x = checked.pop(first)
    return Dataset(x=x, y=ds.y, name=ds.name, class_names=ds.class_names, x_name=first, feeds=checked or None)


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
