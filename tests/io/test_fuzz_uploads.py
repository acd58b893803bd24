"""Mutated uploads: every corrupted model or data file is either loaded or refused with an OptimError."""

from __future__ import annotations

import io

import numpy as np
import pytest

from optim.errors import OptimError
from optim.handle import ModelHandle
from optim.io.data import load_data
from optim.io.load import load


def _mutations(raw: bytes, n: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        b = bytearray(raw)
        kind = i % 3
        if kind == 0:  # flip a few random bytes
            for pos in rng.integers(0, len(b), size=int(rng.integers(1, 8))):
                b[pos] = int(rng.integers(0, 256))
        elif kind == 1:  # truncate
            b = b[: int(rng.integers(1, len(b)))]
        else:  # splice a random chunk
            pos = int(rng.integers(0, len(b)))
            b[pos:pos] = rng.integers(0, 256, size=int(rng.integers(1, 64)), dtype=np.uint8).tobytes()
        out.append(bytes(b))
    return out


@pytest.mark.slow
def test_load_refuses_or_loads_every_mutated_onnx(tiny_cnn: ModelHandle) -> None:
    outcomes = {"loaded": 0, "refused": 0}
    for data in _mutations(tiny_cnn.model_bytes, 120, seed=0):
        try:
            load(data, "fuzz.onnx")
            outcomes["loaded"] += 1
        except OptimError as err:
            assert str(err), "an OptimError must say what to do"
            outcomes["refused"] += 1
    assert outcomes["refused"] > 0


def test_load_data_refuses_or_loads_every_mutated_npz() -> None:
    buf = io.BytesIO()
    np.savez(buf, x=np.zeros((8, 3, 4, 4), np.float32), y=np.arange(8))
    for data in _mutations(buf.getvalue(), 90, seed=1):
        try:
            load_data(data, "fuzz.npz")
        except OptimError as err:
            assert str(err)


def test_load_data_refuses_or_loads_every_mutated_csv() -> None:
    raw = ("a,b,c,label\n" + "\n".join(f"{i},{i * 0.5},{-i},{i % 3}" for i in range(20))).encode()
    for data in _mutations(raw, 90, seed=2):
        try:
            load_data(data, "fuzz.csv")
        except OptimError as err:
            assert str(err)


def test_load_data_refuses_or_loads_every_mutated_image_zip() -> None:
    import zipfile

    from PIL import Image

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for label in ("cat", "dog"):
            png = io.BytesIO()
            Image.fromarray(np.full((6, 6, 3), 40, dtype=np.uint8)).save(png, format="PNG")
            zf.writestr(f"{label}/a.png", png.getvalue())
    for data in _mutations(buf.getvalue(), 90, seed=3):
        try:
            load_data(data, "fuzz.zip", image_size=(6, 6))
        except OptimError as err:
            assert str(err)


@pytest.mark.slow
def test_load_refuses_or_loads_every_mutated_model_zip(tiny_cnn: ModelHandle) -> None:
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("model/model.onnx", tiny_cnn.model_bytes)
    for data in _mutations(buf.getvalue(), 60, seed=4):
        try:
            load(data, "fuzz.zip")
        except OptimError as err:
            assert str(err)


@pytest.mark.slow
def test_load_refuses_or_loads_every_mutated_torchscript() -> None:
    import torch

    module = torch.jit.script(torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU()))
    buf = io.BytesIO()
    torch.jit.save(module, buf)
    for data in _mutations(buf.getvalue(), 45, seed=5):
        try:
            load(data, "fuzz.pt", input_shapes={"input": (1, 4)})
        except OptimError as err:
            assert str(err)
