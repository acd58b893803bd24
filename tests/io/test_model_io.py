from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import onnx
import ort_runner
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from optim.errors import (
    ConfigError,
    DynamicShapeError,
    MalformedModelError,
    MissingInputError,
    OptimError,
    PickleRefusedError,
    ShapeMismatchError,
)
from optim.io.export import torch_to_onnx
from optim.io.load import input_specs, load, parse_input_shape, synthesize_inputs
from optim.io.torch_import import TorchScriptShapesRequiredError


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return ort_runner.run(model, feeds)


def _dims(vi: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]


def test_load_returns_handle_from_path_and_bytes(tmp_path: Path, tiny_cnn):
    path = tmp_path / "net.onnx"
    path.write_bytes(tiny_cnn.model_bytes)
    from_path, from_bytes = load(path), load(tiny_cnn.model_bytes, "net.onnx")
    assert from_path.name == "net.onnx" and from_bytes.name == "upload:net.onnx"
    assert from_path.source_format == from_bytes.source_format == "onnx"
    assert from_path.content_hash == from_bytes.content_hash
    x = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)
    np.testing.assert_allclose(_run(from_path.model, {"input": x})[0], _run(tiny_cnn.model, {"input": x})[0])


def test_load_keeps_symbolic_batch_when_declared(tiny_cnn_module):
    proto = torch_to_onnx(tiny_cnn_module, [torch.randn(1, 3, 16, 16)], dynamic_batch=True)
    handle = load(proto.SerializeToString(), "dyn.onnx")
    assert input_specs(handle.model)[0].shape == ("batch", 3, 16, 16)
    out = _run(handle.model, synthesize_inputs(handle.model, batch=5))[0]
    assert out.shape == (5, 10)


def _dynamic_hw_model() -> onnx.ModelProto:
    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "dyn_hw",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, "H", "W"])], initializer=[w],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


def test_load_raises_dynamic_shape_error_naming_input_and_dims():
    with pytest.raises(DynamicShapeError, match=r"x \['N', 3, 'H', 'W'\].*positions \[2, 3\]"):
        load(_dynamic_hw_model().SerializeToString(), "m.onnx")


def test_load_fixes_dynamic_dims_when_input_shapes_given():
    handle = load(_dynamic_hw_model().SerializeToString(), "m.onnx", input_shapes={"x": (1, 3, 32, 24)})
    assert input_specs(handle.model)[0].shape == ("N", 3, 32, 24)
    assert _dims(handle.model.graph.output[0]) == ["N", 4, 32, 24]


def test_load_raises_config_error_when_input_shapes_names_unknown_input():
    with pytest.raises(ConfigError, match=r"\['x'\]"):
        load(_dynamic_hw_model().SerializeToString(), "m.onnx", input_shapes={"image": (1, 3, 8, 8)})


def test_load_raises_shape_mismatch_when_input_shapes_contradict_model():
    with pytest.raises(ShapeMismatchError, match="dim 1"):
        load(_dynamic_hw_model().SerializeToString(), "m.onnx", input_shapes={"x": (1, 5, 8, 8)})
    with pytest.raises(ShapeMismatchError, match="rank"):
        load(_dynamic_hw_model().SerializeToString(), "m.onnx", input_shapes={"x": (1, 3, 8)})


def test_parse_input_shape_returns_name_and_dims():
    assert parse_input_shape("input=1,3,224,224") == ("input", (1, 3, 224, 224))
    assert parse_input_shape(" x = 2, 8 ") == ("x", (2, 8))


@pytest.mark.parametrize("text", ["1,3,224,224", "x=", "x=1,a", "x=0,3", "=1,2"])
def test_parse_input_shape_raises_config_error_when_malformed(text: str):
    with pytest.raises(ConfigError, match="NAME=D1"):
        parse_input_shape(text)


