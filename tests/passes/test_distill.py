"""Distillation pass: improves a damaged student, works without labels, QAT bakes quantised weights."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from quant_helpers import damaged

from optim.errors import ConfigError
from optim.handle import ModelHandle
from optim.io.data import Dataset
from optim.measure.core import fidelity, predict
from optim.passes import PassContext, get_pass
from optim.passes.distill import DistillConfig, FakeQuantSTE, distill_loss


@pytest.fixture(scope="module")
def teacher_data(tiny_cnn: ModelHandle) -> tuple[Dataset, np.ndarray]:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((600, 3, 16, 16)).astype(np.float32)
    logits = predict(tiny_cnn, x)
    return Dataset(x=x, y=logits.argmax(1).astype(np.int64), name="teacher-labelled"), logits


def _rel_error(student: ModelHandle, x: np.ndarray, ref: np.ndarray) -> float:
    return fidelity(ref, predict(student, x)).rel_error


def test_distill_improves_damaged_student_without_labels(tiny_cnn: ModelHandle, teacher_data) -> None:
    data, _ = teacher_data
    unlabelled = Dataset(x=data.x[:400], y=None, name="unlabelled")
    held_x, held_ref = data.x[400:], predict(tiny_cnn, data.x[400:])
    student = damaged(tiny_cnn, 0.6)
    before = _rel_error(student, held_x, held_ref)
    cfg = DistillConfig(epochs=8, lr=3e-3, batch_size=32, patience=8)
    out = get_pass("distill").run(student, cfg, PassContext(train=unlabelled, teacher=tiny_cnn))
    after = _rel_error(out, held_x, held_ref)
    assert after < 0.6 * before
    assert out.meta["distilled"] is True
    assert out.meta["distillation"]["labels_used"] is False


def test_distill_uses_labels_when_present(tiny_cnn: ModelHandle, teacher_data) -> None:
    data, _ = teacher_data
    out = get_pass("distill").run(damaged(tiny_cnn, 0.3), DistillConfig(epochs=1),
                                  PassContext(train=data, teacher=tiny_cnn))
    assert out.meta["distillation"]["labels_used"] is True
    assert out.meta["distillation"]["epochs_run"] == 1


def test_distill_does_not_mutate_input(tiny_cnn: ModelHandle, teacher_data) -> None:
    data, _ = teacher_data
    student = damaged(tiny_cnn, 0.3)
    before = student.content_hash
    bytes_before = student.model.SerializeToString()
    get_pass("distill").run(student, DistillConfig(epochs=1), PassContext(train=data, teacher=tiny_cnn))
    assert student.model.SerializeToString() == bytes_before
    assert student.content_hash == before


def test_distill_raises_config_error_when_no_training_data(tiny_cnn: ModelHandle) -> None:
    with pytest.raises(ConfigError, match="training inputs"):
        get_pass("distill").run(tiny_cnn, DistillConfig(), PassContext(teacher=tiny_cnn))


def test_distill_config_names_field_when_out_of_range() -> None:
    with pytest.raises(ConfigError, match="temperature"):
        DistillConfig(temperature=0.1)


def test_distill_loss_is_zero_when_student_equals_teacher() -> None:
    t = torch.randn(8, 5)
    assert float(distill_loss(t.clone(), t, None, 0.5, 4.0)) == pytest.approx(0.0, abs=1e-6)
    labels = t.argmax(1)
    assert float(distill_loss(t.clone(), t, labels, 1.0, 4.0)) == pytest.approx(
        float(torch.nn.functional.cross_entropy(t, labels)), rel=1e-5)


def test_fake_quant_ste_passes_gradient_and_uses_few_levels() -> None:
    w = torch.randn(4, 10, requires_grad=True)
    q = FakeQuantSTE(3)(w)
    q.sum().backward()
    assert torch.allclose(w.grad, torch.ones_like(w))
    for row in q.detach():
        assert len(torch.unique(row)) <= 7  # 3 bits symmetric: -3..3


def test_qat_exports_weights_on_the_quantisation_grid(tiny_cnn: ModelHandle, teacher_data) -> None:
    data, _ = teacher_data
    out = get_pass("distill").run(damaged(tiny_cnn, 0.1), DistillConfig(epochs=1, qat_bits=4),
                                  PassContext(train=data, teacher=tiny_cnn))
    conv_weights = [numpy_helper.to_array(i) for i in out.model.graph.initializer
                    if numpy_helper.to_array(i).ndim == 4 and numpy_helper.to_array(i).shape[1] > 1]
    assert conv_weights
    for w in conv_weights:
        for row in w.reshape(w.shape[0], -1):
            assert len(np.unique(row)) <= 15  # 4 bits symmetric: -7..7
    assert isinstance(out.model, onnx.ModelProto)
