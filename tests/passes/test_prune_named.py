"""Structured pruning recalibrates on named multi-input data: the kept channels' statistics are matched on the
token ids *and* masks the user gave, so a model calibrated on padded text serves padded text better."""

from __future__ import annotations

import numpy as np

from optim.handle import ModelHandle
from optim.io.data import Dataset
from optim.measure.core import fidelity, predict
from optim.passes.base import PassContext, get_pass


def _named(tokens: dict[str, np.ndarray]) -> Dataset:
    return Dataset(x=tokens["input_ids"], y=None, name="tokens", x_name="input_ids",
                   feeds={"attention_mask": tokens["attention_mask"]})


def test_recalibration_uses_the_given_masks(tiny_text: ModelHandle, text_tokens) -> None:
    spec = get_pass("prune_structured")
    cfg = spec.make_config(ratio=0.5)
    padded = text_tokens(128, seed=1, pad_from=2)
    full = {**padded, "attention_mask": np.ones_like(padded["attention_mask"])}
    held = text_tokens(100, seed=7, pad_from=2)
    feeds = {"attention_mask": held["attention_mask"]}
    ref = predict(tiny_text, held["input_ids"], feeds=feeds)
    errors = {}
    for name, tokens in (("padded", padded), ("full", full)):
        out = spec.run(tiny_text, cfg, PassContext(calib=_named(tokens)))
        assert out.meta["structured_pruning"]["recalibrated_layers"] > 0
        errors[name] = fidelity(ref, predict(out, held["input_ids"], feeds=feeds)).rel_error
    assert errors["padded"] < errors["full"], errors  # calibrated on the masks it is then used with
