"""Distillation on uploaded data: a seeded split into distillation and held-out rows, or a separate training file;
the student never sees a held-out row (the split, the separate file and the sweep all drop such rows)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from optim.errors import ConfigError
from optim.handle import ModelHandle
from optim.io.data import Dataset
from optim.io.splits import (
    MIN_DISTILL,
    MIN_HELD_OUT,
    apart,
    row_keys,
    separate_training,
    split_for_distillation,
)


def _data(n: int, seed: int = 0, labels: bool = True) -> Dataset:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 3, 4, 4)).astype(np.float32)
    return Dataset(x=x, y=rng.integers(0, 10, n) if labels else None, name="upload")


def test_split_for_distillation_partitions_rows_and_states_the_split() -> None:
    data = _data(300)
    part = split_for_distillation(data, seed=3)
    train, test = set(row_keys(part.train.x)), set(row_keys(part.test.x))
    assert not train & test
    assert train | test == set(row_keys(data.x))
    assert len(part.test) == 90 and len(part.train) == 210
    assert part.sentence.startswith("210 for distillation, 90 held out, seed 3")
    assert "accuracy" in part.sentence
    keys = row_keys(data.x)  # labels travel with their rows
    label_of = dict(zip(keys, data.y.tolist(), strict=True))
    assert [label_of[k] for k in row_keys(part.test.x)] == part.test.y.tolist()


def test_split_for_distillation_is_reproducible_by_seed() -> None:
    data = _data(200)
    a, b, c = (split_for_distillation(data, seed=s) for s in (7, 7, 8))
    assert row_keys(a.test.x) == row_keys(b.test.x) and a.test.content_hash == b.test.content_hash
    assert a.train.content_hash == b.train.content_hash
    assert a.test.content_hash != c.test.content_hash


def test_split_for_distillation_drops_training_rows_equal_to_held_out_rows() -> None:
    base = _data(150, labels=False)
    data = Dataset(x=np.concatenate([base.x, base.x[:60]]), y=None, name="dup")  # 60 rows twice
    part = split_for_distillation(data, seed=0)
    assert not set(row_keys(part.train.x)) & set(row_keys(part.test.x))
    assert part.dropped > 0 and f"{part.dropped} distillation rows" in part.sentence
    assert len(part.train) + len(part.test) + part.dropped == len(data)
    assert "fidelity" in part.sentence  # unlabelled: the student is judged by fidelity


def test_split_for_distillation_refuses_too_little_data_in_one_sentence() -> None:
    with pytest.raises(ConfigError, match=f"at least {MIN_DISTILL + MIN_HELD_OUT} samples") as err:
        split_for_distillation(_data(MIN_DISTILL + MIN_HELD_OUT - 1))
    assert str(err.value).count(". ") == 0
    assert len(split_for_distillation(_data(MIN_DISTILL + MIN_HELD_OUT)).train) == MIN_DISTILL


def test_separate_training_keeps_evaluation_whole_and_drops_its_rows() -> None:
    test, other = _data(80, seed=1), _data(100, seed=2)
    train = Dataset(x=np.concatenate([other.x, test.x[:5]]), y=None, name="train.npz")
    part = separate_training(train, test, "train.npz")
    assert part.test is test and part.dropped == 5 and len(part.train) == 100
    assert part.sentence.startswith("100 for distillation (from train.npz), 80 held out")
    with pytest.raises(ConfigError, match=f"at least {MIN_DISTILL} training samples"):
        separate_training(_data(10), test, "small.npz")


def test_run_sweep_never_distils_on_evaluation_rows(tiny_cnn: ModelHandle, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from optim.measure.core import predict
    from optim.passes import base
    from optim.sweep.run import SweepConfig, run_sweep
    from optim.sweep.store import Store

    spec = base.get_pass("distill")
    seen: list[np.ndarray] = []

    def spy(handle, config, ctx=None):  # noqa: ANN001, ANN202
        seen.append(np.array(ctx.train.x))
        return spec.run(handle, config, ctx)

    monkeypatch.setitem(base._REGISTRY, "distill", base.PassSpec(spec.name, spec.title, spec.description,
                                                                  spec.config_cls, spy))
    rng = np.random.default_rng(5)
    x = rng.standard_normal((260, 3, 16, 16)).astype(np.float32)
    data = Dataset(x=x, y=predict(tiny_cnn, x).argmax(1).astype(np.int64), name="all")
    test = data.take(np.arange(100))
    config = SweepConfig(ratios=(0, 0.5), bits=(32,), prune_kinds=("structured",), distill=True,
                         distill_budget_s=2, distill_epochs=1, latency_budget_s=0.02, profile_runs=1)
    store = Store(tmp_path)
    df = store.variants(run_sweep(tiny_cnn, test, None, config, store, train=data))  # train overlaps test
    assert (df["status"] == "ok").all(), df["error"].tolist()
    assert len(seen) == 1 and len(seen[0]) == 160
    assert not set(row_keys(seen[0])) & set(row_keys(test.x))
    with pytest.raises(ConfigError, match="Distillation needs training inputs"):
        run_sweep(tiny_cnn, test, None, config, store, train=None)


def test_apart_leaves_data_of_another_shape_alone() -> None:
    a = _data(10)
    b = Dataset(x=np.zeros((4, 5), np.float32), y=None, name="b")
    assert apart(a, b) == (a, 0)


@pytest.mark.slow
def test_cli_sweep_distils_on_a_stated_split_of_the_data(tiny_cnn: ModelHandle, tiny_images, tmp_path: Path,  # noqa: ANN001
                                                         capsys: pytest.CaptureFixture) -> None:
    import pandas as pd

    from optim.__main__ import main

    model, data = tmp_path / "cnn.onnx", tmp_path / "d.npz"
    model.write_bytes(tiny_cnn.model_bytes)
    np.savez(data, x=tiny_images[0], y=tiny_images[1])
    common = ["--no-limits", "sweep", str(model), "--ratios", "0,0.5", "--bits", "32", "--kinds", "structured",
              "--budget", "0.02", "--profile-runs", "1", "--store", str(tmp_path / "store")]
    assert main([*common, "--distill"]) == 2  # synthesised inputs are not data to distil on
    assert "--distill needs data" in capsys.readouterr().err
    csv = tmp_path / "out.csv"
    assert main([*common, "--data", str(data), "--distill", "--distill-seed", "2", "--distill-seconds", "2",
                 "--csv", str(csv)]) == 0
    assert "distillation data: 140 for distillation, 60 held out, seed 2" in capsys.readouterr().out
    df = pd.read_csv(csv).set_index("variant_key")
    assert df.loc["structured:0.5:32:all:kd", "status"] == "ok"
    assert (df["n_eval"] == 60).all()
    train = tmp_path / "train.npz"
    np.savez(train, x=np.concatenate([tiny_images[0][:10], np.random.default_rng(9).standard_normal(
        (90, 3, 16, 16)).astype(np.float32)]))
    assert main([*common, "--data", str(data), "--train-data", str(train), "--distill", "--distill-seconds", "2"]) == 0
    out = capsys.readouterr().out
    assert "90 for distillation (from train.npz), 200 held out" in out and "10 distillation rows" in out


def test_stored_upload_with_a_training_file_distils_on_it_and_keeps_the_evaluation_data_whole(
        tiny_cnn: ModelHandle, tiny_images, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    import io

    from optim import api

    monkeypatch.setenv("OPTIM_DATA_DIR", str(tmp_path))

    def npz(**arrays: np.ndarray) -> bytes:
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return buf.getvalue()

    x, y = tiny_images
    extra = np.random.default_rng(3).standard_normal((120, 3, 16, 16)).astype(np.float32)
    train = npz(x=np.concatenate([extra, x[:7]]))  # 7 rows also in the evaluation data
    ref = api.save_upload(tiny_cnn.model_bytes, "cnn.onnx", npz(x=x, y=y), "eval.npz", "", train, "train.npz")
    assert ref != api.save_upload(tiny_cnn.model_bytes, "cnn.onnx", npz(x=x, y=y), "eval.npz")  # other upload
    loaded = api.open_model(ref)
    assert loaded.train is not None and len(loaded.train) == 127 and len(loaded.test) == 200
    prepared = api.for_distillation(loaded)
    assert prepared.test is loaded.test and len(prepared.train) == 120
    assert prepared.split.startswith("120 for distillation (from train.npz), 200 held out (the evaluation data); "
                                     "7 distillation rows equal to held-out rows dropped")


def test_apart_compares_every_named_array_of_multi_input_rows() -> None:
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 20, (6, 5))
    mask = np.ones((6, 5), np.int64)
    test = Dataset(x=ids[:3], y=None, name="held", x_name="input_ids", feeds={"attention_mask": mask[:3]})
    other_mask = mask.copy()
    other_mask[1, 3:] = 0  # row 1: the same token ids as held-out row 1 but another mask: another input
    train = Dataset(x=ids, y=None, name="train", x_name="input_ids", feeds={"attention_mask": other_mask})
    kept, dropped = apart(train, test)
    assert dropped == 2  # rows 0 and 2 equal held-out rows in ids and mask
    np.testing.assert_array_equal(kept.x, ids[[1, 3, 4, 5]])
    np.testing.assert_array_equal(kept.feeds["attention_mask"], other_mask[[1, 3, 4, 5]])
    split = split_for_distillation(Dataset(x=rng.integers(0, 20, (120, 5)), y=None, name="u", x_name="input_ids",
                                           feeds={"attention_mask": np.ones((120, 5), np.int64)}))
    assert split.train.feeds["attention_mask"].shape == (len(split.train), 5)  # masks travel with their rows
