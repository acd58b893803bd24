"""Evaluation data loaded *for a model*: image size, channels and normalisation follow its input.

One place for what the CLI commands and the dashboard do with an uploaded data file: read it with
:func:`optim.data.load_data`, sized for the model's NCHW input, then check it fits the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from optim.data import Dataset, check_compatible, load_data
from optim.errors import ConfigError
from optim.handle import ModelHandle


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
    check_compatible(handle, ds)
    return ds
