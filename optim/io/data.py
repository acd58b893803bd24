"""Evaluation data: the :class:`Dataset` value object, upload loaders and the model/data check.

Formats: ``.npz`` (``x`` or one array per model input by name, optional ``y``; read with
``allow_pickle=False``), ``.csv`` (numeric
columns, optional label column) and ``.zip`` of images in one folder per class. The image-folder
reader is written here rather than taken from torchvision (not a dependency) because it must read
from untrusted bytes in memory with explicit bounds: member paths are checked for zip-slip, the
uncompressed total and the file count are capped before anything is decoded, and nothing is
written to disk.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
from PIL import Image

from optim.errors import (
    DataFormatError,
    FileTooLargeError,
    UnsafeArchiveError,
)
from optim.io import data_bounds as db
from optim.io.dataset import Dataset  # noqa: F401  (re-exported: Dataset lived here)
from optim.io.zips import ZIP_READ_ERRORS

# ---------------------------------------------------------------- loading ------------------------
DEFAULT_MAX_BYTES = 512 * 2**20
MAX_ARCHIVE_MEMBERS = 100_000
MAX_IMAGE_PIXELS = 16_000_000
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LABEL_COLUMN_NAMES = ("label", "target", "y")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def _read_source(source: Path | str | bytes, max_bytes: int) -> bytes:
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise DataFormatError(f"Data file {path} does not exist.")
        size = path.stat().st_size
        if size > max_bytes:
            raise FileTooLargeError(
                f"Data file is {size / 2**20:.1f} MiB, over the {max_bytes / 2**20:.0f} MiB limit; "
                "upload a smaller subset."
            )
        data = path.read_bytes()
    if len(data) > max_bytes:
        raise FileTooLargeError(
            f"Data file is {len(data) / 2**20:.1f} MiB, over the {max_bytes / 2**20:.0f} MiB limit; "
            "upload a smaller subset."
        )
    return data


def _open_zip(data: bytes, max_bytes: int, what: str) -> zipfile.ZipFile:
    """Open a zip from memory after checking member paths, member count and uncompressed total."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except ZIP_READ_ERRORS as exc:
        raise DataFormatError(f"The {what} is not a valid zip archive ({exc}).") from exc
    infos = zf.infolist()
    if len(infos) > MAX_ARCHIVE_MEMBERS:
        raise FileTooLargeError(f"The {what} holds {len(infos)} files; at most {MAX_ARCHIVE_MEMBERS} are allowed.")
    for info in infos:
        name = info.filename.replace("\\", "/")
        parts = PurePosixPath(name).parts
        if name.startswith("/") or ".." in parts or (parts and ":" in parts[0]):
            raise UnsafeArchiveError(
                f"Archive member {info.filename!r} points outside the archive; rebuild the zip with "
                "relative paths only."
            )
    total = sum(i.file_size for i in infos)
    if total > max_bytes:
        raise FileTooLargeError(
            f"The {what} unpacks to {total / 2**20:.1f} MiB, over the {max_bytes / 2**20:.0f} MiB limit; "
            "upload a smaller subset."
        )
    return zf


