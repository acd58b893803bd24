"""Bounds on evaluation-data uploads, checked before anything is allocated (used by :mod:`optim.io.data`).

* npz: each member's ``.npy`` header is read on its own (magic, dtype, shape) and the declared
  ``shape × dtype`` is compared with the limit *and* with the bytes the member actually holds, so a
  40-byte header declaring 80 GB is refused before ``np.load`` reads it, with a message saying which.
* CSV: columns, line length and cell length are counted by a streaming pass with the ``csv`` module.
* Image zips: the decoded output (images × height × width × channels as float32) and the total source
  pixels (from image headers, nothing decoded) are bounded.
* Labels and class folders: at most ``MAX_CLASSES`` classes, label values below it.
"""

from __future__ import annotations

import csv
import io
import zipfile

import numpy as np

from optim.errors import DataFormatError, FileTooLargeError

MAX_COLUMNS = 10_000
MAX_LINE_CHARS = 1_000_000
MAX_CELL_CHARS = 256
MAX_ROWS = 2_000_000
MAX_CLASSES = 100_000
MAX_DATASET_BYTES = 2 * 2**30  # decoded float32 inputs of one dataset
MAX_TOTAL_PIXELS = 1_000_000_000  # source pixels over all images of one zip
_NPY_MAGIC = b"\x93NUMPY"


def _shown(text: object, n: int = 80) -> str:
    s = str(text)
    return s if len(s) <= n else s[:n] + "..."


def check_npz_headers(zf: zipfile.ZipFile, max_bytes: int) -> None:
    """Refuse members whose declared array would exceed the limit or the member's own size."""
    for info in zf.infolist():
        if not info.filename.endswith(".npy"):
            continue
        try:
            with zf.open(info) as fh:
                version = np.lib.format.read_magic(fh)
                if version == (1, 0):
                    shape, _fortran, dtype = np.lib.format.read_array_header_1_0(fh, max_header_size=10_000)
                else:
                    shape, _fortran, dtype = np.lib.format.read_array_header_2_0(fh, max_header_size=10_000)
                header_end = fh.tell()
        except (ValueError, OSError, EOFError, SyntaxError, zipfile.BadZipFile) as exc:
            raise DataFormatError(f"Array {_shown(info.filename)} in the npz has a damaged .npy header "
                                  f"({_shown(exc, 160)}); save it again with np.savez.") from exc
        if dtype.hasobject:
            raise DataFormatError(f"Array {_shown(info.filename)} in the npz holds object arrays (dtype "
                                  f"{_shown(dtype)}), which need pickle; save plain numeric arrays with np.savez.")
        declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
        what = f"Array {_shown(info.filename)} declares shape {_shown(shape)} of {dtype}"
        if declared > max_bytes:
            raise FileTooLargeError(f"{what} = {declared / 2**30:.1f} GiB, over the {max_bytes / 2**20:.0f} MiB "
                                    "data limit; upload a smaller subset.")
        if declared > info.file_size - header_end:
            raise DataFormatError(f"{what} = {declared:,} bytes, but the member holds only "
                                  f"{max(info.file_size - header_end, 0):,} bytes of data: the file is truncated "
                                  "or its header was altered. Save it again with np.savez.")


def check_csv_text(data: bytes) -> None:
    """Refuse CSVs past the column / line / cell / row bounds (one streaming pass, nothing kept)."""
    start = 0
    while start < len(data):
        end = data.find(b"\n", start)
        end = len(data) if end < 0 else end
        if end - start > MAX_LINE_CHARS:
            raise DataFormatError(f"The CSV has a line of more than {MAX_LINE_CHARS:,} characters; one line per "
                                  "sample with numeric columns is expected.")
        start = end + 1
    text = io.StringIO(data.decode("utf-8", errors="replace"))
    limit = csv.field_size_limit()
    csv.field_size_limit(MAX_LINE_CHARS)
    try:
        for row_no, row in enumerate(csv.reader(text)):
            if len(row) > MAX_COLUMNS:
                raise DataFormatError(f"The CSV has {len(row):,} columns in line {row_no + 1}, over the "
                                      f"{MAX_COLUMNS:,} limit; reduce the features or upload an .npz.")
            long = next((c for c in row if len(c) > MAX_CELL_CHARS), None)
            if long is not None:
                raise DataFormatError(f"Line {row_no + 1} of the CSV has a cell of {len(long):,} characters "
                                      f"(starting {_shown(long, 40)!r}); cells must be numbers or short labels.")
            if row_no > MAX_ROWS:
                raise DataFormatError(f"The CSV has more than {MAX_ROWS:,} rows; upload a subset.")
    except csv.Error as exc:
        raise DataFormatError(f"The CSV cannot be read ({_shown(exc, 160)}); save it as comma-separated text.") \
            from exc
    finally:
        csv.field_size_limit(limit)


def check_classes(names: list[str]) -> None:
    """Class folders: at most MAX_CLASSES of them, numeric names below MAX_CLASSES."""
    if len(names) > MAX_CLASSES:
        raise DataFormatError(f"The zip has {len(names):,} class folders, over the {MAX_CLASSES:,} limit.")
    big = [n for n in names if n.isdigit() and (len(n) > 6 or int(n) >= MAX_CLASSES)]
    if big:
        raise DataFormatError(f"Class folder {_shown(big[0], 30)!r} is not a class index below {MAX_CLASSES:,}; "
                              "name the folders 0, 1, 2, ... or by class name.")


def check_label_values(y: np.ndarray, what: str) -> None:
    if y.size and int(y.max()) >= MAX_CLASSES:
        raise DataFormatError(f"{what}: label {int(y.max()):,} is not a class index below {MAX_CLASSES:,}.")


def check_image_output(n_images: int, image_size: tuple[int, int], channels: int) -> None:
    need = n_images * int(image_size[0]) * int(image_size[1]) * channels * 4
    if need > MAX_DATASET_BYTES:
        raise FileTooLargeError(f"{n_images:,} images at {image_size[0]}×{image_size[1]}×{channels} make "
                                f"{need / 2**30:.1f} GiB of inputs, over the {MAX_DATASET_BYTES / 2**30:.0f} GiB "
                                "limit; upload fewer images.")


def check_total_pixels(total: int) -> None:
    if total > MAX_TOTAL_PIXELS:
        raise FileTooLargeError(f"The images hold {total:,} pixels together, over the {MAX_TOTAL_PIXELS:,} limit; "
                                "upload fewer or smaller images.")
