"""Bundled sample models: manifest reading, artifact loading and the shared input decoding.

``sample_models/build_samples.py`` trains four small models and writes ``<name>.onnx``,
``<name>_test.npz``, ``<name>_train.npz`` and ``manifest.json``. Image samples store their pixels as
compact ``uint8`` grayscale arrays; :func:`decode_x` turns them into the float32 tensors the model
was evaluated on. The build script calls the same function, so ``load_sample`` returns bit-for-bit
the inputs behind the manifest's ``fp32_top1``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from optim.errors import ConfigError, DataFormatError
from optim.handle import ModelHandle
from optim.io.data import Dataset

SAMPLES_DIR: Path = Path(__file__).resolve().parents[2] / "sample_models"
MANIFEST_NAME = "manifest.json"


def samples_dir() -> Path:
    """The sample directory: ``$OPTIM_SAMPLES_DIR`` when set (read at call time), else ``SAMPLES_DIR``."""
    env = os.environ.get("OPTIM_SAMPLES_DIR")
    return Path(env) if env else SAMPLES_DIR


@dataclass(frozen=True)
class SampleInfo:
    """One manifest entry. ``directory`` is where its files live; unknown manifest keys go to ``extra``."""

    name: str
    file: str
    arch: str
    task: str
    dataset: str
    input_name: str
    input_shape: tuple[int | str, ...]
    preprocessing: dict[str, Any]
    class_names: list[str]
    test_file: str
    train_file: str
    fp32_top1: float
    n_test: int
    description: str
    directory: Path = SAMPLES_DIR
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, entry: Mapping[str, Any], directory: Path) -> SampleInfo:
        known = {f.name for f in fields(cls)} - {"directory", "extra"}
        missing = sorted(known - set(entry))
        if missing:
            raise DataFormatError(
                f"Sample manifest entry {entry.get('name', '?')!r} lacks {missing}; "
                "rebuild the samples with `make samples`."
            )
        kwargs = {k: entry[k] for k in known}
        kwargs["input_shape"] = tuple(kwargs["input_shape"])
        kwargs["class_names"] = [str(c) for c in kwargs["class_names"]]
        kwargs["fp32_top1"] = float(kwargs["fp32_top1"])
        kwargs["n_test"] = int(kwargs["n_test"])
        extra = {k: v for k, v in entry.items() if k not in known}
        return cls(**kwargs, directory=directory, extra=extra)

    @property
    def model_path(self) -> Path:
        return self.directory / self.file

    @property
    def test_path(self) -> Path:
        return self.directory / self.test_file

    @property
    def train_path(self) -> Path:
        return self.directory / self.train_file


def read_manifest(directory: Path | None = None) -> list[dict[str, Any]]:
    """The raw manifest entries (list of dicts) of ``directory`` (default :func:`samples_dir`)."""
    path = (directory or samples_dir()) / MANIFEST_NAME
    if not path.is_file():
        raise DataFormatError(f"No sample manifest at {path}; build the samples with `make samples`.")
    data = json.loads(path.read_text(encoding="utf-8"))
    entries = data["models"] if isinstance(data, dict) else data
    return list(entries)


def list_samples(directory: Path | None = None) -> list[SampleInfo]:
    """All bundled samples, in manifest order."""
    directory = directory or samples_dir()
    return [SampleInfo.from_dict(e, directory) for e in read_manifest(directory)]


def get_sample_info(name: str, directory: Path | None = None) -> SampleInfo:
    """The manifest entry called ``name``; ``ConfigError`` listing the valid names otherwise."""
    infos = list_samples(directory)
    for info in infos:
        if info.name == name:
            return info
    valid = ", ".join(i.name for i in infos)
    raise ConfigError(f"Unknown sample {name!r}; choose one of: {valid}.")


def decode_x(x: np.ndarray, preprocessing: Mapping[str, Any]) -> np.ndarray:
    """Stored sample inputs → float32 model inputs, following the manifest's ``preprocessing``.

    ``stored_as``:
    - ``"uint8_gray"``: (N, H, W) uint8 → ``(x * scale - mean[c]) / std[c]`` replicated to
      ``channels`` channels, NCHW.
    - ``"float32_raw"``: (N, F) raw features → ``(x - mean) / std`` when ``standardize`` is true.
    - ``"float32"``: used as is.
    """
    stored = preprocessing.get("stored_as", "float32")
    if stored == "uint8_gray":
        channels = int(preprocessing.get("channels", 3))
        mean = np.asarray(preprocessing["mean"], dtype=np.float32).reshape(1, channels, 1, 1)
        std = np.asarray(preprocessing["std"], dtype=np.float32).reshape(1, channels, 1, 1)
        gray = x.astype(np.float32) * np.float32(preprocessing["scale"])
        img = np.repeat(gray[:, None, :, :], channels, axis=1)
        return np.ascontiguousarray((img - mean) / std, dtype=np.float32)
    if stored == "float32_raw":
        out = x.astype(np.float32)
        if preprocessing.get("standardize", False):
            mean = np.asarray(preprocessing["mean"], dtype=np.float32)
            std = np.asarray(preprocessing["std"], dtype=np.float32)
            out = (out - mean) / std
        return np.ascontiguousarray(out, dtype=np.float32)
    if stored == "float32":
        return np.ascontiguousarray(x, dtype=np.float32)
    raise DataFormatError(f"Unknown sample storage {stored!r}; rebuild the samples with `make samples`.")


def _load_split(path: Path, info: SampleInfo, split: str) -> Dataset:
    if not path.is_file():
        raise DataFormatError(f"Sample file {path} is missing; rebuild the samples with `make samples`.")
    with np.load(path, allow_pickle=False) as npz:
        x, y = npz["x"], npz["y"].astype(np.int64)
    return Dataset(
        x=decode_x(x, info.preprocessing), y=y, name=f"{info.name}:{split}", class_names=list(info.class_names)
    )


def load_sample(name: str, directory: Path | None = None) -> tuple[ModelHandle, Dataset, Dataset]:
    """(model handle, test set, train/calibration set) of the bundled sample ``name``.

    The ONNX graph keeps its symbolic batch dimension (see DESIGN.md, "Batch dimension").
    """
    info = get_sample_info(name, directory)
    if not info.model_path.is_file():
        raise DataFormatError(f"Sample model {info.model_path} is missing; run `make samples`.")
    model = onnx.load(str(info.model_path))
    meta: dict[str, Any] = {
        "task": info.task,
        "class_names": list(info.class_names),
        "preprocessing": dict(info.preprocessing),
        "description": info.description,
        "fp32_top1": info.fp32_top1,
        "n_test": info.n_test,
        "arch": info.arch,
        "dataset": info.dataset,
        "sample": info.name,
        "history": [],
    }
    handle = ModelHandle(model=model, name=info.name, source_format="onnx", meta=meta)
    return handle, _load_split(info.test_path, info, "test"), _load_split(info.train_path, info, "train")
