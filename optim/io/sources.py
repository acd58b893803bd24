"""A model named on a command line or picked in the dashboard: a bundled sample's name or a model file, turned
into a handle plus the data that comes with it (a sample's test and training splits). The one place the CLI
commands (profile, sweep, casestudy) and the api resolve "sample name or file"."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from optim.errors import ConfigError, OptimError
from optim.handle import ModelHandle
from optim.io.data import Dataset
from optim.io.load import load
from optim.io.samples import list_samples, load_sample

__all__ = ["CALIB_SAMPLES", "ModelSource", "calibration_subset", "open_model", "sample_names"]

CALIB_SAMPLES = 256  # calibration samples taken from a training split (INT8 static, recalibration)


@dataclass(frozen=True, eq=False)
class ModelSource:
    """A loaded model and the data it brought: a sample's splits, or nothing for a file."""

    handle: ModelHandle
    test: Dataset | None
    train: Dataset | None
    origin: str  # "sample" | "file"

    @property
    def calib(self) -> Dataset | None:
        return calibration_subset(self.train)


def sample_names() -> list[str]:
    """Names of the bundled samples; [] when none are built."""
    try:
        return [s.name for s in list_samples()]
    except OptimError:
        return []


def calibration_subset(data: Dataset | None, n: int = CALIB_SAMPLES) -> Dataset | None:
    """``n`` samples of a training split (seeded, :meth:`Dataset.subset`) for calibration; None without data."""
    if data is None or not len(data):
        return None
    return data.subset(min(n, len(data)))


FileLoader = Callable[[Path, dict[str, Sequence[int]] | None], ModelHandle]


def _load_here(path: Path, input_shapes: dict[str, Sequence[int]] | None) -> ModelHandle:
    return load(path, path.name, input_shapes=input_shapes)


def open_model(spec: str | Path, input_shapes: Mapping[str, Sequence[int]] | None = None,
               load_file: FileLoader = _load_here) -> ModelSource:
    """An existing model file (ONNX, zip, TorchScript, .pt2) or a bundled sample's name → handle + data.

    ``load_file(path, input_shapes)`` reads a file: in this process by default; the CLI passes its job-based
    loader (:func:`optim.cli.common.load_model_file`: limits, sandboxed conversion)."""
    path = Path(spec)
    if path.is_file():
        return ModelSource(load_file(path, dict(input_shapes) if input_shapes else None), None, None, "file")
    names = sample_names()
    if str(spec) not in names:
        listing = ", ".join(names) if names else "none built; run `make samples`"
        raise ConfigError(f"MODEL {str(spec)!r} is neither an existing file nor a bundled sample (samples: {listing}).")
    handle, test, train = load_sample(str(spec))
    return ModelSource(handle, test, train, "sample")
