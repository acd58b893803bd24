"""Per-layer plans from sensitivities: mixed precision (and per-layer pruning ratios) under a budget.

Bit-width plan: each weight layer picks one bit-width; cost = that layer's measured drop (from
``optim.analysis.sensitivity``, assumed additive across layers — the usual first-order assumption of
sensitivity-based mixed precision), size = packed weights + one FP32 scale per output channel. The
choice minimising the summed cost under a byte budget is a multiple-choice knapsack, solved exactly
by dynamic programming over the budget discretised into ``resolution`` steps.

Pruning plan: the same knapsack with per-layer channel ratios and a MACs budget (a layer's MACs
scale with its kept output channels).

Own module because this is ~100 lines of dynamic programming over our own sensitivity table.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import pandas as pd
from onnx import numpy_helper

from optim.analysis.sensitivity import WeightLayer, weight_layers
from optim.errors import ConfigError
from optim.handle import ModelHandle
from optim.passes._quant.core import fake_quantize, packed_bytes, replace_initializers


@dataclass(frozen=True)
class Plan:
    """Chosen level per layer, with the predicted total cost and resource use."""

    choices: dict[str, float]  # layer node name -> bits (or pruning ratio)
    predicted_drop: float
    used: float  # bytes (bit plan) or MACs fraction (pruning plan)
    budget: float


def _cost(df: pd.DataFrame, kind: str, layer: str, level: float) -> float:
    row = df[(df["kind"] == kind) & (df["layer"] == layer) & (np.isclose(df["level"], level))]
    if row.empty:
        raise ConfigError(f"The sensitivity table has no {kind} {level:g} entry for layer {layer}; "
                          "run the sensitivity analysis with that level first.")
    # clip at 0: noise can make a harmless change look like a gain; rel_error breaks ties
    return max(float(row["drop"].iloc[0]), 0.0) + 1e-3 * float(row["rel_error"].iloc[0])


def knapsack(costs: list[list[float]], weights: list[list[float]], budget: float,
             resolution: int = 2000) -> list[int] | None:
    """Multiple-choice knapsack: one option per group, minimise summed cost with summed weight ≤ budget.

    Weights are rounded *up* to ``budget / resolution`` units, so a returned plan always respects the
    budget. Returns the chosen option index per group, or None if nothing fits.
    """
    unit = budget / resolution if budget > 0 else 1.0
    w_units = [[int(np.ceil(w / unit - 1e-9)) for w in ws] for ws in weights]
    inf = float("inf")
    best = np.full(resolution + 1, inf)
    best[0] = 0.0
    picks: list[np.ndarray] = []
    for g, cs in enumerate(costs):
        new = np.full(resolution + 1, inf)
        pick = np.full(resolution + 1, -1, dtype=int)
        for k, c in enumerate(cs):
            wu = w_units[g][k]
            if wu > resolution:
                continue
            cand = np.full(resolution + 1, inf)
            cand[wu:] = best[: resolution + 1 - wu] + c
            better = cand < new
            new[better], pick[better] = cand[better], k
        best = new
        picks.append(pick)
    end = int(np.argmin(best))
    if not np.isfinite(best[end]):
        # rounding up can reject a plan that fits exactly: fall back to the lightest option per group
        lightest = [int(np.argmin(ws)) for ws in weights]
        return lightest if sum(weights[g][k] for g, k in enumerate(lightest)) <= budget else None
    chosen, cap = [], end
    for g in range(len(costs) - 1, -1, -1):
        k = int(picks[g][cap])
        chosen.append(k)
        cap -= w_units[g][k]
    return chosen[::-1]


def layer_bytes(layer: WeightLayer, bits: int) -> int:
    return packed_bytes(layer.params, bits, layer.shape[layer.out_axis])


def bit_plan(handle: ModelHandle, sensitivity: pd.DataFrame, budget_bytes: float,
             bits_choices: tuple[int, ...] = (8, 4, 2)) -> Plan:
    """Per-layer bit-widths minimising the summed sensitivity drop with packed weights ≤ budget_bytes."""
    layers = weight_layers(handle.model)
    costs = [[_cost(sensitivity, "quant", la.node, b) for b in bits_choices] for la in layers]
    weights = [[float(layer_bytes(la, b)) for b in bits_choices] for la in layers]
    chosen = knapsack(costs, weights, budget_bytes)
    if chosen is None:
        smallest = sum(min(w) for w in weights)
        raise ConfigError(f"No bit-width plan fits {budget_bytes:,.0f} bytes of weights; the smallest "
                          f"possible is {smallest:,.0f} bytes. Raise the budget.")
    choices = {la.node: float(bits_choices[k]) for la, k in zip(layers, chosen, strict=True)}
    used = sum(weights[i][k] for i, k in enumerate(chosen))
    drop = sum(costs[i][k] for i, k in enumerate(chosen))
    return Plan(choices, drop, used, budget_bytes)


def uniform_bytes(handle: ModelHandle, bits: int) -> int:
    """Packed weight bytes if every weight layer used ``bits`` — the budget of 'same size as uniform'."""
    return sum(layer_bytes(la, bits) for la in weight_layers(handle.model))


def apply_bit_plan(handle: ModelHandle, plan: Plan) -> ModelHandle:
    """Fake-quantise each layer at its planned bit-width (a simulated variant; size counted packed)."""
    model = handle.copy_model()
    inits = {t.name: t for t in model.graph.initializer}
    arrays: dict[str, np.ndarray] = {}
    stored = packed = 0
    bits_total = 0.0
    for la in weight_layers(model):
        bits = int(plan.choices.get(la.node, 32))
        if bits >= 32:
            continue
        w = numpy_helper.to_array(inits[la.weight])
        arrays[la.weight], scale = fake_quantize(w, bits, per_channel_axis=la.out_axis)
        stored += w.nbytes
        packed += packed_bytes(w.size, bits, scale.size)
        bits_total += bits * w.size
    replace_initializers(model, arrays)
    n = sum(la.params for la in weight_layers(model) if la.node in plan.choices)
    mean_bits = bits_total / n if n else 32.0
    size = len(model.SerializeToString())
    return handle.derive(model, f"mixed precision (mean {mean_bits:.2f} bits)", bits=int(round(mean_bits)),
                         executable=False, effective_size_bytes=size - stored + packed,
                         quant_mode="mixed", mixed_precision={k: int(v) for k, v in plan.choices.items()})


def _layer_macs(model: onnx.ModelProto) -> dict[str, int]:
    from optim.graph.summary import summarize

    layers = summarize(ModelHandle(model=model, name="plan")).layers
    return {str(r.node): int(r.macs) for r in layers.itertuples()}


def pruning_plan(handle: ModelHandle, sensitivity: pd.DataFrame, macs_fraction: float,
                 ratios: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75)) -> Plan:
    """Per-layer pruning ratios minimising the summed drop with weight-layer MACs ≤ fraction of today's.

    A layer's MACs are taken to scale with its kept output channels (first order: the next layer's
    input shrinks too, so the real saving is larger and the plan errs on the safe side).
    """
    if not 0 < macs_fraction <= 1:
        raise ConfigError(f"macs_fraction must be in (0, 1], got {macs_fraction}.")
    outputs = {o.name for o in handle.model.graph.output}
    producers = {n.name: set(n.output) for n in handle.model.graph.node}
    # a layer that writes a graph output (the classifier) keeps its outputs: they are the classes
    layers = [la for la in weight_layers(handle.model) if not producers.get(la.node, set()) & outputs]
    macs = _layer_macs(handle.model)
    total = float(sum(macs.get(la.node, 0) for la in layers)) or 1.0
    costs = [[0.0 if r == 0 else _cost(sensitivity, "prune", la.node, r) for r in ratios] for la in layers]
    weights = [[macs.get(la.node, 0) * (1 - r) / total for r in ratios] for la in layers]
    chosen = knapsack(costs, weights, macs_fraction)
    if chosen is None:
        raise ConfigError(f"No pruning plan reaches {macs_fraction:.0%} of the MACs with ratios up to "
                          f"{max(ratios):.0%}; raise the budget.")
    choices = {la.node: float(ratios[k]) for la, k in zip(layers, chosen, strict=True)}
    used = sum(weights[i][k] for i, k in enumerate(chosen))
    return Plan(choices, sum(costs[i][k] for i, k in enumerate(chosen)), used, macs_fraction)
