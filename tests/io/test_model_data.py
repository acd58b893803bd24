"""Data loaded for a model follows its input: size, channels, grey normalisation; mismatches name shapes."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from optim.errors import ConfigError, ShapeMismatchError
from optim.handle import ModelHandle
from optim.io.export import torch_to_onnx
from optim.io.model_data import image_kwargs, load_data_for


def _grey_model() -> ModelHandle:
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 3))
    return ModelHandle(model=torch_to_onnx(net, [torch.randn(1, 1, 8, 8)], dynamic_batch=True), name="grey")


def _image_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for label in ("0", "1", "2"):
            img = Image.fromarray(np.full((20, 20, 3), 60 * int(label), dtype=np.uint8))
            raw = io.BytesIO()
            img.save(raw, format="PNG")
            zf.writestr(f"{label}/a.png", raw.getvalue())
    return buf.getvalue()


def test_image_kwargs_follow_grey_model_input() -> None:
    kw = image_kwargs(_grey_model())
    assert kw["image_size"] == (8, 8) and kw["channels"] == 1 and kw["mean"] == (0.0,)


def test_load_data_for_sizes_images_for_the_model() -> None:
    ds = load_data_for(_grey_model(), _image_zip(), "digits.zip")
    assert ds.x.shape == (3, 1, 8, 8)
    assert sorted(ds.y.tolist()) == [0, 1, 2]


def test_load_data_for_names_both_shapes_on_mismatch(tiny_cnn: ModelHandle) -> None:
    buf = io.BytesIO()
    np.savez(buf, x=np.zeros((4, 3, 8, 8), np.float32))
    with pytest.raises(ShapeMismatchError, match=r"3, 16, 16.*3, 8, 8|3, 8, 8.*3, 16, 16"):
        load_data_for(tiny_cnn, buf.getvalue(), "small.npz")


def test_load_data_for_raises_config_error_when_path_missing(tiny_cnn: ModelHandle, tmp_path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_data_for(tiny_cnn, tmp_path / "nope.npz")
