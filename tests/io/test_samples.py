from __future__ import annotations

import json

import numpy as np
import onnx
import ort_runner
import pytest

from optim.errors import ConfigError, DataFormatError
from optim.io.data import Dataset
from optim.io.samples import SAMPLES_DIR, decode_x, list_samples, load_sample, samples_dir

EXPECTED = {"resnet_digits", "mobilenetv2_digits", "vit_digits", "mlp_tabular"}
MIN_TOP1 = {"resnet_digits": 0.985, "mobilenetv2_digits": 0.95, "vit_digits": 0.90}
MB = 2**20

needs_artifacts = pytest.mark.skipif(
    not (SAMPLES_DIR / "manifest.json").is_file(), reason="sample artifacts not built (make samples)"
)


def _ort_top1(model: onnx.ModelProto, x: np.ndarray, y: np.ndarray, batch: int = 64) -> float:
    sess = ort_runner.session(model)
    name = sess.get_inputs()[0].name
    preds = np.concatenate([sess.run(None, {name: x[i:i + batch]})[0].argmax(1) for i in range(0, len(x), batch)])
    return float((preds == y).sum()) / len(y)


def _write_fake_samples(directory, name: str = "fake", **overrides) -> None:
    entry = {
        "name": name, "file": "fake.onnx", "arch": "MLP", "task": "classification", "dataset": "toy",
        "input_name": "input", "input_shape": ["batch", 12], "preprocessing": {"stored_as": "float32"},
        "class_names": ["a", "b", "c", "d"], "test_file": "fake_test.npz", "train_file": "fake_train.npz",
        "fp32_top1": 0.25, "n_test": 8, "description": "toy", "params": 3, **overrides,
    }
    (directory / "manifest.json").write_text(json.dumps({"version": 1, "models": [entry]}))


# ---------------------------------------------------------------- without artifacts --------------
def test_samples_dir_follows_env_override(tmp_path, monkeypatch):
    monkeypatch.setenv("OPTIM_SAMPLES_DIR", str(tmp_path))
    assert samples_dir() == tmp_path
    monkeypatch.delenv("OPTIM_SAMPLES_DIR")
    assert samples_dir() == SAMPLES_DIR


def test_load_sample_reads_model_and_splits_from_env_dir(tmp_path, monkeypatch, tiny_mlp):
    _write_fake_samples(tmp_path)
    onnx.save(tiny_mlp.model, str(tmp_path / "fake.onnx"))
    rng = np.random.default_rng(0)
    for split in ("test", "train"):
        np.savez_compressed(tmp_path / f"fake_{split}.npz", x=rng.standard_normal((8, 12)).astype(np.float32),
                            y=rng.integers(0, 4, 8))
    monkeypatch.setenv("OPTIM_SAMPLES_DIR", str(tmp_path))
    [info] = list_samples()
    assert info.name == "fake" and info.input_shape == ("batch", 12) and info.extra == {"params": 3}
    handle, test, train = load_sample("fake")
    assert handle.name == "fake" and handle.meta["class_names"] == ["a", "b", "c", "d"]
    assert handle.meta["fp32_top1"] == 0.25 and handle.meta["task"] == "classification"
    assert isinstance(test, Dataset) and test.x.shape == (8, 12) and test.y.dtype == np.int64
    assert train.name == "fake:train" and test.class_names == ["a", "b", "c", "d"]


def test_load_sample_raises_listing_valid_names_when_unknown(tmp_path):
    _write_fake_samples(tmp_path, name="only_one")
    with pytest.raises(ConfigError, match="only_one"):
        load_sample("nope", directory=tmp_path)


def test_list_samples_raises_when_manifest_missing(tmp_path):
    with pytest.raises(DataFormatError, match="make samples"):
        list_samples(tmp_path)


def test_list_samples_raises_naming_missing_manifest_field(tmp_path):
    _write_fake_samples(tmp_path)
    data = json.loads((tmp_path / "manifest.json").read_text())
    del data["models"][0]["fp32_top1"]
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(DataFormatError, match="fp32_top1"):
        list_samples(tmp_path)


def test_decode_x_scales_normalises_and_replicates_uint8_gray():
    pre = {"stored_as": "uint8_gray", "channels": 3, "scale": 1 / 255, "mean": [0.5] * 3, "std": [0.25] * 3}
    x = np.array([[[0, 255], [51, 102]]], dtype=np.uint8)
    out = decode_x(x, pre)
    assert out.shape == (1, 3, 2, 2) and out.dtype == np.float32
    np.testing.assert_allclose(out[0, 2], [[-2.0, 2.0], [-1.2, -0.4]], atol=1e-6)
    assert np.array_equal(out[0, 0], out[0, 1])


def test_decode_x_standardises_raw_tabular_features():
    pre = {"stored_as": "float32_raw", "standardize": True, "mean": [1.0, -2.0], "std": [2.0, 4.0]}
    out = decode_x(np.array([[3.0, 2.0]], np.float32), pre)
    np.testing.assert_array_equal(out, [[1.0, 1.0]])


def test_decode_x_raises_when_storage_unknown():
    with pytest.raises(DataFormatError, match="make samples"):
        decode_x(np.zeros(2), {"stored_as": "jpeg"})


# ---------------------------------------------------------------- bundled artifacts --------------
@needs_artifacts
def test_list_samples_lists_the_four_bundled_models():
    infos = list_samples(SAMPLES_DIR)
    assert {i.name for i in infos} == EXPECTED
    for info in infos:
        assert info.model_path.is_file() and info.test_path.is_file() and info.train_path.is_file()
        assert info.input_name == "input" and info.input_shape[0] == "batch"
        assert info.n_test >= 2000 and info.description


@needs_artifacts
def test_sample_artifacts_stay_within_size_limits():
    files = [p for p in SAMPLES_DIR.iterdir() if p.suffix in (".onnx", ".npz", ".json")]
    assert all(p.stat().st_size <= 10 * MB for p in files), [(p.name, p.stat().st_size) for p in files]
    assert sum(p.stat().st_size for p in files) <= 40 * MB


@needs_artifacts
@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_load_sample_onnx_accuracy_matches_manifest(name: str):
    handle, test, train = load_sample(name, SAMPLES_DIR)
    assert len(test) >= 2000 and len(train) >= 2000
    assert test.x.dtype == np.float32 and train.x.shape[1:] == test.x.shape[1:]
    dims = handle.model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and tuple(d.dim_value for d in dims[1:]) == test.x.shape[1:]
    assert handle.model.graph.output[0].name == "logits"
    top1 = _ort_top1(handle.model, test.x, test.y)
    # the manifest was measured on the build machine; another CPU's kernels may flip a near-tie or two
    assert top1 == pytest.approx(handle.meta["fp32_top1"], abs=2.5 / len(test))
    assert top1 >= MIN_TOP1.get(name, 0.0)
    assert set(np.unique(test.y)) == set(range(len(handle.meta["class_names"])))
