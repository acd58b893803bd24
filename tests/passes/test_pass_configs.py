"""Typed pass configs: built explicitly, unknown and inapplicable keys refused by name, Literals checked."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from optim.errors import ConfigError
from optim.passes.base import list_passes, literal_choices
from optim.passes.optimize_graph import OptimizeGraphConfig
from optim.passes.prune_structured import StructuredPruneConfig
from optim.passes.prune_unstructured import PruneUnstructuredConfig
from optim.passes.quantize import QuantizeConfig
from optim.sweep.executors import make_config


@pytest.mark.parametrize("name", [p.name for p in list_passes()])
def test_make_config_raises_naming_a_key_the_pass_has_no_field_for(name: str) -> None:
    with pytest.raises(ConfigError, match="'no_such_knob'"):
        make_config(name, no_such_knob=1)


def test_make_config_refuses_importance_for_unstructured_pruning() -> None:
    with pytest.raises(ConfigError, match="'importance'"):
        make_config("prune_unstructured", ratio=0.5, importance="l2")
    assert make_config("prune_structured", ratio=0.5, importance="l1").importance == "l1"


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"mode": "int8_static", "bits": 4}, "bits"),
    ({"mode": "fp16", "quant_format": "qdq"}, "quant_format"),
    ({"mode": "int8_dynamic", "activation_type": "uint8"}, "activation_type"),
    ({"mode": "int4", "reduce_range": False}, "reduce_range"),
    ({"mode": "fake", "bits": 3, "calib_samples": 64}, "calib_samples"),
    ({"mode": "int8_static", "int4_other_layers": "fp32"}, "int4_other_layers"),
])
def test_quantize_config_raises_when_a_field_does_not_apply_to_the_mode(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        QuantizeConfig(**kwargs)


def test_quantize_config_fills_the_defaults_of_the_fields_its_mode_reads() -> None:
    static = QuantizeConfig()
    assert (static.quant_format, static.activation_type, static.weight_type, static.reduce_range) == \
        ("qdq", "uint8", "int8", True)
    assert static.bits is None and static.int4_other_layers is None
    assert QuantizeConfig(mode="fake").bits == 4
    dynamic = QuantizeConfig(mode="int8_dynamic")
    assert dynamic.weight_type == "int8" and dynamic.quant_format is None and dynamic.calib_samples is None


@pytest.mark.parametrize(("make", "field"), [
    (lambda: QuantizeConfig(mode="int3"), "mode"),
    (lambda: QuantizeConfig(quant_format="qlinear"), "quant_format"),
    (lambda: QuantizeConfig(mode="fake", bits=1), "bits"),
    (lambda: StructuredPruneConfig(scope="local"), "scope"),
    (lambda: StructuredPruneConfig(round_to=3), "round_to"),
    (lambda: PruneUnstructuredConfig(scope="network"), "scope"),
    (lambda: OptimizeGraphConfig(level="disable"), "level"),
])
def test_literal_fields_are_checked_at_construction(make: typing.Callable[[], object], field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        make()


def test_structured_pruning_refuses_per_layer_ratios_with_global_scope() -> None:
    with pytest.raises(ConfigError, match="layer_ratios"):
        StructuredPruneConfig(layer_ratios=(("/conv1/Conv", 0.5),), scope="global")
    assert StructuredPruneConfig(layer_ratios=(("/conv1/Conv", 0.5),)).scope == "uniform"


@pytest.mark.parametrize("spec", list_passes(), ids=lambda s: s.name)
def test_choices_metadata_lists_exactly_the_literal_values(spec) -> None:  # noqa: ANN001
    hints = typing.get_type_hints(spec.config_cls)
    for f in dataclasses.fields(spec.config_cls):
        choices = literal_choices(hints[f.name])
        if choices is not None:
            assert list(f.metadata.get("choices", [])) == list(choices), f.name
