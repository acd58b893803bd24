from __future__ import annotations

import numpy as np
import pytest
from quant_helpers import dataset, run_model, wide_cnn

from optim.errors import ConfigError
from optim.handle import ModelHandle
from optim.passes import optimize_graph, prune_unstructured, quantize
from optim.passes.base import PassContext, get_pass
from optim.reference.zoo import zoo_model


@pytest.fixture(scope="module")
def lenet() -> ModelHandle:
    """opset-9 graph with an un-folded BatchNormalization after a Conv, then Relu."""
    return ModelHandle(zoo_model("lenet_opset9"), "lenet")


def _x(handle: ModelHandle, n: int = 2) -> np.ndarray:
    dims = [d.dim_value for d in handle.model.graph.input[0].type.tensor_type.shape.dim]
    return np.random.default_rng(0).standard_normal((n, *dims[1:])).astype(np.float32)


@pytest.mark.parametrize("level", ["basic", "extended", "all"])
def test_run_does_not_mutate_input(tiny_cnn: ModelHandle, level: str) -> None:
    before = tiny_cnn.content_hash
    run_ = get_pass("optimize_graph").run
    out = run_(tiny_cnn, optimize_graph.OptimizeGraphConfig(level=level), None)
    assert ModelHandle(model=tiny_cnn.model, name="x").content_hash == before
    assert out.meta["opt_level"] == level


def test_run_histogram_shows_fewer_nodes_for_conv_bn_relu(lenet: ModelHandle) -> None:
    out = optimize_graph.run(lenet, optimize_graph.OptimizeGraphConfig(level="extended"))
    before, after = out.meta["op_histogram_before"], out.meta["op_histogram_after"]
    assert before.get("BatchNormalization", 0) >= 1 and "BatchNormalization" not in after
    assert sum(after.values()) < sum(before.values()) == out.meta["nodes_before"]
    x = _x(lenet, 1)
    np.testing.assert_allclose(run_model(out, x), run_model(lenet, x), rtol=1e-4, atol=1e-4)


def test_run_extended_fuses_conv_relu_into_contrib_op(tiny_cnn: ModelHandle) -> None:
    out = optimize_graph.run(tiny_cnn, optimize_graph.OptimizeGraphConfig(level="extended"))
    assert "FusedConv (com.microsoft)" in out.meta["op_histogram_after"]
    assert out.meta["nodes_after"] < out.meta["nodes_before"] and out.meta["portable"] is True


def test_run_level_all_is_marked_not_portable(tiny_cnn: ModelHandle) -> None:
    out = optimize_graph.run(tiny_cnn, optimize_graph.OptimizeGraphConfig(level="all"))
    assert out.meta["portable"] is False and "same CPU" in out.meta["portability_note"]
    x = _x(tiny_cnn, 1)
    np.testing.assert_allclose(run_model(out, x), run_model(tiny_cnn, x), rtol=1e-4, atol=1e-4)


def test_config_rejects_unknown_level() -> None:
    with pytest.raises(ConfigError, match="level"):
        optimize_graph.OptimizeGraphConfig(level="max")


def test_prune_quantize_optimize_compose_and_run_in_onnxruntime() -> None:
    cnn = wide_cnn()
    x = np.random.default_rng(0).standard_normal((64, 3, 16, 16)).astype(np.float32)
    h1 = prune_unstructured.run(cnn, prune_unstructured.PruneUnstructuredConfig(ratio=0.3))
    h2 = quantize.run(h1, quantize.QuantizeConfig(mode="int8_static"), PassContext(calib=dataset(x)))
    h3 = optimize_graph.run(h2, optimize_graph.OptimizeGraphConfig(level="extended"))
    assert len(h3.history) == 3 and h3.meta["prune_kind"] == "unstructured" and h3.meta["bits"] == 8
    ref, got = run_model(h1, x), run_model(h3, x)
    assert got.shape == ref.shape == (64, 10)
    assert float((ref.argmax(1) == got.argmax(1)).mean()) >= 0.9
    assert h3.size_bytes < 0.35 * cnn.size_bytes
