"""Evaluation data loaded *for a model*: image size, channels and normalisation follow its input.

One place for what the CLI commands and the dashboard do with an uploaded data file: read it with
:func:`optim.io.data.load_data`, sized for the model's NCHW input, then check it fits the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from optim.errors import ConfigError, MissingInputError, ShapeMismatchError
from optim.handle import ModelHandle
from optim.io.data import Dataset, load_data
from optim.io.named_inputs import bind, missing_inputs
from optim.io.shapes import input_specs


def image_kwargs(handle: ModelHandle) -> dict[str, Any]:
    """``load_data`` keyword arguments for an image model's first input (empty for other models)."""
    dims = handle.model.graph.input[0].type.tensor_type.shape.dim
    shape = [d.dim_value for d in dims]
    if len(shape) != 4 or not all(shape[1:]):
        return {}
    kwargs: dict[str, Any] = {"image_size": (shape[2], shape[3]), "channels": shape[1]}
    if shape[1] == 1:  # grey images: plain [0, 1] pixels unless the user gives mean/std
        kwargs.update(mean=(0.0,), std=(1.0,))
    return kwargs


def load_data_for(handle: ModelHandle, source: Path | str | bytes, filename: str | None = None, *,
                  label_column: str | None = None, mean: Sequence[float] | None = None,
                  std: Sequence[float] | None = None) -> Dataset:
    """Read ``source`` (path or bytes) as evaluation data for ``handle`` and check it fits."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"data file {str(path)!r} not found.")
        filename = filename or path.name
    if filename is None:
        raise ConfigError("A data upload needs a file name ending in .npz, .csv or .zip.")
    kwargs = image_kwargs(handle)
    kwargs["label_column"] = label_column
    if mean is not None:
        kwargs["mean"] = tuple(mean)
    if std is not None:
        kwargs["std"] = tuple(std)
    ds = load_data(source, filename, **kwargs)
    if ds.x_name is None and not ds.feeds:  # one unnamed x: the first input; the others must be conventions
        ds = _classic(handle, ds)
    ds = bind(handle.model, ds)
    check_compatible(handle, ds)
    return ds


def _classic(handle: ModelHandle, ds: Dataset) -> Dataset:
    """An ``x``-only file for the first input: integers become float32 for a float input; further inputs are
    synthesised only where their value is a convention (masks, type ids, positions), else MissingInputError."""
    inputs = _graph_inputs(handle.model)
    if inputs and inputs[0].type.tensor_type.elem_type in _FLOAT_TYPES and ds.x.dtype != np.float32:
        ds = Dataset(x=ds.x.astype(np.float32), y=ds.y, name=ds.name, class_names=ds.class_names,
                     constants=ds.constants)
    scalars = {s.name for s in input_specs(handle.model) if not s.shape}  # synthesised and stated, or set by a 0-d
    given = {inputs[0].name, *scalars} if inputs else set()
    missing = [m for m in missing_inputs(handle.model, given) if m != inputs[0].name] if inputs else []
    if missing:
        raise MissingInputError(f"The data's 'x' feeds the first input {inputs[0].name!r}; input {missing[0]!r} "
                                "carries data and cannot be made up: save the npz with one array per input, named "
                                f"like the inputs ({', '.join(repr(i.name) for i in inputs[:6])}), plus 'y'.")
    return ds


# ---------------------------------------------------------------- model ↔ data -------------------
_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE,
                onnx.TensorProto.BFLOAT16}


def _graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    inits = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def _dims(value: onnx.ValueInfoProto) -> tuple[int | str, ...]:
    dims: list[int | str] = []
    for d in value.type.tensor_type.shape.dim:
        dims.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?"))
    return tuple(dims)


def _n_classes(model: onnx.ModelProto) -> int | None:
    if not model.graph.output:
        return None
    dims = _dims(model.graph.output[0])
    return dims[-1] if len(dims) == 2 and isinstance(dims[-1], int) and dims[-1] > 0 else None


SYNTHETIC_NAME = "synthetic (no labels: fidelity only)"
SYNTHETIC_BUDGET_BYTES = 256 * 2**20  # all synthetic samples together


def synthetic_dataset(handle: ModelHandle, n: int, seed: int = 0) -> Dataset:
    """``n`` synthesised samples of the model's first input (no labels: fidelity only).

    Values follow :func:`optim.io.shapes.synthesize_inputs` (token ids within the vocabulary, masks of ones,
    floats ~ N(0,1)); a model whose batch is fixed gets one synthesised batch per seed. ``n`` shrinks so the
    samples fit in ``SYNTHETIC_BUDGET_BYTES``. Any further inputs
    are synthesised again at prediction time. MissingInputError when an input cannot be synthesised.
    """
    from optim.io.shapes import input_specs, synthesize_inputs

    first = input_specs(handle.model)[0].name
    probe = synthesize_inputs(handle.model, batch=1, seed=seed)[first]  # bounded by shapes.MAX_SYNTH_BYTES
    if probe.ndim >= 1 and len(probe):
        per_sample = max(1, probe.size // len(probe)) * 8  # drawn as float64
        n = max(1, min(n, SYNTHETIC_BUDGET_BYTES // per_sample))  # a 3x2048x2048 input: fewer samples, not 12 GiB
    chunks, got, s = [], 0, seed
    while got < n:
        x = synthesize_inputs(handle.model, batch=n - got, seed=s)[first]
        if x.ndim == 0:
            raise MissingInputError(f"The model's first input {first!r} is a scalar; it needs a sample axis to "
                                    "be evaluated on data.")
        chunks.append(x)
        got += len(x)
        s += 1
    x = np.concatenate(chunks)[:n]
    return Dataset(x=x if x.dtype.kind != "f" else x.astype(np.float32, copy=False), y=None, name=SYNTHETIC_NAME)


def _synthesisable_rest(model: onnx.ModelProto, first: str) -> None:
    """Raise MissingInputError unless every input but ``first`` can be synthesised at prediction time."""
    from optim.io.shapes import synthesize_inputs

    try:
        synthesize_inputs(model, batch=1)
    except MissingInputError as exc:
        raise MissingInputError(f"Evaluation data feeds the first input {first!r}; the others are synthesised, "
                                f"which fails here: {exc}") from exc


def check_compatible(handle: ModelHandle, dataset: Dataset) -> None:
    """Raise ``ShapeMismatchError`` unless ``dataset`` can feed ``handle``'s first input.

    Compares the model input shape without its batch dimension with one data sample's shape
    (symbolic model dims match anything), checks the dtypes agree (float data for a float input, integer
    data such as token ids for an integer input) and that labels fit the number of output classes when
    the output is ``(batch, classes)``. Further inputs must be synthesisable (masks, type ids, states).
    """
    inputs = _graph_inputs(handle.model)
    if not inputs:
        raise MissingInputError("The model has no inputs; there is nothing to evaluate on data.")
    if len(inputs) > 1:
        _synthesisable_rest(handle.model, inputs[0].name)
    inp = inputs[0]
    model_shape = _dims(inp)[1:]
    sample_shape = tuple(dataset.x.shape[1:])
    fits = len(model_shape) == len(sample_shape) and all(
        isinstance(m, str) or m == s for m, s in zip(model_shape, sample_shape, strict=True)
    )
    if not fits:
        raise ShapeMismatchError(
            f"Model input {inp.name!r} expects samples of shape {model_shape} (batch dimension excluded), "
            f"but the data samples have shape {sample_shape}. Resize/reshape the data to {model_shape}."
        )
    elem = inp.type.tensor_type.elem_type
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem)) if elem else None
    if elem not in _FLOAT_TYPES and (dtype is None or dtype.kind not in "iub" or dataset.x.dtype.kind not in "iub"):
        raise ShapeMismatchError(
            f"Model input {inp.name!r} has dtype {dtype or 'unknown'}, but the evaluation data is "
            f"{dataset.x.dtype}; give integer arrays (e.g. token ids) for an integer input."
        )
    if elem in _FLOAT_TYPES and dataset.x.dtype != np.float32:
        raise ShapeMismatchError(f"Data dtype is {dataset.x.dtype}; it must be float32 (the model input dtype).")
    n_classes = _n_classes(handle.model)
    if dataset.y is not None and len(dataset.y) and n_classes is not None and int(dataset.y.max()) >= n_classes:
        raise ShapeMismatchError(
            f"Labels go up to {int(dataset.y.max())}, but the model output {handle.model.graph.output[0].name!r} "
            f"has {n_classes} classes; check the label column or class folders."
        )
