"""INT8 static calibration on named multi-input data: every array the user gave (token ids, masks) reaches ORT's
calibrator batch by batch, and the activation ranges follow the mask the user gave, not a synthesised one."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from optim.errors import ShapeMismatchError
from optim.handle import ModelHandle
from optim.io.data import Dataset
from optim.passes._quant import calib as quant_calib
from optim.passes.base import PassContext
from optim.passes.quantize import QuantizeConfig, run

STATIC = QuantizeConfig(mode="int8_static", calib_samples=64)


def _named(tokens: dict[str, np.ndarray], with_mask: bool = True) -> Dataset:
    feeds = {"attention_mask": tokens["attention_mask"]} if with_mask else None
    return Dataset(x=tokens["input_ids"], y=None, name="tokens", x_name="input_ids", feeds=feeds)


def _scales(model: onnx.ModelProto) -> dict[str, float]:
    """Every activation QuantizeLinear's scale, by the tensor it quantises (weights excluded)."""
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    return {n.input[0]: float(inits[n.input[1]].reshape(-1)[0]) for n in model.graph.node
            if n.op_type == "QuantizeLinear" and n.input[0] not in inits}


def _fed_batches(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, np.ndarray]]:
    """Every batch the calibration reader hands ORT's calibrator, as it is handed."""
    fed: list[dict[str, np.ndarray]] = []
    real = quant_calib.ArrayReader.get_next

    def spy(self):
        out = real(self)
        if out is not None:
            fed.append(out)
        return out

    monkeypatch.setattr(quant_calib.ArrayReader, "get_next", spy)
    return fed


def test_calibration_reader_yields_every_named_array(tiny_text: ModelHandle, text_tokens, monkeypatch) -> None:
    quant_calib.clear_cache()
    tokens = text_tokens(64, seed=1, pad_from=2)
    fed = _fed_batches(monkeypatch)
    run(tiny_text, STATIC, PassContext(calib=_named(tokens)))
    assert fed and all(set(f) == {"input_ids", "attention_mask"} for f in fed)
    got = {k: np.concatenate([f[k] for f in fed]) for k in ("input_ids", "attention_mask")}
    assert len(got["attention_mask"]) == 64
    np.testing.assert_array_equal(got["attention_mask"], tokens["attention_mask"])  # the user's mask, not ones
    np.testing.assert_array_equal(got["input_ids"], tokens["input_ids"])


def test_calibration_ranges_follow_the_given_mask(tiny_text: ModelHandle, text_tokens) -> None:
    quant_calib.clear_cache()
    padded = text_tokens(64, seed=1, pad_from=2)  # 2 of 6 tokens kept: the masked sum is ~3x smaller
    full = {**padded, "attention_mask": np.ones_like(padded["attention_mask"])}
    with_padded = _scales(run(tiny_text, STATIC, PassContext(calib=_named(padded))).model)
    with_full = _scales(run(tiny_text, STATIC, PassContext(calib=_named(full))).model)
    synthesised = _scales(run(tiny_text, STATIC, PassContext(calib=_named(padded, with_mask=False))).model)
    assert with_padded.keys() == with_full.keys() and with_padded
    differ = [k for k in with_padded if not np.isclose(with_padded[k], with_full[k], rtol=0.05)]
    assert differ, (with_padded, with_full)
    # no mask in the data: the mask is synthesised (ones), which is the full-mask calibration
    assert all(np.isclose(synthesised[k], with_full[k], rtol=1e-6) for k in with_full)


def test_calibration_refuses_a_named_array_of_the_wrong_shape(tiny_text: ModelHandle, text_tokens) -> None:
    tokens = text_tokens(64)
    bad = Dataset(x=tokens["input_ids"], y=None, name="t", x_name="input_ids",
                  feeds={"attention_mask": np.ones((64, 4), np.int64)})
    with pytest.raises(ShapeMismatchError, match="attention_mask"):
        run(tiny_text, STATIC, PassContext(calib=bad))


def test_int8_auto_probes_on_the_named_arrays(tiny_text: ModelHandle, text_tokens) -> None:
    quant_calib.clear_cache()
    out = run(tiny_text, QuantizeConfig(mode="int8_auto", calib_samples=64, search_budget_s=0.5, probe_budget_s=0.2),
              PassContext(calib=_named(text_tokens(64, seed=2, pad_from=3))))
    assert out.meta["int8_search"]["calibration_samples"] == 64


def _with_rate(sr: int) -> Dataset:
    x = np.random.default_rng(2).standard_normal((64, 4)).astype(np.float32)
    return Dataset(x=x, y=None, name="audio", x_name="x", constants={"sr": np.array(sr, np.int64)})


def test_calibration_feeds_the_files_scalar_with_every_batch(tiny_scalar: ModelHandle, monkeypatch) -> None:
    quant_calib.clear_cache()
    fed = _fed_batches(monkeypatch)
    low = _scales(run(tiny_scalar, STATIC, PassContext(calib=_with_rate(8000))).model)
    assert fed and all(f["sr"].shape == () and int(f["sr"]) == 8000 for f in fed)
    high = _scales(run(tiny_scalar, STATIC, PassContext(calib=_with_rate(16000))).model)
    assert np.isclose(high["k"], 2 * low["k"], rtol=0.02)  # sr / 16000's range follows the file's rate
    assert np.isclose(high["logits_QuantizeLinear_Input"], 2 * low["logits_QuantizeLinear_Input"], rtol=0.02)
