"""Loading and feeding models as users bring them (issue 11): IR-3 zoo graphs, token inputs, the CLI sweep
without data. The onnx wheel's own backend-test models are used as they ship (no download)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import ort_runner
import pandas as pd
import pytest
from onnx import TensorProto, helper, numpy_helper

from optim.errors import MissingInputError
from optim.handle import ModelHandle
from optim.io.load import load, synthesize_inputs
from optim.io.model_data import check_compatible, synthetic_dataset
from optim.io.shapes import record_shapes, recorded_shapes

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


def test_ir3_zoo_graph_with_constantofshape_weights_loads_and_matches_the_original() -> None:
    path = LIGHT / "light_squeezenet.onnx"
    original = onnx.load(path)
    assert original.ir_version == 3 and any(n.op_type == "ConstantOfShape" for n in original.graph.node)
    handle = load(path)
    assert handle.model.ir_version >= 4
    assert handle.meta["folded_nodes"] > 0
    inits = {t.name for t in handle.model.graph.initializer}
    assert not inits & {i.name for i in handle.model.graph.input}  # weights are constants, not inputs
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    want = ort_runner.run(path, {"data_0": x})[0]
    got = ort_runner.run(handle, {"data_0": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def _token_model(vocab: int = 37) -> onnx.ModelProto:
    """input_ids → Gather(embedding) masked by attention_mask; plus a scalar sample rate that must be > 0."""
    emb = numpy_helper.from_array(np.random.default_rng(0).standard_normal((vocab, 8)).astype(np.float32), "emb")
    nodes = [
        helper.make_node("Gather", ["emb", "input_ids"], ["e"]),
        helper.make_node("Cast", ["attention_mask"], ["m"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["m", "axes"], ["m3"]),
        helper.make_node("Mul", ["e", "m3"], ["y0"]),
        helper.make_node("Cast", ["sr"], ["srf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["y0", "srf"], ["y"]),
    ]
    axes = numpy_helper.from_array(np.array([2], np.int64), "axes")
    graph = helper.make_graph(nodes, "tok", [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"]),
        helper.make_tensor_value_info("sr", TensorProto.INT64, []),
    ], [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "sequence", 8])], [emb, axes])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_token_inputs_are_synthesised_within_the_vocabulary_with_masks_of_ones() -> None:
    model = load(_token_model(vocab=37).SerializeToString(), "tok.onnx",
                 input_shapes={"input_ids": (1, 12), "attention_mask": (1, 12)}).model
    feeds = synthesize_inputs(model, batch=64, seed=3)
    ids = feeds["input_ids"]
    assert ids.shape == (64, 12) and ids.dtype == np.int64
    assert ids.min() >= 0 and ids.max() < 37 and len(np.unique(ids)) > 10
    assert (feeds["attention_mask"] == 1).all()
    assert int(feeds["sr"]) == 16000
    out = ort_runner.run(model, feeds)[0]
    assert np.abs(out).sum() > 0


def test_recorded_shapes_fix_every_dim_the_batch_included() -> None:
    model = _token_model(vocab=37)
    record_shapes(model, {"input_ids": (2, 5), "attention_mask": (2, 5)})
    assert recorded_shapes(model) == {"input_ids": (2, 5), "attention_mask": (2, 5)}
    feeds = synthesize_inputs(model, batch=64)
    assert feeds["input_ids"].shape == feeds["attention_mask"].shape == (2, 5)
    assert feeds["input_ids"].max() < 37


def test_integer_first_input_gets_an_integer_synthetic_dataset_that_checks_compatible() -> None:
    model = _token_model(vocab=37)
    handle = load(model.SerializeToString(), "tok.onnx", input_shapes={"input_ids": (1, 12),
                                                                        "attention_mask": (1, 12)})
    ds = synthetic_dataset(handle, 20)
    assert ds.x.shape == (20, 12) and ds.x.dtype.kind == "i" and ds.y is None
    assert ds.x.max() < 37
    check_compatible(handle, ds)  # the mask and the rate are synthesised at prediction time


def test_synthetic_dataset_names_an_input_it_cannot_synthesise(tiny_cnn: ModelHandle) -> None:
    model = onnx.ModelProto()
    model.CopyFrom(tiny_cnn.model)
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "height"
    with pytest.raises(MissingInputError, match="input"):
        synthetic_dataset(ModelHandle(model=model, name="m", source_format="onnx"), 4)


def test_cli_sweep_runs_without_data_on_synthesised_inputs_and_takes_input_shapes(
    tiny_cnn: ModelHandle, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from optim.__main__ import main

    model = onnx.ModelProto()
    model.CopyFrom(tiny_cnn.model)
    for i, name in ((0, "batch"), (2, "h"), (3, "w")):
        model.graph.input[0].type.tensor_type.shape.dim[i].dim_param = name
    onnx.save(model, tmp_path / "m.onnx")
    base = ["sweep", str(tmp_path / "m.onnx"), "--ratios", "0", "--bits", "32,8", "--samples", "8",
            "--budget", "0.02", "--store", str(tmp_path / "s"), "--csv", str(tmp_path / "out.csv")]
    assert main(base) == 2
    assert "--input-shape" in capsys.readouterr().err
    assert main([*base, "--input-shape", "input=1,3,16,16"]) == 0
    out, err = capsys.readouterr()
    assert "8 synthesised inputs" in err and "Pareto set" in out
    df = pd.read_csv(tmp_path / "out.csv")
    assert set(df["status"]) == {"ok"} and (df["n_eval"] == 8).all()
    assert df["top1"].isna().all() and df["agreement"].notna().all()


@pytest.mark.slow
def test_int8_static_on_an_opset9_zoo_graph_builds_a_graph_ort_opens() -> None:
    from optim.measure.core import predict
    from optim.passes.base import PassContext
    from optim.passes.quantize import QuantizeConfig, run

    handle = load(LIGHT / "light_squeezenet.onnx")
    calib = synthetic_dataset(handle, 8)
    q = run(handle, QuantizeConfig(mode="int8_static", calib_samples=8), PassContext(calib=calib))
    opsets = {o.domain: o.version for o in q.model.opset_import}
    assert opsets.get("", opsets.get("ai.onnx", 0)) >= 13  # per-channel DequantizeLinear needs opset 13
    assert any(n.op_type == "DequantizeLinear" for n in q.model.graph.node)
    x = synthetic_dataset(handle, 4, seed=5).x
    ref, got = predict(handle, x), predict(q, x)  # the "light" zoo weights are constants: outputs are
    assert got.shape == ref.shape and np.isfinite(got).all()  # uniform, so fidelity says nothing here
