"""Tests for ``python -m optim profile`` (driven through optim.__main__.main)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import pytest

from optim.__main__ import main
from optim.handle import ModelHandle
from optim.measure.core import accuracy, predict

FAST = ["--batch", "4", "--budget", "0.02", "--profile-runs", "3"]


@pytest.fixture()
def tiny_files(tmp_path: Path, tiny_cnn: ModelHandle, tiny_images: tuple[np.ndarray, np.ndarray]) -> tuple[Path, Path]:
    model_path = tmp_path / "tiny.onnx"
    onnx.save(tiny_cnn.model, str(model_path))
    x, y = tiny_images
    data_path = tmp_path / "tiny.npz"
    np.savez(data_path, x=x[:40], y=y[:40])
    return model_path, data_path


def test_profile_prints_accuracy_latency_and_layers_when_given_model_file_and_data(
    tiny_files: tuple[Path, Path], tiny_cnn: ModelHandle, tiny_images: tuple[np.ndarray, np.ndarray],
    capsys: pytest.CaptureFixture[str],
) -> None:
    model_path, data_path = tiny_files
    rc = main(["profile", str(model_path), "--data", str(data_path), *FAST, "--opt-level", "disable"])
    out = capsys.readouterr().out
    assert rc == 0
    x, y = tiny_images
    expected = accuracy(predict(tiny_cnn, x[:40]), y[:40])
    assert f"top-1 {100 * expected.top1:.2f} % [{100 * expected.top1_lo:.2f} %, {100 * expected.top1_hi:.2f} %]" in out
    assert "n=40" in out
    assert re.search(r"batch +1: median [0-9.]+ ms, p90 [0-9.]+ ms", out)
    assert re.search(r"batch +4: median [0-9.]+ ms, p90 [0-9.]+ ms", out)
    layer_lines = out.split("slowest layers", 1)[1].splitlines()[2:]
    listed = {line.split()[0] for line in layer_lines if line.startswith("  ")}
    assert listed == {n.name for n in tiny_cnn.model.graph.node}  # 10 nodes: all of them are the top ten


def test_profile_prints_fidelity_when_reference_given(
    tiny_files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    model_path, data_path = tiny_files
    rc = main(["profile", str(model_path), "--reference", str(model_path), *FAST])
    out = capsys.readouterr().out
    assert rc == 0
    assert "top-1 agreement 100.00 %" in out
    assert "relative error 0" in out
    assert "accuracy" not in out  # no data given: nothing to score against


def test_profile_exits_2_with_message_when_file_is_not_a_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not a model at all")
    rc = main(["profile", str(bad), *FAST])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("error: ")
    assert "Traceback" not in err


def test_profile_exits_2_when_model_is_neither_file_nor_sample(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["profile", "no_such_model_anywhere", *FAST])
    assert rc == 2
    assert "neither an existing file nor a bundled sample" in capsys.readouterr().err


@pytest.mark.slow
def test_profile_matches_manifest_top1_when_sample_built(capsys: pytest.CaptureFixture[str]) -> None:
    from optim.io.samples import get_sample_info

    info = get_sample_info("resnet_digits")
    assert info.model_path.is_file(), "the bundled resnet_digits sample is committed"
    rc = main(["profile", "resnet_digits", *FAST, "--eval-budget", "3600"])  # the whole test set, however busy
    out = capsys.readouterr().out
    assert rc == 0
    shown = re.search(r"top-1 ([0-9.]+) % \[", out)
    assert shown is not None
    assert float(shown.group(1)) == pytest.approx(100 * info.fp32_top1, abs=0.006)
    assert f"n={info.n_test}" in out
    assert "slowest layers" in out


def test_profile_scores_csv_with_named_label_column(
    tmp_path: Path, tiny_mlp: ModelHandle, capsys: pytest.CaptureFixture[str]
) -> None:
    model_path = tmp_path / "mlp.onnx"
    onnx.save(tiny_mlp.model, str(model_path))
    rng = np.random.default_rng(3)
    x = rng.standard_normal((30, 12)).astype(np.float32)
    target = np.argmax(predict(tiny_mlp, x), axis=1)
    target[:3] = (target[:3] + 1) % 4  # 27 of 30 right
    header = ",".join([*(f"f{i}" for i in range(12)), "target"])
    rows = [",".join([*(f"{v:.9g}" for v in row), str(t)]) for row, t in zip(x, target, strict=True)]
    csv = tmp_path / "rows.csv"
    csv.write_text("\n".join([header, *rows]) + "\n")
    rc = main(["profile", str(model_path), "--data", str(csv), "--label-column", "target", *FAST])
    out = capsys.readouterr().out
    assert rc == 0
    assert "top-1 90.00 %" in out and "n=30" in out
    assert "top-5" not in out  # 4 classes


def test_profile_exits_2_when_data_shape_does_not_fit(
    tiny_files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model_path, _ = tiny_files
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, x=np.zeros((4, 3, 8, 8), np.float32), y=np.zeros(4, np.int64))
    rc = main(["profile", str(model_path), "--data", str(wrong), *FAST])
    assert rc == 2
    assert "error: " in capsys.readouterr().err


def test_profile_maps_fused_kernels_to_onnx_layers_at_opt_level_all(
    tiny_files: tuple[Path, Path], tiny_cnn: ModelHandle, capsys: pytest.CaptureFixture[str]
) -> None:
    model_path, data_path = tiny_files
    assert main(["profile", str(model_path), "--data", str(data_path), *FAST, "--opt-level", "all"]) == 0
    out = capsys.readouterr().out
    layer_lines = out.split("slowest layers", 1)[1].splitlines()[2:]
    listed = {line.split()[0] for line in layer_lines if line.startswith("  ")}
    convs = {n.name for n in tiny_cnn.model.graph.node if n.op_type in ("Conv", "Gemm")}
    assert convs <= listed <= {n.name for n in tiny_cnn.model.graph.node} | {"runtime:"}
