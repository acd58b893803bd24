"""Inputs without a sample axis (a 0-d sample rate like silero-vad's ``sr``): a 0-d array of the input's name in
the npz is that input's value for every batch (evaluation, the sweep's jobs); absent, the explorer synthesises it
and says what it used; a wrong shape or dtype is refused in one sentence naming the input, what it expects and
what the file gave."""

from __future__ import annotations

import io

import numpy as np
import onnxruntime as ort
import pytest

from optim.errors import ShapeMismatchError
from optim.handle import ModelHandle
from optim.io.model_data import load_data_for
from optim.io.named_inputs import synthesised
from optim.jobs import codec
from optim.measure.core import evaluate, predict


def _npz(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _oracle(handle: ModelHandle, x: np.ndarray, sr: int) -> np.ndarray:
    sess = ort.InferenceSession(handle.model_bytes, providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x, "sr": np.array(sr, np.int64)})[0]


X = np.random.default_rng(1).standard_normal((40, 4)).astype(np.float32)


def test_a_0d_array_sets_the_scalar_input_for_every_batch(tiny_scalar: ModelHandle) -> None:
    handle = tiny_scalar
    ds = load_data_for(handle, _npz(x=X, sr=np.int64(8000)), "data.npz")
    assert ds.constants is not None and int(ds.constants["sr"]) == 8000 and ds.constants["sr"].dtype == np.int64
    assert synthesised(handle.model, ds) == []
    got = evaluate(handle, ds).logits
    np.testing.assert_allclose(got, _oracle(handle, X, 8000), rtol=1e-5)
    assert not np.allclose(got, _oracle(handle, X, 16000))
    named = load_data_for(handle, _npz(x=X, sr=np.array(8000, np.int32)), "data.npz")  # int32 → the input's int64
    np.testing.assert_allclose(predict(handle, named.x, batch_size=7, constants=named.constants),
                               _oracle(handle, X, 8000), rtol=1e-5)  # every chunk of 7 (and the last of 5)


def test_an_absent_scalar_is_synthesised_and_stated(tiny_scalar: ModelHandle) -> None:
    handle = tiny_scalar
    ds = load_data_for(handle, _npz(x=X), "data.npz")
    assert synthesised(handle.model, ds) == ["'sr' = 16000 (a sample rate)"]
    np.testing.assert_allclose(evaluate(handle, ds).logits, _oracle(handle, X, 16000), rtol=1e-5)


@pytest.mark.parametrize(("value", "given"), [(np.array([8000, 16000]), r"shape \(2,\)"),
                                               (np.full(40, 8000), r"shape \(40,\)"),
                                               (np.float64(8000.5), "dtype float")])
def test_a_scalar_of_the_wrong_shape_or_dtype_is_refused_naming_it(tiny_scalar: ModelHandle, value: np.ndarray,
                                                                   given: str) -> None:
    with pytest.raises(ShapeMismatchError, match=given) as err:
        load_data_for(tiny_scalar, _npz(x=X, sr=value), "data.npz")
    msg = str(err.value)
    assert "'sr'" in msg and "a scalar (shape ())" in msg and "int64" in msg and "np.array(16000" in msg


def test_constants_travel_with_jobs_and_change_the_data_hash(tiny_scalar: ModelHandle) -> None:
    handle = tiny_scalar
    a = load_data_for(handle, _npz(x=X, sr=np.int64(8000)), "data.npz")
    b = load_data_for(handle, _npz(x=X, sr=np.int64(16000)), "data.npz")
    assert a.content_hash != b.content_hash
    facts, blobs = codec.dataset_blobs(a, "test")
    back = codec.dataset_from(facts, blobs, "test")
    assert int(back.constants["sr"]) == 8000 and back.content_hash == a.content_hash
    assert int(a.take(np.arange(5)).constants["sr"]) == 8000 and int(a.subset(3).constants["sr"]) == 8000


def test_per_call_inputs_are_scalars_and_fixed_dims_beside_a_free_batch() -> None:
    from optim.io.named_inputs import per_call
    from optim.io.shapes import InputSpec

    x = InputSpec("x", ("batch", 512), np.dtype(np.float32))
    assert per_call(InputSpec("sr", (), np.dtype(np.int64)), x)
    assert per_call(InputSpec("table", (2, 4), np.dtype(np.float32)), x)  # no batch axis: whole, every call
    assert not per_call(InputSpec("state", (2, "batch", 128), np.dtype(np.float32)), x)  # batch on axis 1
    assert not per_call(InputSpec("mask", ("batch", 512), np.dtype(np.int64)), x)
    assert not per_call(x, x)


def test_cli_sweep_states_the_synthesised_scalar(tiny_scalar: ModelHandle, tmp_path, capsys) -> None:  # noqa: ANN001
    from optim.__main__ import build_parser
    from optim.cli.sweep import load_inputs

    model = tmp_path / "scalar.onnx"
    model.write_bytes(tiny_scalar.model_bytes)
    (tmp_path / "x.npz").write_bytes(_npz(x=X))
    (tmp_path / "xsr.npz").write_bytes(_npz(x=X, sr=np.int64(8000)))
    _, test, _, _ = load_inputs(build_parser().parse_args(["sweep", str(model), "--data", str(tmp_path / "x.npz")]))
    assert "synthesised: 'sr' = 16000 (a sample rate)" in capsys.readouterr().err
    _, test, _, _ = load_inputs(build_parser().parse_args(["sweep", str(model), "--data", str(tmp_path / "xsr.npz")]))
    assert "synthesised" not in capsys.readouterr().err and int(test.constants["sr"]) == 8000
