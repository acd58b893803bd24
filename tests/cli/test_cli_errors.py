"""The CLI never prints a traceback: bad files, limits, a damaged store and a full disk are one line each."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from optim.__main__ import main
from optim.errors import environment_message


def test_garbage_model_file_is_one_error_line_without_traceback(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"\x08\x07" + b"\xff" * 200)
    assert main(["profile", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err and len(err) < 800


def test_debug_flag_prints_the_traceback(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"\x08\x07" + b"\xff" * 200)
    assert main(["profile", str(bad), "--debug"]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_damaged_store_is_reported_in_words(tiny_mlp, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    model = tmp_path / "mlp.onnx"
    model.write_bytes(tiny_mlp.model_bytes)
    store = tmp_path / "store"
    store.mkdir()
    (store / "optim.sqlite3").write_bytes(b"this is not a database" * 100)
    assert main(["--no-limits", "sweep", str(model), "--ratios", "0", "--bits", "32", "--samples", "4",
                 "--store", str(store)]) == 2
    err = capsys.readouterr().err
    assert "results store is damaged" in err and "Traceback" not in err


def test_environment_message_says_disk_full_in_words() -> None:
    words = environment_message(OSError(errno.ENOSPC, "No space left on device", "/data/x.onnx"))
    assert words is not None and "disk is full" in words and "/data/x.onnx" in words
    assert environment_message(ValueError("x")) is None


def test_internal_error_exits_3_with_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    import optim.cli.profile

    def boom(*args: object, **kwargs: object) -> None:
        raise KeyError("a defect")

    monkeypatch.setattr(optim.cli.profile, "load_model", boom)
    assert main(["profile", "x"]) == 3
    err = capsys.readouterr().err
    assert "internal error (KeyError)" in err and "Traceback" not in err
