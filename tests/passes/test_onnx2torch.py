"""The ONNX → torch converter against ONNX Runtime on random inputs (its naive reference)."""

from __future__ import annotations

import bundled
import numpy as np
import onnx
import ort_runner
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from optim.errors import PassUnavailableError
from optim.handle import ModelHandle
from optim.io.export import torch_to_onnx
from optim.passes._prune.onnx2torch import (
    SUPPORTED_OPS,
    UnsupportedOpsError,
    example_inputs,
    remap_reshape,
    to_torch,
    unsupported_ops,
)


class TinyAttention(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.h, self.qkv, self.proj = heads, nn.Linear(d, 3 * d), nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.h, d // self.h).permute(2, 0, 3, 1, 4).unbind(0)
        a = torch.softmax(q @ k.transpose(-2, -1) * (d // self.h) ** -0.5, -1)
        return self.proj((a @ v).transpose(1, 2).reshape(b, n, d))


class TinyViT(nn.Module):
    """Patch conv, class token, position embedding, attention, GELU MLP: the transformer op mix."""

    def __init__(self, d: int = 32, heads: int = 4, classes: int = 10) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, d, 4, 4)
        self.cls = nn.Parameter(torch.randn(1, 1, d) * 0.1)
        self.pos = nn.Parameter(torch.randn(1, 17, d) * 0.1)
        self.ln1, self.attn, self.ln2 = nn.LayerNorm(d), TinyAttention(d, heads), nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
        self.head = nn.Linear(d, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.patch(x).flatten(2).transpose(1, 2)
        y = torch.cat([self.cls.expand(y.shape[0], -1, -1), y], 1) + self.pos
        y = y + self.attn(self.ln1(y))
        y = y + self.mlp(self.ln2(y))
        return self.head(y[:, 0])


def tiny_vit_proto(dynamic_batch: bool = False) -> onnx.ModelProto:
    torch.manual_seed(2)
    return torch_to_onnx(TinyViT().eval(), [torch.randn(1, 3, 16, 16)], dynamic_batch=dynamic_batch)


def max_abs_diff_vs_ort(model: onnx.ModelProto, batch: int = 1, seed: int = 3) -> float:
    xs = example_inputs(model, batch=batch, seed=seed)
    sess = ort_runner.session(model)
    ref = sess.run(None, {i.name: x.numpy() for i, x in zip(sess.get_inputs(), xs, strict=True)})
    with torch.no_grad():
        out = to_torch(model)(*xs)
    outs = out if isinstance(out, tuple) else (out,)
    return max(float(np.abs(o.numpy() - r).max()) for o, r in zip(outs, ref, strict=True))


def test_to_torch_matches_onnxruntime_when_tiny_cnn(tiny_cnn: ModelHandle) -> None:
    assert max_abs_diff_vs_ort(tiny_cnn.model) < 1e-4


def test_to_torch_matches_onnxruntime_when_tiny_mlp(tiny_mlp: ModelHandle) -> None:
    assert max_abs_diff_vs_ort(tiny_mlp.model) < 1e-4


def test_to_torch_matches_onnxruntime_when_transformer_with_dynamic_batch() -> None:
    proto = tiny_vit_proto(dynamic_batch=True)
    assert max_abs_diff_vs_ort(proto, batch=1) < 1e-4
    assert max_abs_diff_vs_ort(proto, batch=3) < 1e-4


def _opset18_graph() -> onnx.ModelProto:
    """Hand-written graph: asymmetric Conv pads, Clip with min/max inputs, ReduceMean axes input, ..."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 2, 3, 3)).astype(np.float32), "w")
    fc = numpy_helper.from_array(rng.standard_normal((4, 5)).astype(np.float32), "fc")
    bias = numpy_helper.from_array(rng.standard_normal(5).astype(np.float32), "fcb")
    consts = [numpy_helper.from_array(np.array(v, dtype=np.float32), n) for n, v in (("lo", 0.0), ("hi", 6.0))]
    consts += [numpy_helper.from_array(np.array(v, dtype=np.int64), n) for n, v in (("axes", [2, 3]),
                                                                                  ("sq", [2, 3]))]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[0, 1, 1, 0], strides=[2, 1]),
        helper.make_node("Clip", ["c", "lo", "hi"], ["r"]),
        helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], pads=[0, 0, 1, 1]),
        helper.make_node("ReduceMean", ["p", "axes"], ["m"], keepdims=1),
        helper.make_node("Squeeze", ["m", "sq"], ["s"]),
        helper.make_node("MatMul", ["s", "fc"], ["mm"]),
        helper.make_node("Add", ["mm", "fcb"], ["a"]),
        helper.make_node("Erf", ["a"], ["e"]),
        helper.make_node("Softmax", ["e"], ["y"], axis=-1),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 9, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])],
                              initializer=[w, fc, bias, *consts])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model


def test_to_torch_matches_onnxruntime_when_opset18_axes_inputs_and_asymmetric_pads() -> None:
    assert max_abs_diff_vs_ort(_opset18_graph()) < 1e-4


def test_to_torch_turns_matmul_add_into_linear_layer() -> None:
    module = to_torch(_opset18_graph())
    kinds = [type(m).__name__ for m in module.layers.values()]
    assert kinds == ["Conv2d", "Linear"]
    assert module.layers["matmul_5"].bias is not None


@pytest.mark.parametrize("name", ["lenet_opset9", pytest.param("mobilenet_v2", marks=pytest.mark.slow)])
def test_to_torch_matches_onnxruntime_when_zoo_graph(name: str) -> None:
    from optim.reference.zoo import zoo_model

    assert max_abs_diff_vs_ort(zoo_model(name)) < 1e-4


def test_to_torch_matches_onnxruntime_when_bundled_samples() -> None:
    for name in bundled.sample_names():
        handle, _, _ = bundled.sample(name)
        assert max_abs_diff_vs_ort(handle.model) < 1e-4, name


def test_unsupported_ops_lists_ops_outside_the_documented_set() -> None:
    model = _opset18_graph()
    model.graph.node.append(helper.make_node("NonMaxSuppression", ["y"], ["z"]))
    model.graph.node.append(helper.make_node("FusedThing", ["y"], ["q"], domain="com.example"))
    assert unsupported_ops(model) == ["NonMaxSuppression", "com.example.FusedThing"]
    assert unsupported_ops(_opset18_graph()) == []
    assert {"Conv", "Gemm", "ReduceMean", "Reshape", "Erf", "Clip"} <= SUPPORTED_OPS


def test_to_torch_raises_unsupported_ops_error_naming_ops_when_graph_has_unknown_op() -> None:
    model = _opset18_graph()
    model.graph.node.append(helper.make_node("NonMaxSuppression", ["y"], ["z"]))
    with pytest.raises(UnsupportedOpsError) as err:
        to_torch(model)
    assert isinstance(err.value, PassUnavailableError)
    assert "unavailable for this model" in str(err.value) and "NonMaxSuppression" in str(err.value)
    assert err.value.ops == ["NonMaxSuppression"]


def test_remap_reshape_recomputes_flatten_target_when_channels_shrink() -> None:
    assert remap_reshape((1, 8, 2, 2), (1, 32), (1, 4, 2, 2)) == [-1, 16]
    assert remap_reshape((1, 512, 1, 1), (1, 512), (5, 256, 1, 1)) == [-1, 256]
    assert remap_reshape((1, 32, 16), (1, 32, 4, 4), (1, 16, 16)) == [-1, 16, 4, 4]


def test_to_torch_matches_onnxruntime_when_conv_weight_is_computed_in_graph() -> None:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 2, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Neg", ["w"], ["wn"]),
             helper.make_node("Conv", ["x", "wn"], ["y"], pads=[1, 0, 0, 1], strides=[1, 2])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 7, 7])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=[w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    assert len(to_torch(model).layers) == 0  # not a prunable layer, but it runs
    assert max_abs_diff_vs_ort(model) < 1e-4


def _real_model_ops_graph() -> onnx.ModelProto:
    """Conv → PRelu(1,C,1,1) → LRN → Resize ×2 → ConvTranspose → InstanceNorm, plus an HF-style mask path."""
    rng = np.random.default_rng(0)

    def init(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.3, name)

    inits = [init("w1", 8, 3, 3, 3), init("b1", 8), init("slope", 1, 8, 1, 1), init("wt", 8, 6, 2, 2),
             init("bt", 6), init("g", 6), init("beta", 6),
             numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales"),
             numpy_helper.from_array(np.array([], np.float32), "roi"),
             numpy_helper.from_array(np.array(0.0, np.float32), "zero")]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("PRelu", ["c", "slope"], ["p"]),
        helper.make_node("LRN", ["p"], ["l"], size=3),
        helper.make_node("Resize", ["l", "roi", "scales"], ["r"], mode="nearest"),
        helper.make_node("ConvTranspose", ["r", "wt", "bt"], ["t"], strides=[2, 2]),
        helper.make_node("InstanceNormalization", ["t", "g", "beta"], ["n"]),
        helper.make_node("GreaterOrEqual", ["n", "zero"], ["ge"]),
        helper.make_node("IsNaN", ["n"], ["nan"]),
        helper.make_node("Not", ["nan"], ["ok"]),
        helper.make_node("And", ["ge", "ok"], ["keep"]),
        helper.make_node("Where", ["keep", "n", "zero"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "real_ops", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6, 32, 32])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_converter_runs_ops_of_real_models_like_ort_and_gives_per_channel_ones_layers() -> None:
    model = _real_model_ops_graph()
    assert unsupported_ops(model) == []
    module = to_torch(model)
    kinds = {type(m).__name__ for m in module.modules()}
    assert {"PReLU", "ConvTranspose2d", "InstanceNorm"} <= kinds
    assert max_abs_diff_vs_ort(model) < 1e-4


def test_structured_pruning_goes_through_prelu_lrn_resize_and_keeps_outputs_shaped() -> None:
    model = _real_model_ops_graph()
    from optim.passes.prune_structured import StructuredPruneConfig, run

    out = run(ModelHandle(model, "real_ops"), StructuredPruneConfig(ratio=0.5))
    conv = next(t for t in out.model.graph.initializer if list(t.dims)[1:] == [3, 3, 3])
    assert conv.dims[0] == 4  # half the conv's 8 channels, and PRelu's slope pruned with them
    y = ort_runner.run(out.model, {"x": np.zeros((1, 3, 8, 8), np.float32)})[0]
    assert y.shape == (1, 6, 32, 32)
