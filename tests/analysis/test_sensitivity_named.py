"""Per-layer sensitivity on named multi-input data: every layer is judged on the masks the user gave."""

from __future__ import annotations

import numpy as np

from optim.analysis.sensitivity import analyze
from optim.handle import ModelHandle


def test_sensitivity_is_measured_on_the_given_masks(tiny_text: ModelHandle, text_tokens) -> None:
    padded = text_tokens(96, seed=2, pad_from=2)
    ones = np.ones_like(padded["attention_mask"])
    kw = {"prune_levels": (0.5,), "quant_bits": (2,)}
    on_padded = analyze(tiny_text, padded["input_ids"], feeds={"attention_mask": padded["attention_mask"]}, **kw)
    on_ones = analyze(tiny_text, padded["input_ids"], feeds={"attention_mask": ones}, **kw)
    synthesised = analyze(tiny_text, padded["input_ids"], **kw)  # no mask given: ones are synthesised
    assert len(on_padded) == len(on_ones) > 0
    assert not np.allclose(on_padded["rel_error"], on_ones["rel_error"])
    np.testing.assert_allclose(synthesised["rel_error"], on_ones["rel_error"])
