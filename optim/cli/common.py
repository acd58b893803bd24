"""Shared CLI helpers: model and data files are read by jobs, as in the dashboard (:mod:`optim.jobs`).

With limits on (the default) a file is loaded in a worker process with memory, CPU and wall-time limits and
TorchScript/.pt2 are converted in the sandbox; ``--no-limits`` (a user's own trusted file) runs the same job
in this process.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from optim.errors import ConfigError, FileTooLargeError
from optim.handle import ModelHandle
from optim.io import sources
from optim.jobs import client, codec

MAX_FILE_BYTES = 2 * 2**30


def _read(path: Path, what: str) -> bytes:
    if not path.is_file():
        raise ConfigError(f"{what} file {str(path)[:200]!r} not found.")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise FileTooLargeError(f"{path.name[:100]} is {size / 2**30:.1f} GiB, over the "
                                f"{MAX_FILE_BYTES / 2**30:.0f} GiB limit for a {what} file.")
    return path.read_bytes()


def load_model_file(path: Path, input_shapes: dict[str, Sequence[int]] | None = None) -> ModelHandle:
    """A model file loaded and checked by a ``load_model`` job (same checks as an upload)."""
    shapes = {k: list(v) for k, v in (input_shapes or {}).items()} or None
    res = client.run("load_model", f"loading {path.name[:80]}", {"filename": path.name, "input_shapes": shapes},
                     {"data": _read(Path(path), "model")})
    handle = codec.handle_from(res.blobs, res.value["handle"])
    return ModelHandle(model=handle.model, name=path.name, source_format=handle.source_format, meta=handle.meta)


def load_data_file(handle: ModelHandle, path: Path, label_column: str | None = None,
                   mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> Any:
    """Evaluation data read and checked against ``handle`` by a ``load_data`` job."""
    args = {"filename": Path(path).name, "label_column": label_column,
            "mean": list(mean) if mean is not None else None, "std": list(std) if std is not None else None}
    res = client.run("load_data", f"reading {Path(path).name[:80]}", args, {"data": _read(Path(path), "data")},
                     handle=handle)
    return codec.dataset_from(res.value["data"], res.blobs, "data")


def open_model(spec: str, input_shapes: dict[str, Sequence[int]] | None = None) -> sources.ModelSource:
    """A bundled sample's name or a model file (loaded by a job) → handle + data (:func:`optim.io.sources.open_model`)."""
    return sources.open_model(spec, input_shapes, load_file=load_model_file)
