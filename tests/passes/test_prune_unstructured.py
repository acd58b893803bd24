from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper
from quant_helpers import run_model, wide_cnn

from optim.errors import ConfigError, PassUnavailableError
from optim.handle import ModelHandle
from optim.passes._quant.core import weight_refs
from optim.passes.base import get_pass
from optim.passes.prune_unstructured import PruneUnstructuredConfig, magnitude_masks, prunable_weights, run


@pytest.fixture(scope="module")
def cnn() -> ModelHandle:
    return wide_cnn()


def _arrays(handle: ModelHandle) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in handle.model.graph.initializer}


def test_run_does_not_mutate_input(tiny_cnn: ModelHandle) -> None:
    before = tiny_cnn.content_hash
    out = run(tiny_cnn, PruneUnstructuredConfig(ratio=0.5))
    assert ModelHandle(model=tiny_cnn.model, name="x").content_hash == before
    assert out.content_hash != before


def test_run_is_registered_as_prune_unstructured() -> None:
    assert get_pass("prune_unstructured").config_cls is PruneUnstructuredConfig


@pytest.mark.parametrize("scope", ["layer", "global"])
@pytest.mark.parametrize("ratio", [0.3, 0.7])
def test_run_sparsity_matches_ratio(cnn: ModelHandle, scope: str, ratio: float) -> None:
    out = run(cnn, PruneUnstructuredConfig(ratio=ratio, scope=scope))
    assert out.meta["sparsity"] == pytest.approx(ratio, abs=0.01)
    assert out.meta["prune_kind"] == "unstructured" and out.meta["prune_ratio"] == ratio
    if scope == "layer":
        assert all(s == pytest.approx(ratio, abs=0.01) for s in out.meta["layer_sparsity"].values())


def test_run_compressed_size_shrinks_while_file_size_stays(cnn: ModelHandle) -> None:
    out = run(cnn, PruneUnstructuredConfig(ratio=0.6))
    assert out.meta["compressed_bytes"] < 0.75 * out.meta["compressed_bytes_before"]
    assert abs(out.size_bytes - cnn.size_bytes) < 0.01 * cnn.size_bytes
    assert "not" in out.meta["note"] and "latency" in out.meta["note"]


def test_run_leaves_biases_and_classifier_untouched_by_default(cnn: ModelHandle) -> None:
    before, after = _arrays(cnn), _arrays(run(cnn, PruneUnstructuredConfig(ratio=0.8)))
    classifier = weight_refs(cnn.model)[-1].name
    pruned = set(prunable_weights(cnn.model))
    assert classifier not in pruned
    for name, arr in before.items():
        if name not in pruned:
            np.testing.assert_array_equal(after[name], arr)


def test_run_prunes_classifier_when_asked(cnn: ModelHandle) -> None:
    classifier = weight_refs(cnn.model)[-1].name
    after = _arrays(run(cnn, PruneUnstructuredConfig(ratio=0.5, include_classifier=True)))
    assert (after[classifier] == 0).mean() == pytest.approx(0.5, abs=0.01)


def test_magnitude_masks_zero_the_smallest_weights() -> None:
    w = {"a": np.array([[0.1, -5.0], [0.2, 3.0]], np.float32), "b": np.array([[-0.05, 4.0]], np.float32)}
    layer = magnitude_masks(w, 0.5, "layer")
    np.testing.assert_array_equal(layer["a"], [[False, True], [False, True]])
    glob = magnitude_masks(w, 0.5, "global")  # 3 of 6 zeroed: 0.05, 0.1, 0.2
    assert glob["a"].sum() + glob["b"].sum() == 3 and not glob["b"][0, 0]


def test_run_global_scope_prunes_small_weight_layers_harder(cnn: ModelHandle) -> None:
    per_layer = run(cnn, PruneUnstructuredConfig(ratio=0.5, scope="global")).meta["layer_sparsity"]
    assert max(per_layer.values()) - min(per_layer.values()) > 0.05


def test_run_zero_ratio_keeps_outputs(cnn: ModelHandle) -> None:
    x = np.random.default_rng(0).standard_normal((4, 3, 16, 16)).astype(np.float32)
    out = run(cnn, PruneUnstructuredConfig(ratio=0.0))
    np.testing.assert_allclose(run_model(out, x), run_model(cnn, x), rtol=1e-5, atol=1e-6)


