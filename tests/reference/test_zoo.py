from __future__ import annotations

import numpy as np
import onnx
import ort_runner
import pytest

from optim.errors import ConfigError
from optim.reference.zoo import ZOO_NAMES, zoo_model


def _run(model: onnx.ModelProto) -> np.ndarray:
    sess = ort_runner.session(model)
    inp = sess.get_inputs()[0]
    x = np.random.default_rng(0).standard_normal(inp.shape).astype(np.float32)
    return sess.run(None, {inp.name: x})[0]


def test_zoo_names_lists_the_architectures():
    assert set(ZOO_NAMES) == {"resnet18", "resnet50", "mobilenet_v2", "bert_base", "bert_tiny", "lenet_opset9"}


def test_bert_tiny_runs_at_any_batch_when_exported_with_dynamic_batch():
    model = zoo_model("bert_tiny", dynamic_batch=True)
    ops = {n.op_type for n in model.graph.node}
    assert {"MatMul", "Softmax", "LayerNormalization"} <= ops
    sess = ort_runner.session(model)
    inp = sess.get_inputs()[0]
    assert inp.shape[1:] == [16, 64] and not isinstance(inp.shape[0], int)
    x = np.random.default_rng(0).standard_normal((3, 16, 64)).astype(np.float32)
    out = sess.run(None, {inp.name: x})[0]
    assert out.shape == (3, 2)
    np.testing.assert_allclose(sess.run(None, {inp.name: x[1:2]})[0], out[1:2], rtol=1e-4, atol=1e-5)


def test_encoder_shape_bert_base_has_bert_base_parameter_count():
    from optim.reference.encoder import build_encoder

    params = sum(p.numel() for p in build_encoder("bert_base").blocks.parameters())
    assert abs(params - 85.05e6) / 85.05e6 < 0.01  # 12 × 7.09 M (BERT-base encoder without embeddings)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_zoo_model_runs_in_onnxruntime_with_imagenet_shapes(name: str):
    model = zoo_model(name)
    onnx.checker.check_model(model)
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 224, 224]
    assert _run(model).shape == (1, 1000)


def test_zoo_model_is_deterministic_per_seed_and_differs_across_seeds():
    a, b, c = zoo_model("lenet_opset9", seed=0), zoo_model("lenet_opset9", seed=0), zoo_model("lenet_opset9", seed=1)
    assert a.SerializeToString() == b.SerializeToString()
    assert a.SerializeToString() != c.SerializeToString()


def test_zoo_model_returns_fresh_proto_when_cached():
    a = zoo_model("lenet_opset9")
    a.graph.node.pop()
    assert len(zoo_model("lenet_opset9").graph.node) == len(a.graph.node) + 1


def test_lenet_opset9_keeps_unfolded_batchnorm_and_flatten():
    model = zoo_model("lenet_opset9")
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [9]
    ops = [n.op_type for n in model.graph.node]
    assert "BatchNormalization" in ops and "Flatten" in ops
    assert _run(model).shape == (1, 10)


def test_zoo_model_raises_config_error_when_name_unknown():
    with pytest.raises(ConfigError, match="resnet18"):
        zoo_model("vgg16")


def test_zoo_model_raises_config_error_when_exporter_unknown():
    with pytest.raises(ConfigError, match="dynamo"):
        zoo_model("resnet18", exporter="tf2onnx")


@pytest.mark.slow
def test_zoo_model_dynamo_export_embeds_weights_at_opset18():
    model = zoo_model("resnet18", exporter="dynamo")
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 18
    assert all(t.data_location != onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    weight_bytes = sum(len(t.raw_data) for t in model.graph.initializer)
    assert weight_bytes > 40e6  # ~11.7 M float32 parameters inline
    assert "BatchNormalization" not in {n.op_type for n in model.graph.node}
    assert _run(model).shape == (1, 1000)
