"""A sweep with distillation and automatic mixed precision builds, measures and marks those variants."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from optim.handle import ModelHandle
from optim.io.data import Dataset
from optim.measure.core import predict
from optim.sweep.run import SweepConfig, run_sweep


def test_run_sweep_adds_distilled_and_auto_bits_variants(tiny_cnn: ModelHandle, tmp_path: Path, store) -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((400, 3, 16, 16)).astype(np.float32)
    y = predict(tiny_cnn, x).argmax(1).astype(np.int64)
    test, train = Dataset(x=x[:150], y=y[:150], name="t"), Dataset(x=x[150:], y=y[150:], name="tr")
    config = SweepConfig(ratios=(0, 0.5), bits=(32,), prune_kinds=("structured",), distill=True,
                         distill_budget_s=5, distill_epochs=1, auto_bits=True, latency_budget_s=0.02,
                         profile_runs=2)
    df = store.variants(run_sweep(tiny_cnn, test, train.subset(64), config, store, train=train))
    df = df.set_index("variant_key")
    assert set(df.index) == {"none:0:32:all", "none:0:0:all", "structured:0.5:32:all", "structured:0.5:32:all:kd"}
    assert (df["status"] == "ok").all(), df["error"].tolist()
    assert df.loc["structured:0.5:32:all:kd", "distilled"] == 1
    assert "distilled" in df.loc["structured:0.5:32:all:kd", "label"]
    assert df.loc["structured:0.5:32:all", "distilled"] == 0
    auto = df.loc["none:0:0:all"]
    assert auto["executable"] == 0
    assert auto["effective_size_bytes"] < 0.5 * df.loc["none:0:32:all", "size_bytes"]
    # distillation keeps its best epoch (the start, if nothing improved): never worse than the pruned model
    assert df.loc["structured:0.5:32:all:kd", "rel_error"] <= df.loc["structured:0.5:32:all", "rel_error"] + 1e-9
    assert '"distillation"' in df.loc["structured:0.5:32:all:kd", "meta_json"]


def test_run_sweep_auto_kind_prunes_with_a_per_layer_plan(tiny_cnn: ModelHandle, tmp_path: Path, store) -> None:
    rng = np.random.default_rng(4)
    x = rng.standard_normal((300, 3, 16, 16)).astype(np.float32)
    y = predict(tiny_cnn, x).argmax(1).astype(np.int64)
    data = Dataset(x=x, y=y, name="d")
    config = SweepConfig(ratios=(0, 0.5), bits=(32,), prune_kinds=("structured", "auto"), latency_budget_s=0.02,
                         profile_runs=2)
    df = store.variants(run_sweep(tiny_cnn, data, data.subset(100), config, store)).set_index("variant_key")
    auto = df.loc["auto:0.5:32:all"]
    assert auto["status"] == "ok", auto["error"]
    assert "auto-struct 50%" in auto["label"]
    assert auto["macs"] < df.loc["none:0:32:all", "macs"]
    assert '"pruning_plan"' in auto["meta_json"]


def test_prune_structured_applies_layer_ratios_only_to_listed_layers(tiny_cnn: ModelHandle) -> None:
    from optim.graph.summary import summarize
    from optim.passes import get_pass

    p = get_pass("prune_structured")
    out = p.run(tiny_cnn, p.config_cls(ratio=0.0, layer_ratios=(("/pw/Conv", 0.5),)))
    before = summarize(tiny_cnn).layers.set_index("node")
    after = summarize(out).layers
    assert summarize(out).params < summarize(tiny_cnn).params
    conv1_after = after[after["op_type"] == "Conv"]["params"].iloc[0]
    assert conv1_after == before.loc["/conv1/Conv", "params"]  # unlisted first conv keeps every channel