def _labels(y: np.ndarray, n: int, what: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n:
        raise DataFormatError(f"{what}: labels must be one integer per sample ({n}), got shape {y.shape}.")
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise DataFormatError(f"{what}: labels must be whole class indices, found non-integer values.")
    elif y.dtype.kind not in "iub":
        raise DataFormatError(f"{what}: labels must be integer class indices, got dtype {y.dtype}.")
    if y.dtype.kind == "f" and y.size and np.abs(y).max() >= db.MAX_CLASSES:
        raise DataFormatError(f"{what}: label {float(np.abs(y).max()):g} is not a class index below "
                              f"{db.MAX_CLASSES:,}.")
    y = y.astype(np.int64)
    if n and y.min() < 0:
        raise DataFormatError(f"{what}: labels must be class indices ≥ 0, found {int(y.min())}.")
    db.check_label_values(y, what)
    return y


RESERVED_NPZ_KEYS = ("x", "y", "class_names")
MAX_INPUT_ARRAYS = 256


def _input_array(a: np.ndarray, key: str, per_call: bool = False) -> np.ndarray:
    """One input array of an npz: numeric with a sample axis (``per_call``: any shape, e.g. a 0-d sample rate);
    floats as float32 and finite; integers (token ids, masks, 8-bit pixels) are kept as they are and become
    float32 for a float input when bound to a model."""
    if a.dtype.kind not in "fiub" or (not per_call and a.ndim < 1) or (key == "x" and a.ndim < 2):
        raise DataFormatError(f"{key!r} must be a numeric array of shape (N, ...), got dtype {a.dtype} and "
                              f"shape {a.shape}.")
    if a.dtype.kind == "f":
        a = np.array(a, dtype=np.float32)  # 0-d stays 0-d
        if not np.all(np.isfinite(a)):
            raise DataFormatError(f"{key!r} contains NaN or infinite values; clean the data first.")
    return a


def _load_npz(data: bytes, name: str, max_bytes: int) -> Dataset:
    """``x`` (+ ``y``), or one array per model input named like the input (+ ``y``); arrays besides ``x``
    in an ``x`` file are further inputs by name. Names are checked against the model by
    :func:`optim.io.model_data.load_data_for`."""
    with _open_zip(data, max_bytes, "npz file") as zf:
        db.check_npz_headers(zf, max_bytes)
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            keys = list(npz.files)
            inputs = [k for k in keys if k not in RESERVED_NPZ_KEYS]
            if "x" not in keys and not inputs:
                raise DataFormatError(f"The npz file has arrays {keys[:8]}; it needs one named 'x' (inputs) or "
                                      "one array per model input, named like the input.")
            if len(inputs) > MAX_INPUT_ARRAYS:
                raise DataFormatError(f"The npz file has {len(inputs)} arrays; at most {MAX_INPUT_ARRAYS} inputs "
                                      "are read.")
            arrays = {k: npz[k] for k in (["x"] if "x" in keys else []) + inputs}
            y = npz["y"] if "y" in keys else None
            names = npz["class_names"] if "class_names" in keys else None
    except ValueError as exc:  # object arrays need pickle, which we refuse
        raise DataFormatError(
            f"The npz file contains object arrays ({exc}); save plain numeric arrays with np.savez."
        ) from exc
    except (*ZIP_READ_ERRORS, KeyError) as exc:  # damaged member data
        raise DataFormatError(
            f"The npz file is damaged ({exc}); save it again with np.savez and re-upload it."
        ) from exc
    x_name = next(iter(arrays))
    x = _input_array(arrays.pop(x_name), x_name)
    # 0-d arrays (a sample rate, a threshold) and arrays of another length are values for inputs without a
    # sample axis, fed whole in every call; named_inputs.bind checks each against its input
    per_call = {k for k, a in arrays.items() if a.ndim == 0 or len(a) != len(x)}
    arrays = {k: _input_array(a, k, k in per_call) for k, a in arrays.items()}
    constants = {k: arrays.pop(k) for k in list(arrays) if k in per_call}
    labels = None if y is None else _labels(y, len(x), "npz 'y'")
    class_names = [str(c) for c in names.tolist()] if names is not None and names.dtype.kind in "US" else None
    named = x_name != "x"
    return Dataset(x=x, y=labels, name=name, class_names=class_names, x_name=x_name if named else None,
                   feeds=arrays or None, constants=constants or None)


def _read_csv_frame(data: bytes) -> pd.DataFrame:
    db.check_csv_text(data)
    try:
        frame = pd.read_csv(io.BytesIO(data))
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataFormatError(f"The CSV file cannot be parsed ({exc}); save it as comma-separated text.") from exc
    headers = [str(c) for c in frame.columns]
    if headers and all(_is_number(h) for h in headers):  # no header row: first line was data
        frame = pd.read_csv(io.BytesIO(data), header=None)
        frame.columns = [f"f{i}" for i in range(frame.shape[1])]
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise DataFormatError("The CSV file has no data rows; it needs a header line and one row per sample.")
    return frame


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _numeric_column(frame: pd.DataFrame, column: str) -> np.ndarray:
    values = pd.to_numeric(frame[column], errors="coerce")
    bad = values.isna() & frame[column].notna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataFormatError(
            f"Column {column!r} has a non-numeric value {frame[column].iloc[row]!r} in data row {row + 1}; "
            "every feature must be a number (encode categories first)."
        )
    if values.isna().any():
        row = int(np.flatnonzero(values.isna().to_numpy())[0])
        raise DataFormatError(f"Column {column!r} has an empty value in data row {row + 1}; fill or drop it.")
    return values.to_numpy(dtype=np.float64)


def _load_csv(data: bytes, name: str, label_column: str | None) -> Dataset:
    frame = _read_csv_frame(data)
    frame.columns = [str(c).strip() for c in frame.columns]
    if label_column is not None and label_column not in frame.columns:
        raise DataFormatError(
            f"Label column {label_column!r} is not in the CSV; its columns are {list(frame.columns)}."
        )
    if label_column is None:
        label_column = next((c for c in frame.columns if c.lower() in LABEL_COLUMN_NAMES), None)
    features = [c for c in frame.columns if c != label_column]
    if not features:
        raise DataFormatError("The CSV has only a label column; it needs at least one feature column.")
    x = np.stack([_numeric_column(frame, c) for c in features], axis=1).astype(np.float32)
    if not np.all(np.isfinite(x)):
        raise DataFormatError("The CSV contains values too large for float32 or infinite; rescale them.")
    y = None
    if label_column is not None:
        y = _labels(_numeric_column(frame, label_column), len(x), f"CSV column {label_column!r}")
    return Dataset(x=x, y=y, name=name)


def _class_members(zf: zipfile.ZipFile) -> dict[str, list[str]]:
    """Map class folder → image member names; strips one wrapping top-level folder."""
    files = [
        i.filename for i in zf.infolist()
        if not i.is_dir() and not i.filename.startswith("__MACOSX/")
        and not PurePosixPath(i.filename).name.startswith(".")
        and PurePosixPath(i.filename).suffix.lower() in IMAGE_SUFFIXES
    ]
    parts = [PurePosixPath(f).parts for f in files]
    if parts and all(len(p) >= 3 for p in parts) and len({p[0] for p in parts}) == 1:
        parts = [p[1:] for p in parts]
    classes: dict[str, list[str]] = {}
    for full, p in zip(files, parts, strict=True):
        if len(p) == 2:
            classes.setdefault(p[0], []).append(full)
    if not classes:
        raise DataFormatError(
            "The zip has no class folders with images: put each class's images in its own folder, "
            "e.g. 0/img1.png, 1/img2.png (folder names become the class names)."
        )
    return classes


def _decode_image(raw: bytes, member: str, image_size: tuple[int, int], channels: int,
                  pixels: list[int]) -> np.ndarray:
    """One image, resized; ``pixels[0]`` counts source pixels over the whole zip (bounded)."""
    try:
        with Image.open(io.BytesIO(raw)) as im:
            if im.width * im.height > MAX_IMAGE_PIXELS:
                raise DataFormatError(f"Image {member[:80]!r} is {im.width}×{im.height}; that is too large to load.")
            pixels[0] += im.width * im.height
            db.check_total_pixels(pixels[0])
            im = im.convert("RGB" if channels == 3 else "L")
            im = im.resize((image_size[1], image_size[0]), Image.Resampling.BILINEAR)
            arr = np.asarray(im, dtype=np.float32) / np.float32(255.0)
    except (OSError, Image.DecompressionBombError, SyntaxError) as exc:
        raise DataFormatError(f"Image {member!r} cannot be decoded ({exc}); remove or re-save it.") from exc
    return arr if arr.ndim == 3 else arr[:, :, None]


def _read_member(zf: zipfile.ZipFile, member: str, max_bytes: int) -> bytes:
    """A member's bytes, read with a bound; damaged members become DataFormatError."""
    try:
        with zf.open(member) as fh:
            raw = fh.read(max_bytes + 1)
    except ZIP_READ_ERRORS as exc:
        raise DataFormatError(f"{member} in the zip cannot be read ({exc}); create the zip again and re-upload.") \
            from exc
    if len(raw) > max_bytes:
        raise FileTooLargeError(f"{member} in the zip unpacks past the {max_bytes / 2**20:.0f} MB limit.")
    return raw


def _load_image_zip(data: bytes, name: str, image_size: tuple[int, int], mean: Sequence[float],
                    std: Sequence[float], channels_first: bool, channels: int, max_bytes: int) -> Dataset:
    if channels not in (1, 3):
        raise DataFormatError(f"channels must be 1 or 3, got {channels}.")
    if len(mean) != channels or len(std) != channels:
        raise DataFormatError(f"mean and std need {channels} values each, got {len(mean)} and {len(std)}.")
    with _open_zip(data, max_bytes, "image zip") as zf:
        classes = _class_members(zf)
        db.check_classes(list(classes))
        db.check_image_output(sum(len(v) for v in classes.values()), image_size, channels)
        numeric = all(c.isdigit() for c in classes)
        pixels = [0]
        names = sorted(classes, key=int) if numeric else sorted(classes)
        xs, ys = [], []
        for idx, cls in enumerate(names):
            for member in sorted(classes[cls]):
                xs.append(_decode_image(_read_member(zf, member, max_bytes), member, image_size, channels, pixels))
                ys.append(int(cls) if numeric else idx)
    x = (np.stack(xs) - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    if channels_first:
        x = x.transpose(0, 3, 1, 2)
    class_names = [str(i) for i in range(max(ys) + 1)] if numeric else names
    return Dataset(x=np.ascontiguousarray(x, dtype=np.float32), y=np.asarray(ys, np.int64), name=name,
                   class_names=class_names)


def load_data(
    source: Path | str | bytes,
    filename: str,
    *,
    image_size: tuple[int, int] = (32, 32),
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    channels_first: bool = True,
    label_column: str | None = None,
    channels: int = 3,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Dataset:
    """Read evaluation data; the format comes from ``filename``'s suffix (.npz, .csv, .zip).

    Images (zip of class folders) become ``(x / 255 - mean) / std``, resized to ``image_size``
    (height, width), grayscale replicated to ``channels``; folder names that are all integers are
    used as the labels themselves, other names are sorted and numbered. ``max_bytes`` bounds both
    the file and, for archives, the uncompressed total.
    """
    suffix = Path(filename).suffix.lower()
    if suffix not in (".npz", ".csv", ".zip"):
        raise DataFormatError(
            f"Unsupported data file {filename!r}: use .npz (arrays x, y), .csv (numeric columns + label) "
            "or .zip (one folder of images per class)."
        )
    data = _read_source(source, max_bytes)
    name = Path(filename).name
    if suffix == ".npz":
        return _load_npz(data, name, max_bytes)
    if suffix == ".csv":
        return _load_csv(data, name, label_column)
    return _load_image_zip(data, name, tuple(image_size), tuple(mean), tuple(std), channels_first, channels,
                           max_bytes)
