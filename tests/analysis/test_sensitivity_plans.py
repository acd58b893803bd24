"""Sensitivity ranks a constructed fragile layer first; plans respect their budgets; knapsack is exact."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from optim.analysis.plans import apply_bit_plan, bit_plan, knapsack, pruning_plan, uniform_bytes
from optim.analysis.sensitivity import analyze, perturb, ranking, weight_layers, zero_channels
from optim.errors import ConfigError
from optim.handle import ModelHandle
from optim.io.export import torch_to_onnx
from optim.measure.core import predict


@pytest.fixture(scope="module")
def fragile_mlp() -> tuple[ModelHandle, np.ndarray, np.ndarray]:
    """3 linear layers; the middle one has one huge outlier per row, so low-bit quantisation wipes
    out all its other weights. The others hold ±0.5 only, which every bit-width represents exactly."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Linear(64, 8), torch.nn.ReLU(),
                              torch.nn.Linear(8, 5))
    with torch.no_grad():
        for i in (0, 4):
            net[i].weight.copy_(torch.sign(torch.randn_like(net[i].weight)) * 0.5)
        w = torch.randn(8, 64) * 0.3
        w[:, 0] = 40.0
        net[2].weight.copy_(w)
    proto = torch_to_onnx(net, [torch.randn(1, 16)], dynamic_batch=True)
    handle = ModelHandle(model=proto, name="fragile")
    x = np.random.default_rng(0).standard_normal((300, 16)).astype(np.float32)
    y = predict(handle, x).argmax(1)
    return handle, x, y


def test_analyze_ranks_fragile_layer_first(fragile_mlp) -> None:
    handle, x, y = fragile_mlp
    df = analyze(handle, x, y, prune_levels=(0.5,), quant_bits=(4, 2))
    layers = weight_layers(handle.model)
    assert len(df) == len(layers) * 3
    top = ranking(df, "quant", 2)
    assert top["layer"].iloc[0] == layers[1].node
    assert top["drop"].iloc[0] > 5
    robust = df[(df["kind"] == "quant") & (df["layer"] != layers[1].node)]
    assert (robust["rel_error"] < 1e-5).all()


def test_zero_channels_removes_smallest_l1_slices() -> None:
    w = np.array([[1.0, 1.0], [0.1, 0.1], [5.0, 0.0], [0.0, 0.2]], dtype=np.float32)
    out, keep = zero_channels(w, 0, 0.5)
    assert keep.tolist() == [True, False, True, False]
    assert out[1].sum() == 0 and out[3].sum() == 0 and out[2, 0] == 5.0


def test_perturb_does_not_mutate_input(fragile_mlp) -> None:
    handle, _, _ = fragile_mlp
    before = handle.model.SerializeToString()
    perturb(handle.model, weight_layers(handle.model)[0], "prune", 0.5)
    assert handle.model.SerializeToString() == before


def test_knapsack_matches_brute_force_on_random_instances() -> None:
    rng = np.random.default_rng(1)
    for _ in range(30):
        groups = int(rng.integers(1, 5))
        costs = [list(rng.random(3)) for _ in range(groups)]
        weights = [list(rng.integers(1, 10, 3).astype(float)) for _ in range(groups)]
        budget = float(rng.integers(groups, 10 * groups))
        got = knapsack(costs, weights, budget, resolution=int(budget))
        feasible = [c for c in itertools.product(range(3), repeat=groups)
                    if sum(weights[g][k] for g, k in enumerate(c)) <= budget]
        if not feasible:
            assert got is None
            continue
        best = min(sum(costs[g][k] for g, k in enumerate(c)) for c in feasible)
        assert got is not None
        assert sum(weights[g][k] for g, k in enumerate(got)) <= budget
        assert sum(costs[g][k] for g, k in enumerate(got)) == pytest.approx(best)


def test_bit_plan_respects_budget_and_protects_fragile_layer(fragile_mlp) -> None:
    handle, x, y = fragile_mlp
    df = analyze(handle, x, y, prune_levels=(0.5,), quant_bits=(8, 4, 2))
    budget = uniform_bytes(handle, 4)
    plan = bit_plan(handle, df, budget)
    assert plan.used <= budget
    fragile = weight_layers(handle.model)[1].node
    assert plan.choices[fragile] == 8
    variant = apply_bit_plan(handle, plan)
    assert variant.meta["executable"] is False
    agree = (predict(variant, x).argmax(1) == y).mean()
    uniform4 = (predict(perturb_all(handle, 4), x).argmax(1) == y).mean()
    assert agree >= uniform4


def perturb_all(handle: ModelHandle, bits: int) -> ModelHandle:
    model = handle.model
    for la in weight_layers(model):
        model = perturb(model, la, "quant", bits)
    return handle.derive(model, f"uniform {bits}")


def test_bit_plan_raises_config_error_when_budget_too_small(fragile_mlp) -> None:
    handle, x, y = fragile_mlp
    df = analyze(handle, x, y, prune_levels=(0.5,), quant_bits=(8, 2))
    with pytest.raises(ConfigError, match="Raise the budget"):
        bit_plan(handle, df, 10, bits_choices=(8, 2))


def test_pruning_plan_respects_macs_budget(fragile_mlp) -> None:
    handle, x, y = fragile_mlp
    df = analyze(handle, x, y, prune_levels=(0.25, 0.5, 0.75), quant_bits=(8,))
    plan = pruning_plan(handle, df, 0.6)
    assert plan.used <= 0.6 + 1e-9
    assert set(plan.choices.values()) <= {0.0, 0.25, 0.5, 0.75}


def test_knapsack_returns_lightest_plan_when_budget_fits_it_exactly() -> None:
    weights = [[8.0, 4.0, 2.0], [8.0, 4.0, 2.0], [8.0, 4.0, 2.0]]
    costs = [[0.0, 1.0, 2.0]] * 3
    assert knapsack(costs, weights, 6.0, resolution=7) == [2, 2, 2]
    assert knapsack(costs, weights, 5.9, resolution=7) is None
