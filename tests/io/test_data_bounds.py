"""Evaluation-data uploads are bounded before allocation, with messages saying what is wrong."""

from __future__ import annotations

import io
import time
import zipfile

import numpy as np
import pytest
from PIL import Image

from optim.errors import DataFormatError, FileTooLargeError
from optim.io.data import load_data


def _npz_with_header(shape: tuple[int, ...], data: bytes = b"") -> bytes:
    npy = io.BytesIO()
    np.lib.format.write_array_header_1_0(npy, {"descr": "<f4", "fortran_order": False, "shape": shape})
    npy.write(data)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("x.npy", npy.getvalue())
    return buf.getvalue()


def test_npz_header_declaring_80_gb_is_refused_before_reading() -> None:
    data = _npz_with_header((10_000_000_000, 2))
    assert len(data) < 400
    t0 = time.monotonic()
    with pytest.raises(FileTooLargeError, match=r"declares shape \(10000000000, 2\).*GiB"):
        load_data(data, "d.npz")
    assert time.monotonic() - t0 < 5


def test_npz_header_larger_than_its_data_says_truncated() -> None:
    with pytest.raises(DataFormatError, match="truncated or its header was altered"):
        load_data(_npz_with_header((1000, 4), b"\0" * 64), "d.npz")


def test_npz_labels_far_past_any_class_count_are_refused() -> None:
    buf = io.BytesIO()
    np.savez(buf, x=np.zeros((3, 2), np.float32), y=np.array([0, 1, 10**12]))
    with pytest.raises(DataFormatError, match="not a class index"):
        load_data(buf.getvalue(), "d.npz")


def test_csv_with_200k_columns_is_refused_quickly() -> None:
    row = ",".join(["1"] * 200_000).encode()
    t0 = time.monotonic()
    with pytest.raises(DataFormatError, match="200,000 columns"):
        load_data(b"\n".join([row, row]), "d.csv")
    assert time.monotonic() - t0 < 10


def test_csv_cell_too_long_is_refused_without_echoing_it() -> None:
    with pytest.raises(DataFormatError, match="cell of 5,000 characters") as info:
        load_data(b"a,label\n" + b"9" * 5000 + b",1\n", "d.csv")
    assert len(str(info.value)) < 300


def _png(w: int = 1, h: int = 1) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h)).save(buf, "PNG")
    return buf.getvalue()


def _image_zip(folders: dict[str, int]) -> bytes:
    buf = io.BytesIO()
    png = _png()
    with zipfile.ZipFile(buf, "w") as zf:
        for folder, n in folders.items():
            for i in range(n):
                zf.writestr(f"{folder}/{i}.png", png)
    return buf.getvalue()


def test_image_zip_class_folder_with_a_huge_number_is_refused() -> None:
    with pytest.raises(DataFormatError, match="not a class index"):
        load_data(_image_zip({"0": 1, "99999999999999999999": 1}), "d.zip")


def test_image_zip_of_tiny_pngs_resized_to_gigabytes_is_refused_before_decoding() -> None:
    t0 = time.monotonic()
    with pytest.raises(FileTooLargeError, match="GiB of inputs"):
        load_data(_image_zip({"0": 600, "1": 600}), "d.zip", image_size=(512, 512))
    assert time.monotonic() - t0 < 10
