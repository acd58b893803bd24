"""ONNX external data anywhere in a model is read only from inside the uploaded zip, else refused."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from optim.errors import MalformedModelError, UnsafeArchiveError
from optim.io.external import assert_inline, iter_tensors
from optim.io.load import load
from optim.measure.session import make_session

HONEY = b"HONEYHONEYHONEYH"  # 16 bytes = 4 float32


def _external(name: str, location: str, offset: int = 0, length: int = 16) -> TensorProto:
    t = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=[4])
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", str(offset)), ("length", str(length))):
        t.external_data.add(key=k, value=v)
    return t


def _model(nodes: list, inits: list | None = None, functions: list | None = None, sparse: list | None = None,
           extra_opsets: list | None = None) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], initializer=inits or [],
                          sparse_initializer=sparse or [])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), *(extra_opsets or [])],
                             functions=functions or [], ir_version=9)


def _const_model(location: str, **kw: int) -> onnx.ModelProto:
    return _model([helper.make_node("Constant", [], ["c"], value=_external("c", location, **kw)),
                   helper.make_node("Add", ["x", "c"], ["y"])])


def _if_model(location: str) -> onnx.ModelProto:
    def branch(name: str, init: TensorProto) -> onnx.GraphProto:
        return helper.make_graph([helper.make_node("Add", ["x", init.name], [f"{name}_out"])], name, [],
                                 [helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, [4])],
                                 initializer=[init])
    cond = numpy_helper.from_array(np.array(True), "cond")
    then_w = _external("w_then", location)
    else_w = numpy_helper.from_array(np.zeros(4, np.float32), "w_else")
    return _model([helper.make_node("If", ["cond"], ["y"], then_branch=branch("then", then_w),
                                    else_branch=branch("else", else_w))], inits=[cond])


def _function_model(location: str) -> onnx.ModelProto:
    body = [helper.make_node("Constant", [], ["k"], value=_external("k", location)),
            helper.make_node("Add", ["a", "k"], ["b"])]
    fn = helper.make_function("local", "AddK", ["a"], ["b"], body, [helper.make_opsetid("", 17)])
    return _model([helper.make_node("AddK", ["x"], ["y"], domain="local")], functions=[fn],
                  extra_opsets=[helper.make_opsetid("local", 1)])


def _sparse_model(location: str) -> onnx.ModelProto:
    values = _external("s", location, length=8)
    values.dims[:] = [2]
    indices = numpy_helper.from_array(np.array([0, 2], np.int64), "s_idx")
    sp = helper.make_sparse_tensor(values, indices, [4])
    return _model([helper.make_node("Add", ["x", "s"], ["y"])], sparse=[sp])


def _zip(model: onnx.ModelProto, members: dict[str, bytes], symlink: str | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("model.onnx", model.SerializeToString())
        for name, data in members.items():
            zf.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (0o120777 << 16)
            zf.writestr(info, "/etc/passwd")
    return buf.getvalue()


BUILDERS = {"constant": _const_model, "if-subgraph": _if_model, "function-body": _function_model,
            "sparse-initializer": _sparse_model}


@pytest.fixture()
def honey_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "honey.bin").write_bytes(HONEY)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("where", sorted(BUILDERS))
def test_iter_tensors_finds_external_tensor(where: str) -> None:
    assert any(t.data_location == TensorProto.EXTERNAL for t, _ in iter_tensors(BUILDERS[where]("honey.bin")))


@pytest.mark.parametrize("where", sorted(BUILDERS))
def test_single_file_with_external_tensor_is_refused_naming_it(where: str, honey_cwd: Path) -> None:
    with pytest.raises(MalformedModelError, match="external") as info:
        load(BUILDERS[where]("honey.bin").SerializeToString(), "m.onnx")
    assert "HONEY" not in str(info.value)


@pytest.mark.parametrize("where", sorted(BUILDERS))
@pytest.mark.parametrize("location", ["../honey.bin", "/etc/passwd", "a/../../honey.bin", "C:/x.bin"])
def test_zip_external_path_escaping_the_archive_is_refused(where: str, location: str, honey_cwd: Path) -> None:
    with pytest.raises(UnsafeArchiveError, match="outside the uploaded zip"):
        load(_zip(BUILDERS[where](location), {}), "m.zip")


@pytest.mark.parametrize("where", sorted(BUILDERS))
def test_zip_external_file_not_in_the_archive_is_refused_even_if_in_cwd(where: str, honey_cwd: Path) -> None:
    with pytest.raises(MalformedModelError, match="not in the zip"):
        load(_zip(BUILDERS[where]("honey.bin"), {}), "m.zip")


def test_zip_symlink_member_is_refused(honey_cwd: Path) -> None:
    with pytest.raises(UnsafeArchiveError, match="link"):
        load(_zip(_const_model("data.bin"), {}, symlink="data.bin"), "m.zip")


@pytest.mark.parametrize("offset,length", [(8, 16), (-1, 4), (0, 10**12)])
def test_zip_external_span_outside_the_member_is_refused(offset: int, length: int) -> None:
    with pytest.raises(MalformedModelError, match="bytes|limit"):
        load(_zip(_const_model("data.bin", offset=offset, length=length), {"data.bin": b"\0" * 16}), "m.zip")


def test_zip_external_data_in_a_subgraph_is_inlined_and_runs() -> None:
    weights = np.arange(4, dtype=np.float32)
    handle = load(_zip(_if_model("w.bin"), {"w.bin": weights.tobytes()}), "m.zip")
    assert_inline(handle.model)
    out = make_session(handle).run(None, {"x": np.ones(4, np.float32)})[0]
    np.testing.assert_allclose(out, weights + 1)


def test_no_session_is_created_from_a_model_with_external_references() -> None:
    with pytest.raises(MalformedModelError, match="still references external data"):
        make_session(_const_model("honey.bin"))
