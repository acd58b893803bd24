"""Distillation on named multi-input data: teacher and student both see every array the user gave (token ids and
attention masks), so a model whose output depends on its mask distils against the user's masks, not ones."""

from __future__ import annotations

import numpy as np
import pytest
from quant_helpers import damaged

from optim.handle import ModelHandle
from optim.io.data import Dataset
from optim.measure.core import fidelity, predict
from optim.passes import distill
from optim.passes.base import PassContext
from optim.passes.distill import DistillConfig

CFG = DistillConfig(epochs=6, lr=3e-3, batch_size=32, patience=6)


def _named(tokens: dict[str, np.ndarray]) -> Dataset:
    return Dataset(x=tokens["input_ids"], y=None, name="tokens", x_name="input_ids",
                   feeds={"attention_mask": tokens["attention_mask"]})


def _rel_error(model: ModelHandle, teacher: ModelHandle, tokens: dict[str, np.ndarray]) -> float:
    feeds = {"attention_mask": tokens["attention_mask"]}
    return fidelity(predict(teacher, tokens["input_ids"], feeds=feeds),
                    predict(model, tokens["input_ids"], feeds=feeds)).rel_error


@pytest.fixture(scope="module")
def student(tiny_text: ModelHandle) -> ModelHandle:
    return damaged(tiny_text, 0.6)


def _student_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """The inputs of the student's every forward call while it learns (not the export's examples)."""
    seen: list[tuple] = []
    real = distill.train_student

    def spying(module, *args, **kwargs):
        hook = module.register_forward_pre_hook(lambda m, inputs: seen.append(inputs))
        try:
            return real(module, *args, **kwargs)
        finally:
            hook.remove()

    monkeypatch.setattr(distill, "train_student", spying)
    return seen


def test_distill_feeds_the_given_masks_to_the_student(tiny_text, student, text_tokens, monkeypatch) -> None:
    seen = _student_calls(monkeypatch)
    padded = text_tokens(200, seed=3, pad_from=2)
    out = distill.run(student, DistillConfig(epochs=1), PassContext(train=_named(padded), teacher=tiny_text))
    assert out.meta["distillation"]["inputs_from_data"] == ["input_ids", "attention_mask"]
    assert seen and all(len(args) == 2 for args in seen)
    masks = [args[1] for args in seen]
    assert all(int(m[:, 2:].sum()) == 0 and int(m[:, :2].min()) == 1 for m in masks)  # the user's, not ones
    assert sum(len(m) for m in masks) >= 200  # every training and held-out row went through the student


@pytest.mark.slow
def test_distill_on_padded_masks_recovers_the_teacher_on_padded_inputs(tiny_text, student, text_tokens) -> None:
    padded, held = text_tokens(300, seed=4, pad_from=2), text_tokens(100, seed=5, pad_from=2)
    full = {**padded, "attention_mask": np.ones_like(padded["attention_mask"])}
    on_padded = distill.run(student, CFG, PassContext(train=_named(padded), teacher=tiny_text))
    on_full = distill.run(student, CFG, PassContext(train=_named(full), teacher=tiny_text))
    # the loss is computed on what the data gives: the starting KL differs with the masks alone
    kl_padded = on_padded.meta["distillation"]["val_kl_before"]
    kl_full = on_full.meta["distillation"]["val_kl_before"]
    assert not np.isclose(kl_padded, kl_full, rtol=0.05), (kl_padded, kl_full)
    before = _rel_error(student, tiny_text, held)
    after = _rel_error(on_padded, tiny_text, held)
    assert after < 0.7 * before, (before, after)


def test_distill_feeds_the_files_scalar_to_teacher_and_student(tiny_scalar: ModelHandle, monkeypatch) -> None:
    seen = _student_calls(monkeypatch)
    x = np.random.default_rng(6).standard_normal((100, 4)).astype(np.float32)
    data = Dataset(x=x, y=None, name="audio", x_name="x", constants={"sr": np.array(8000, np.int64)})
    out = distill.run(tiny_scalar, DistillConfig(epochs=1), PassContext(train=data, teacher=tiny_scalar))
    assert out.meta["distillation"]["inputs_from_data"] == ["x", "sr"]
    assert seen and all(int(args[1]) == 8000 for args in seen)
    # the student is the teacher and both see sr = 8000: nothing to learn (it would be if the student got 16000)
    assert out.meta["distillation"]["val_kl_before"] < 1e-6
