"""A corpus of bad uploads, built here: each gets its own error class and nothing else happens."""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper

from optim.errors import (
    FileTooLargeError,
    MalformedModelError,
    OptimError,
    PickleRefusedError,
    TooManyParametersError,
    UnknownFormatError,
    UnsafeArchiveError,
)
from optim.io.load import EmptyFileError, UnsupportedOpsetError, load
from optim.io.torch_import import pickle_globals


class _CreatesFile:
    """Unpickling this would create ``path`` — the tests assert it never exists."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture
def sentinel(tmp_path: Path) -> Path:
    return tmp_path / "PWNED"


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            info = zipfile.ZipInfo(name)  # ZipInfo keeps '..' and absolute names as given
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return buf.getvalue()


def test_load_raises_malformed_when_onnx_truncated(tiny_cnn):
    data = tiny_cnn.model_bytes
    with pytest.raises(MalformedModelError, match="truncated|ONNX"):
        load(data[: len(data) // 2], "model.onnx")


@pytest.mark.parametrize("magic", [b"\x89PNG\r\n\x1a\n", b"\x7fELF", b"GIF89a", b"%PDF-1.7"])
def test_load_raises_unknown_format_when_magic_bytes_are_foreign(magic: bytes):
    with pytest.raises(UnknownFormatError, match="not a model"):
        load(magic + bytes(200), "model.onnx")


def test_load_raises_malformed_when_random_bytes_named_onnx():
    data = np.random.default_rng(3).integers(1, 127, 4096, dtype=np.uint8).tobytes()
    with pytest.raises(MalformedModelError):
        load(data, "model.onnx")


@pytest.mark.parametrize("protocol", [2, 4])
def test_load_refuses_pickle_without_executing_it(tmp_path: Path, sentinel: Path, protocol: int):
    payload = pickle.dumps(_CreatesFile(sentinel), protocol=protocol)
    with pytest.raises(PickleRefusedError, match="torch.onnx.export"):
        load(payload, "model.pkl")
    path = tmp_path / "model.onnx"
    path.write_bytes(payload)
    with pytest.raises(PickleRefusedError):
        load(path)
    assert not sentinel.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_load_refuses_torch_save_state_dict_and_module(tmp_path: Path):
    for obj in (torch.nn.Linear(3, 2).state_dict(), torch.nn.Linear(3, 2)):
        buf = io.BytesIO()
        torch.save(obj, buf)
        with pytest.raises(PickleRefusedError, match="torch.save"):
            load(buf.getvalue(), "weights.pt")


def test_load_refuses_torchscript_archive_whose_pickle_names_foreign_globals(tiny_cnn_module, sentinel):
    buf = io.BytesIO()
    torch.jit.save(torch.jit.trace(tiny_cnn_module, torch.randn(1, 3, 16, 16)), buf)
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    evil = pickle.dumps(_CreatesFile(sentinel), protocol=2)
    members = {i.filename: evil if i.filename.endswith("/data.pkl") else src.read(i) for i in src.infolist()}
    with pytest.raises(PickleRefusedError, match="open"):
        load(_zip(members), "model.pt", input_shapes={"x": (1, 3, 16, 16)})
    assert not sentinel.exists()


def test_pickle_globals_lists_imports_without_running_them(sentinel: Path):
    found = pickle_globals(pickle.dumps(_CreatesFile(sentinel), protocol=4))
    assert found == ["io open"]
    assert not sentinel.exists()


@pytest.mark.parametrize("member", ["../evil.onnx", "/etc/evil.onnx", "a/../../evil.onnx", "C:/evil.onnx"])
def test_load_raises_unsafe_archive_when_zip_member_escapes(tiny_cnn, member: str):
    with pytest.raises(UnsafeArchiveError, match="outside the archive"):
        load(_zip({member: tiny_cnn.model_bytes}), "model.zip")


def test_load_raises_too_many_parameters_when_initializer_declares_absurd_dims():
    weight = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[10**6, 10**6])  # 10^12, no data
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "absurd",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 10**6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10**6])], initializer=[weight],
    )
    with pytest.raises(TooManyParametersError, match="1,000,000,000,000"):
        load(helper.make_model(graph).SerializeToString(), "absurd.onnx")


def test_load_raises_too_many_parameters_when_over_configured_limit(tiny_cnn):
    with pytest.raises(TooManyParametersError, match="limit"):
        load(tiny_cnn.model_bytes, "m.onnx", max_params=100)


def test_load_raises_empty_file_error_when_zero_bytes(tmp_path: Path):
    path = tmp_path / "empty.onnx"
    path.write_bytes(b"")
    with pytest.raises(EmptyFileError, match="empty"):
        load(path)


def test_load_raises_file_too_large_before_reading(tmp_path: Path, tiny_cnn):
    path = tmp_path / "m.onnx"
    path.write_bytes(tiny_cnn.model_bytes)
    with pytest.raises(FileTooLargeError, match="limit"):
        load(path, max_bytes=1000)


def test_load_raises_file_too_large_when_zip_unpacks_past_limit():
    bomb = _zip({"model.onnx": bytes(4 * 2**20)})
    assert len(bomb) < 64 * 1024
    with pytest.raises(FileTooLargeError, match="unpacks"):
        load(bomb, "bomb.zip", max_bytes=2**20)


def test_load_raises_unknown_format_when_zip_holds_no_model():
    with pytest.raises(UnknownFormatError, match="no .onnx"):
        load(_zip({"readme.txt": b"hello"}), "stuff.zip")


def test_load_raises_malformed_when_runtime_cannot_open(tiny_cnn):
    model = tiny_cnn.copy_model()
    model.graph.node[0].op_type = "NoSuchOp"
    model.graph.node[0].domain = "com.example"
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    with pytest.raises(MalformedModelError, match="ONNX Runtime cannot open"):
        load(model.SerializeToString(), "custom.onnx")


def test_load_raises_unsupported_opset_when_below_9(tiny_mlp):
    model = tiny_mlp.copy_model()
    model.opset_import[0].version = 7
    with pytest.raises(UnsupportedOpsetError, match="convert_version"):
        load(model.SerializeToString(), "old.onnx")


def test_load_bad_inputs_leave_working_directory_untouched(tmp_path: Path, tiny_cnn, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for data, name in [(b"", "a.onnx"), (b"\x80\x04junk", "a.pt"), (_zip({"../x": b"1"}), "a.zip")]:
        with pytest.raises(OptimError):
            load(data, name)
    assert os.listdir(tmp_path) == []


def test_load_raises_unknown_format_when_text_file_uploaded():
    with pytest.raises(UnknownFormatError, match="not a format we load"):
        load(b"hello, this is a readme\n", "notes.txt")


def test_torch_jit_load_itself_refuses_foreign_globals(tiny_cnn_module, sentinel: Path):
    """Verifies the claim in optim.io.torch_import: TorchScript's C++ unpickler resolves no Python globals."""
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(tiny_cnn_module), buf)
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    evil = pickle.dumps(_CreatesFile(sentinel), protocol=2)
    members = {i.filename: evil if i.filename.endswith("/data.pkl") else src.read(i) for i in src.infolist()}
    with pytest.raises(RuntimeError, match="Unknown type name"):
        torch.jit.load(io.BytesIO(_zip(members)))
    assert not sentinel.exists()