def test_run_raises_when_only_classifier_has_weights() -> None:
    import torch

    from optim.io.export import torch_to_onnx

    h = ModelHandle(torch_to_onnx(torch.nn.Linear(4, 2), [torch.randn(1, 4)]), "lin")
    with pytest.raises(PassUnavailableError, match="include_classifier"):
        run(h, PruneUnstructuredConfig())


def test_config_rejects_ratio_out_of_range() -> None:
    with pytest.raises(ConfigError, match="ratio"):
        PruneUnstructuredConfig(ratio=1.0)


def _if_model() -> ModelHandle:
    """``If(flag)``: both branches MatMul x by a weight and then by a classifier; the then-branch's weight is a
    graph initializer, the else-branch's a Constant node inside it (as in silero-vad's exports)."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    w_outer, w_const = rng.standard_normal((8, 16)).astype(np.float32), rng.standard_normal((8, 16)).astype(np.float32)
    heads = [rng.standard_normal((16, 3)).astype(np.float32) for _ in range(2)]

    def branch(tag: str, weight: str, extra: list) -> onnx.GraphProto:
        nodes = [*extra, helper.make_node("MatMul", ["x", weight], [f"h_{tag}"]),
                 helper.make_node("MatMul", [f"h_{tag}", f"head_{tag}"], [f"y_{tag}"])]
        return helper.make_graph(nodes, tag, [], [helper.make_tensor_value_info(f"y_{tag}", TensorProto.FLOAT,
                                                                                [1, 3])])

    const = helper.make_node("Constant", [], ["w_const"], value=numpy_helper.from_array(w_const, "w_const"))
    node = helper.make_node("If", ["flag"], ["y"], then_branch=branch("a", "w_outer", []),
                            else_branch=branch("b", "w_const", [const]))
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8]),
                      helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        [numpy_helper.from_array(w_outer, "w_outer"), numpy_helper.from_array(heads[0], "head_a"),
         numpy_helper.from_array(heads[1], "head_b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return ModelHandle(model=model, name="if_model")


def test_run_prunes_weights_inside_if_branches_but_not_their_classifiers() -> None:
    handle = _if_model()
    assert not weight_refs(handle.model)  # nothing at the top level
    assert set(prunable_weights(handle.model)) == {"w_outer", "w_const"}
    out = run(handle, PruneUnstructuredConfig(ratio=0.5))
    arrays = _arrays(out)
    assert (arrays["w_outer"] == 0).mean() == 0.5 and not (arrays["head_a"] == 0).any()
    else_branch = next(a.g for a in out.model.graph.node[0].attribute if a.name == "else_branch")
    w_const = numpy_helper.to_array(else_branch.node[0].attribute[0].t)
    assert (w_const == 0).mean() == 0.5 and out.meta["sparsity"] == 0.5
    x = np.random.default_rng(1).standard_normal((1, 8)).astype(np.float32)
    for flag, weight in ((True, arrays["w_outer"]), (False, w_const)):
        sess = ort.InferenceSession(out.model_bytes, providers=["CPUExecutionProvider"])
        got = sess.run(None, {"x": x, "flag": np.array(flag)})[0]
        head = arrays["head_a" if flag else "head_b"]
        np.testing.assert_allclose(got, x @ weight @ head, rtol=1e-5, atol=1e-5)


def test_refusals_without_weight_tensors_say_why_in_one_sentence() -> None:
    from onnx import TensorProto, helper

    from optim.passes.quantize import QuantizeConfig
    from optim.passes.quantize import run as quantize

    with pytest.raises(PassUnavailableError, match="inside If/Loop/Scan bodies"):
        quantize(_if_model(), QuantizeConfig(mode="int8_dynamic"))
    node = helper.make_node("LinearClassifier", ["x"], ["label", "scores"], domain="ai.onnx.ml",
                            coefficients=[0.5] * 8, intercepts=[0.0, 0.0], classlabels_ints=[0, 1])
    graph = helper.make_graph([node], "lin", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("label", TensorProto.INT64, [1]),
                               helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)],
                              ir_version=8)
    linear = ModelHandle(model=model, name="logreg")
    for refuse in (lambda: quantize(linear, QuantizeConfig(mode="int8_dynamic")),
                   lambda: run(linear, PruneUnstructuredConfig(ratio=0.5))):
        with pytest.raises(PassUnavailableError, match="classic-ML operators \\(LinearClassifier\\)") as err:
            refuse()
        assert str(err.value).count(". ") == 0 and "already quantised" not in str(err.value)