def _recurrent_model() -> onnx.ModelProto:
    """Data (batch, 8) float, state (2, batch, 8) float, step int64 scalar, mask bool."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "h"], ["y"]), helper.make_node("Cast", ["step"], ["s"], to=1),
         helper.make_node("Cast", ["mask"], ["m"], to=1)],
        "rnnish",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8]),
         helper.make_tensor_value_info("h", TensorProto.FLOAT, [2, "batch", 8]),
         helper.make_tensor_value_info("step", TensorProto.INT64, []),
         helper.make_tensor_value_info("mask", TensorProto.BOOL, ["batch"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, "batch", 8]),
         helper.make_tensor_value_info("s", TensorProto.FLOAT, []),
         helper.make_tensor_value_info("m", TensorProto.FLOAT, ["batch"])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


def test_synthesize_inputs_builds_each_input_from_declared_type_and_shape():
    model = load(_recurrent_model().SerializeToString(), "rnn.onnx").model
    feeds = synthesize_inputs(model, batch=3, seed=1)
    assert {k: (v.shape, v.dtype) for k, v in feeds.items()} == {
        "x": ((3, 8), np.float32), "h": ((2, 3, 8), np.float32), "step": ((), np.int64), "mask": ((3,), bool),
    }
    assert _run(model, feeds)[0].shape == (2, 3, 8)
    np.testing.assert_array_equal(feeds["x"], synthesize_inputs(model, batch=3, seed=1)["x"])


def test_synthesize_inputs_raises_missing_input_when_type_or_shape_unusable():
    model = _dynamic_hw_model()
    model.graph.input.append(helper.make_tensor_value_info("label", TensorProto.STRING, [1]))
    with pytest.raises(MissingInputError, match=r"x \(dynamic dims \['H', 'W'\]\).*label \(type"):
        synthesize_inputs(model)


def test_input_specs_skips_initializers_listed_as_inputs():
    model = _dynamic_hw_model()
    model.graph.input.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, [4, 3, 3, 3]))
    assert [s.name for s in input_specs(model)] == ["x"]


def _zip_with_external_data(model: onnx.ModelProto, tmp_path: Path, folder: str) -> bytes:
    src = tmp_path / "src"
    src.mkdir()
    onnx.save_model(model, src / "model.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for f in src.iterdir():
            zf.write(f, f"{folder}{f.name}")
    return buf.getvalue()


@pytest.mark.parametrize("folder", ["", "export/"])
def test_load_inlines_external_data_from_zip(tmp_path: Path, tiny_cnn, folder: str):
    handle = load(_zip_with_external_data(tiny_cnn.copy_model(), tmp_path, folder), "model.zip")
    assert handle.source_format == "onnx-zip"
    assert all(t.data_location == TensorProto.DEFAULT for t in handle.model.graph.initializer)
    x = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)
    np.testing.assert_allclose(_run(handle.model, {"input": x})[0], _run(tiny_cnn.model, {"input": x})[0])


def test_load_raises_malformed_when_onnx_refers_to_missing_external_file(tmp_path: Path, tiny_cnn):
    data = _zip_with_external_data(tiny_cnn.copy_model(), tmp_path, "")
    onnx_only = zipfile.ZipFile(io.BytesIO(data)).read("model.onnx")
    with pytest.raises(MalformedModelError, match="zip holding the .onnx"):
        load(onnx_only, "model.onnx")


def _constant_weight_model() -> tuple[onnx.ModelProto, int]:
    """Conv whose weight is Constant → Transpose → Reshape, plus an int8 Constant → DequantizeLinear bias."""
    rng = np.random.default_rng(0)
    w_t = rng.standard_normal((3, 3, 3, 4)).astype(np.float32)  # stored HWIO, conv needs OIHW
    b_q = rng.integers(-100, 100, 4).astype(np.int8)
    n = helper.make_node
    nodes = [
        n("Constant", [], ["wt"], value=numpy_helper.from_array(w_t)),
        n("Transpose", ["wt"], ["w_oihw"], perm=[3, 2, 0, 1]),
        n("Constant", [], ["shape"], value_ints=[4, 3, 3, 3]),
        n("Reshape", ["w_oihw", "shape"], ["w"]),
        n("Constant", [], ["bq"], value=numpy_helper.from_array(b_q)),
        n("Constant", [], ["bs"], value_float=0.01),
        n("DequantizeLinear", ["bq", "bs"], ["b"]),
        n("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1]),
    ]
    graph = helper.make_graph(nodes, "const_weights", [helper.make_tensor_value_info("x", 1, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", 1, [1, 4, 8, 8])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10), w_t.size + b_q.size


def test_load_folds_constant_weight_subgraphs_into_initializers():
    model, n_params = _constant_weight_model()
    handle = load(model.SerializeToString(), "c.onnx")
    assert [nd.op_type for nd in handle.model.graph.node] == ["DequantizeLinear", "Conv"]
    inits = {t.name: numpy_helper.to_array(t) for t in handle.model.graph.initializer}
    assert inits["w"].shape == (4, 3, 3, 3) and inits["bq"].dtype == np.int8
    assert sum(a.size for a in inits.values()) == n_params + 1  # + the dequant scale
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(_run(handle.model, {"x": x})[0], _run(model, {"x": x})[0], rtol=1e-5, atol=1e-5)
    assert handle.meta["folded_nodes"] == 6


def _torchscript_bytes(module: torch.nn.Module) -> bytes:
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(module), buf)
    return buf.getvalue()


def test_load_converts_torchscript_when_input_shapes_given(tiny_cnn_module):
    handle = load(_torchscript_bytes(tiny_cnn_module), "net.pt", input_shapes={"x": (1, 3, 16, 16)})
    assert handle.source_format == "torchscript"
    assert input_specs(handle.model)[0].shape == (1, 3, 16, 16)
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        expected = tiny_cnn_module(x).numpy()
    np.testing.assert_allclose(_run(handle.model, {"x": x.numpy()})[0], expected, rtol=1e-4, atol=1e-5)


class _TokenNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(50, 8)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return (self.emb(input_ids) * attention_mask.unsqueeze(-1)).sum(1)


def test_load_converts_torchscript_with_token_id_and_mask_inputs_as_integers():
    torch.manual_seed(0)
    net = _TokenNet().eval()
    handle = load(_torchscript_bytes(net), "tok.pt", input_shapes={"input_ids": (1, 6), "attention_mask": (1, 6)})
    specs = {s.name: s for s in input_specs(handle.model)}
    assert specs["input_ids"].dtype == np.int64 and specs["attention_mask"].dtype == np.int64
    ids, mask = np.array([[3, 7, 49, 0, 1, 2]]), np.array([[1, 1, 1, 0, 0, 1]])
    with torch.no_grad():
        expected = net(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    got = _run(handle.model, {"input_ids": ids, "attention_mask": mask})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_load_raises_shapes_required_when_torchscript_has_no_input_shapes(tiny_cnn_module):
    with pytest.raises(TorchScriptShapesRequiredError, match="do not record input shapes.*--input-shape x="):
        load(_torchscript_bytes(tiny_cnn_module), "net.pt")


def _pt2_bytes(module: torch.nn.Module, x: torch.Tensor) -> bytes:
    buf = io.BytesIO()
    batch = torch.export.Dim("batch", min=1, max=1024)
    torch.export.save(torch.export.export(module, (x,), dynamic_shapes=({0: batch},)), buf)
    return buf.getvalue()


@pytest.mark.slow
def test_load_converts_pt2_keeping_symbolic_batch(tiny_cnn_module):
    handle = load(_pt2_bytes(tiny_cnn_module, torch.randn(2, 3, 16, 16)), "net.pt2")
    assert handle.source_format == "pt2"
    spec = input_specs(handle.model)[0]
    assert isinstance(spec.shape[0], str) and spec.shape[1:] == (3, 16, 16)
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        expected = tiny_cnn_module(x).numpy()
    np.testing.assert_allclose(_run(handle.model, {spec.name: x.numpy()})[0], expected, rtol=1e-4, atol=1e-5)


def test_load_refuses_pt2_whose_weights_are_pickled(tiny_mlp):
    module = torch.nn.Linear(4, 2)
    src = zipfile.ZipFile(io.BytesIO(_pt2_bytes(module, torch.randn(2, 4))))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("model_weights_config.json"):
                config = json.loads(data)
                next(iter(config["config"].values()))["use_pickle"] = True
                data = json.dumps(config).encode()
            zf.writestr(info, data)
    with pytest.raises(PickleRefusedError, match="pickled Python object"):
        load(buf.getvalue(), "net.pt2")


def test_load_lowers_ir_version_when_newer_than_runtime_supports():
    model = _dynamic_hw_model()
    model.ir_version = 14  # what onnx 1.23's make_model writes; onnxruntime 1.31 reads up to 13
    handle = load(model.SerializeToString(), "m.onnx", input_shapes={"x": (1, 3, 8, 8)})
    assert handle.model.ir_version < 14
    assert _run(handle.model, {"x": np.ones((2, 3, 8, 8), np.float32)})[0].shape == (2, 4, 8, 8)


@pytest.mark.parametrize("opset", [9, 13, 21])
def test_load_accepts_onnx_opsets_9_to_21(tiny_cnn, tiny_cnn_module, opset: int):
    if opset <= 17:
        model = torch_to_onnx(tiny_cnn_module, [torch.randn(1, 3, 16, 16)], opset=opset)
    else:
        model = onnx.version_converter.convert_version(tiny_cnn.model, opset)
    handle = load(model.SerializeToString(), f"op{opset}.onnx")
    assert max(o.version for o in handle.model.opset_import if o.domain in ("", "ai.onnx")) == opset
    x = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)
    np.testing.assert_allclose(_run(handle.model, {"input": x})[0], _run(tiny_cnn.model, {"input": x})[0],
                               rtol=1e-4, atol=1e-5)


def test_fold_constants_skips_folds_that_would_blow_up_the_file():
    from optim.io.fold import fold_constants

    n = helper.make_node
    nodes = [n("Constant", [], ["shape"], value_ints=[4096, 4096]),
             n("ConstantOfShape", ["shape"], ["big"], value=numpy_helper.from_array(np.ones(1, np.float32))),
             n("Add", ["x", "big"], ["y"])]
    graph = helper.make_graph(nodes, "big", [helper.make_tensor_value_info("x", 1, [4096, 4096])],
                              [helper.make_tensor_value_info("y", 1, [4096, 4096])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    assert fold_constants(model) == 1  # only the Constant became an initializer
    assert [nd.op_type for nd in model.graph.node] == ["ConstantOfShape", "Add"]
    assert model.ByteSize() < 10_000


@pytest.mark.parametrize("protocol", range(0, 6))
@pytest.mark.parametrize("suffix", [".onnx", ".pt", ".bin", ""])
def test_load_refuses_a_raw_pickle_of_any_protocol_under_any_name(protocol, suffix, tmp_path):
    import pickle

    marker = tmp_path / "marker"

    class Payload:
        def __reduce__(self):
            return (__import__("os").system, (f"touch {marker}",))

    with pytest.raises(OptimError) as info:
        load(pickle.dumps(Payload(), protocol=protocol), f"model{suffix}")
    assert "unpickle" in str(info.value) or "not a format" in str(info.value)
    assert not marker.exists()


def test_pickle_scanner_resolves_stack_global_fed_by_short_binstring_and_memo():
    from optim.io.torch_import import pickle_globals

    direct = b"\x80\x04U\x02osU\x06system\x93U\x02id\x85R."
    via_memo = b"\x80\x04\x8c\x02os\x94\x8c\x06system\x94h\x00h\x01\x93U\x02id\x85R."
    assert pickle_globals(direct) == ["os system"]
    assert pickle_globals(via_memo) == ["os system"]
    assert pickle_globals(b"\x80\x04K\x01K\x02\x93.") == ["<unresolved STACK_GLOBAL>"]
