"""Structured pruning pass: sizes drop as expected, graphs stay valid, inputs stay untouched."""

from __future__ import annotations

import bundled
import numpy as np
import onnx
import ort_runner
import pytest
import torch
from onnx import helper, numpy_helper
from test_onnx2torch import tiny_vit_proto

from optim.errors import ConfigError
from optim.handle import ModelHandle
from optim.passes._prune.onnx2torch import UnsupportedOpsError, example_inputs
from optim.passes._prune.recalibrate import RECAL_MACS, RECAL_MIN, recal_samples
from optim.passes.base import PassContext, get_pass
from optim.passes.prune_structured import StructuredPruneConfig, run


def _ort(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return ort_runner.run_first(model, x)


def _params(model: onnx.ModelProto) -> int:
    return sum(numpy_helper.to_array(t).size for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT)


def _conv_macs(model: onnx.ModelProto) -> int:
    """MACs of Conv/Gemm/MatMul from ONNX shape inference (independent of the pass's own counting)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in [*inferred.graph.value_info, *inferred.graph.output]}
    weights = {t.name: t.dims for t in model.graph.initializer}
    macs = 0
    for n in model.graph.node:
        if n.op_type in ("Conv", "Gemm", "MatMul") and n.input[1] in weights:
            w = weights[n.input[1]]
            out = shapes[n.output[0]]
            if n.op_type == "Conv":
                macs += int(np.prod(out)) * int(np.prod(w[1:]))
            else:
                macs += int(np.prod(out)) * int(w[1] if n.op_type == "Gemm" else w[0])
    return macs


def test_prune_structured_registered_and_config_validates_fields() -> None:
    assert get_pass("prune_structured").config_cls is StructuredPruneConfig
    with pytest.raises(ConfigError, match="ratio"):
        StructuredPruneConfig(ratio=0.99)
    with pytest.raises(ConfigError, match="importance"):
        StructuredPruneConfig(importance="magic")


def test_prune_structured_does_not_mutate_input(tiny_cnn: ModelHandle) -> None:
    before, meta = tiny_cnn.content_hash, dict(tiny_cnn.meta)
    model_bytes = tiny_cnn.model.SerializeToString()
    out = run(tiny_cnn, StructuredPruneConfig(ratio=0.5))
    assert tiny_cnn.model.SerializeToString() == model_bytes
    assert ModelHandle(tiny_cnn.model, "x").content_hash == before and tiny_cnn.meta == meta
    assert out.content_hash != before


@pytest.mark.parametrize("ratio", [0.3, 0.5])
def test_prune_structured_params_and_macs_drop_quadratically_when_uniform(tiny_cnn: ModelHandle,
                                                                          ratio: float) -> None:
    out = run(tiny_cnn, StructuredPruneConfig(ratio=ratio, recalibrate=False))
    onnx.checker.check_model(out.model)
    conv_w = [t for t in out.model.graph.initializer if len(t.dims) == 4]
    conv_w0 = [t for t in tiny_cnn.model.graph.initializer if len(t.dims) == 4]
    conv_params = sum(np.prod(t.dims) for t in conv_w if t.dims[1] != 1 and t.dims[1] != 3)
    conv_params0 = sum(np.prod(t.dims) for t in conv_w0 if t.dims[1] != 1 and t.dims[1] != 3)
    expected = (1 - ratio) ** 2  # inner convs lose input and output channels
    assert conv_params / conv_params0 == pytest.approx(expected, rel=0.2)
    macs_ratio = _conv_macs(out.model) / _conv_macs(tiny_cnn.model)
    assert (1 - ratio) ** 2 * 0.8 < macs_ratio < (1 - ratio) * 1.05
    assert out.meta["prune_kind"] == "structured" and out.meta["prune_ratio"] == ratio
    assert _params(out.model) < _params(tiny_cnn.model)


def test_prune_structured_keeps_output_shape_and_runs_in_onnxruntime(tiny_cnn: ModelHandle,
                                                                      tiny_images: tuple) -> None:
    out = run(tiny_cnn, StructuredPruneConfig(ratio=0.5, importance="l1", round_to=4))
    logits = _ort(out.model, tiny_images[0][:1])
    assert logits.shape == (1, 10) and np.isfinite(logits).all()
    assert [i.name for i in out.model.graph.input] == ["input"]
    assert [o.name for o in out.model.graph.output] == ["logits"]


def test_prune_structured_ratio_zero_keeps_the_function(tiny_cnn: ModelHandle, tiny_images: tuple) -> None:
    out = run(tiny_cnn, StructuredPruneConfig(ratio=0.0))
    x = tiny_images[0][:1]
    np.testing.assert_allclose(_ort(out.model, x), _ort(tiny_cnn.model, x), atol=1e-4)


@pytest.mark.parametrize("importance", ["random", "taylor"])
def test_prune_structured_global_scope_shrinks_mlp(tiny_mlp: ModelHandle, importance: str) -> None:
    cfg = StructuredPruneConfig(ratio=0.5, scope="global", importance=importance)
    out = run(tiny_mlp, cfg)
    assert _params(out.model) < 0.75 * _params(tiny_mlp.model)
    assert _ort(out.model, np.zeros((1, 12), np.float32)).shape == (1, 4)


def test_prune_structured_prunes_only_mlp_hidden_units_when_transformer() -> None:
    proto = tiny_vit_proto(dynamic_batch=True)
    handle = ModelHandle(proto, "vit")
    out = run(handle, StructuredPruneConfig(ratio=0.5, prune_heads=False))
    shapes = sorted(tuple(t.dims) for t in out.model.graph.initializer if len(t.dims) == 2)
    assert (32, 32) in shapes and (32, 96) in shapes  # attention width untouched
    assert (32, 64) not in shapes and ((32, 32) in shapes)  # MLP 32→64→32 became 32→32→32
    x = example_inputs(proto, batch=3, seed=1)[0].numpy()
    assert _ort(out.model, x).shape == (3, 10)  # the symbolic batch survived the export
    assert out.meta["structured_pruning"]["dynamic_batch"] is True


def test_prune_structured_removes_attention_heads_when_prune_heads() -> None:
    from test_onnx2torch import max_abs_diff_vs_ort

    handle = ModelHandle(tiny_vit_proto(), "vit")
    out = run(handle, StructuredPruneConfig(ratio=0.5, prune_heads=True))
    assert out.meta["structured_pruning"]["heads_removed"] == 2  # 4 heads → 2
    shapes = sorted(tuple(t.dims) for t in out.model.graph.initializer if len(t.dims) == 2)
    assert (32, 48) in shapes and (16, 32) in shapes  # fused qkv 32→96 became 32→48, proj 32→32 became 16→32
    assert max_abs_diff_vs_ort(out.model) < 1e-4  # the exported graph converts again (no If/unsupported ops)


def test_prune_structured_raises_unsupported_ops_error_listing_the_op(tiny_cnn: ModelHandle) -> None:
    model = tiny_cnn.copy_model()
    model.graph.node.append(helper.make_node("NonMaxSuppression", ["logits"], ["extra"]))
    with pytest.raises(UnsupportedOpsError, match="NonMaxSuppression"):
        run(ModelHandle(model, "bad"), StructuredPruneConfig(ratio=0.3))


def test_prune_structured_reports_progress_and_honours_cancel(tiny_cnn: ModelHandle) -> None:
    seen: list[float] = []
    run(tiny_cnn, StructuredPruneConfig(ratio=0.3), PassContext(progress=lambda f, m: seen.append(f)))
    assert seen[0] == 0.0 and seen[-1] == 1.0
    from optim.errors import CancelledError

    with pytest.raises(CancelledError):
        run(tiny_cnn, StructuredPruneConfig(ratio=0.3), PassContext(should_cancel=lambda: True))


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float((a.argmax(1) == b.argmax(1)).mean())


def _ort_batched(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    dim0 = model.graph.input[0].type.tensor_type.shape.dim[0]
    if dim0.HasField("dim_value"):
        return np.concatenate([_ort(model, x[i:i + 1]) for i in range(len(x))])
    return _ort(model, x)


@pytest.mark.slow
def test_prune_structured_recalibration_improves_fidelity_when_trained_sample() -> None:
    handle, test, train = bundled.sample("resnet_digits")
    ctx = PassContext(calib=train)
    x = np.asarray(test.x[:300], np.float32)
    ref = _ort_batched(handle.model, x)
    scores = {}
    for recal in (False, True):
        out = run(handle, StructuredPruneConfig(ratio=0.3, recalibrate=recal, calib_samples=128), ctx)
        scores[recal] = _agreement(ref, _ort_batched(out.model, x))
        assert out.meta["structured_pruning"]["calibration"].startswith("calibration data")
    assert scores[True] > scores[False] + 0.2, scores


class _FlattenNet(torch.nn.Module):
    """conv → relu → flatten → linear: the flatten→linear coupling (one channel = 16 features)."""

    def __init__(self, view: bool = False) -> None:
        super().__init__()
        self.view = view
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1, stride=2)
        self.hidden = torch.nn.Linear(8 * 4 * 4, 12)
        self.fc = torch.nn.Linear(12, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.conv(x))
        y = y.reshape(y.shape[0], 128) if self.view else y.flatten(1)  # view: channel count in the shape
        return self.fc(torch.relu(self.hidden(y)))


@pytest.mark.parametrize("view", [False, True])
def test_prune_structured_removes_exactly_the_dead_channels_when_they_have_zero_weights(view: bool) -> None:
    torch.manual_seed(0)
    net = _FlattenNet(view).eval()
    with torch.no_grad():  # channels 1, 3, 4, 6 of the conv and hidden units 0..5 contribute nothing
        for c in (1, 3, 4, 6):
            net.conv.weight[c] = 0.0
            net.conv.bias[c] = 0.0
            net.hidden.weight[:, c * 16:(c + 1) * 16] = 0.0
        net.hidden.weight[:6] = 0.0
        net.hidden.bias[:6] = 0.0
        net.fc.weight[:, :6] = 0.0
    from optim.io.export import torch_to_onnx

    handle = ModelHandle(torch_to_onnx(net, [torch.randn(1, 3, 8, 8)], dynamic_batch=view), "flatten_net")
    out = run(handle, StructuredPruneConfig(ratio=0.5, recalibrate=False))
    dims = sorted(tuple(t.dims) for t in out.model.graph.initializer if len(t.dims) > 1)
    assert dims == [(4, 3, 3, 3), (5, 6), (6, 64)]
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(_ort(out.model, x), _ort(handle.model, x), atol=1e-5)
    assert out.meta["structured_pruning"]["dynamic_batch"] is view
    if view:  # the symbolic batch survives: a batch of 3 gives the same rows
        x3 = np.concatenate([x, x * 0.5, -x])
        np.testing.assert_allclose(_ort(out.model, x3), _ort(handle.model, x3), atol=1e-5)


def test_prune_structured_recalibration_reduces_logit_error_when_calibration_data(tiny_cnn: ModelHandle,
                                                                                    tiny_images: tuple) -> None:
    from optim.io.data import Dataset

    x = tiny_images[0]
    ctx = PassContext(calib=Dataset(x[:120], None, "calib"))
    ref = np.concatenate([_ort(tiny_cnn.model, x[i:i + 1]) for i in range(120, 160)])
    errors = {}
    for recal in (False, True):
        out = run(tiny_cnn, StructuredPruneConfig(ratio=0.5, recalibrate=recal), ctx)
        got = np.concatenate([_ort(out.model, x[i:i + 1]) for i in range(120, 160)])
        errors[recal] = float(np.linalg.norm(got - ref) / np.linalg.norm(ref))
    assert errors[True] < 0.5 * errors[False], errors
    assert out.meta["structured_pruning"]["recalibrated_layers"] >= 3


def test_prune_structured_output_converts_again_and_prunes_further(tiny_cnn: ModelHandle) -> None:
    from test_onnx2torch import max_abs_diff_vs_ort

    once = run(tiny_cnn, StructuredPruneConfig(ratio=0.3))
    assert max_abs_diff_vs_ort(once.model) < 1e-4
    twice = run(once, StructuredPruneConfig(ratio=0.3))
    assert _params(twice.model) < _params(once.model)
    assert twice.history == [*once.history, "prune_structured(ratio=0.3, uniform, l2)"]


class _HeadsInterleaved(torch.nn.Module):
    """qkv laid out as (heads, 3, head_dim): a layout head pruning does not handle → must leave as is."""

    def __init__(self, d: int = 16, heads: int = 4) -> None:
        super().__init__()
        self.h, self.qkv, self.proj, self.fc = heads, torch.nn.Linear(d, 3 * d), torch.nn.Linear(d, d), \
            torch.nn.Linear(d, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, self.h, 3, d // self.h).permute(3, 0, 2, 1, 4).unbind(0)
        a = torch.softmax(q @ k.transpose(-2, -1), -1)
        return self.fc(self.proj((a @ v).transpose(1, 2).reshape(b, n, d)).mean(1))


def test_prune_heads_leaves_model_unchanged_when_layout_check_fails() -> None:
    from optim.io.export import torch_to_onnx
    from optim.passes._prune.heads import prune_heads
    from optim.passes._prune.onnx2torch import to_torch

    torch.manual_seed(0)
    proto = torch_to_onnx(_HeadsInterleaved().eval(), [torch.randn(1, 5, 16)])
    module = to_torch(proto)
    x = [torch.randn(2, 5, 16)]
    with torch.no_grad():
        before = module(*x)
    result, removed, n = prune_heads(module, 0.5, "l2", x)
    assert n == 0 and removed == {}
    with torch.no_grad():
        torch.testing.assert_close(result(*x), before)


def test_prune_structured_keeps_original_weight_layer_names(tiny_cnn) -> None:
    from optim.passes import get_pass

    p = get_pass("prune_structured")
    out = p.run(tiny_cnn, p.config_cls(ratio=0.5))
    names = {n.name for n in tiny_cnn.model.graph.node if n.op_type in ("Conv", "Gemm")}
    assert names <= {n.name for n in out.model.graph.node}
    assert len({n.name for n in out.model.graph.node}) == len(out.model.graph.node)


def test_recal_samples_fit_the_recalibration_compute_budget() -> None:
    x = [torch.zeros(40, 3, 8, 8), torch.ones(40, 2)]
    assert [t.shape[0] for t in recal_samples(x, int(RECAL_MACS // 10))] == [10, 10]
    assert recal_samples(x, int(RECAL_MACS))[0].shape[0] == RECAL_MIN  # a huge model still gets a few samples
    assert recal_samples(x, 1000)[0].shape[0] == 40  # a small one keeps every sample it was given
