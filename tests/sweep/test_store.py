from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from optim.handle import ModelHandle
from optim.paths import data_dir
from optim.sweep.store import VARIANT_COLUMNS, Store, canonical_json, stable_id


def _row(sweep_id: str, key: str, seq: int, **kw: object) -> dict:
    return {"variant_id": stable_id(sweep_id, key), "sweep_id": sweep_id, "variant_key": key, "seq": seq,
            "label": key, "status": "ok", **kw}  # fmt: skip


def test_store_uses_wal_journal(tmp_path: Path, store) -> None:
    with sqlite3.connect(store.db_path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_data_dir_follows_env_when_set(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OPTIM_DATA_DIR", str(tmp_path / "d"))
    assert data_dir() == tmp_path / "d"
    monkeypatch.delenv("OPTIM_DATA_DIR")
    assert data_dir().name == ".optim_data"


def test_stable_id_is_independent_of_key_order() -> None:
    assert stable_id("m", {"a": 1, "b": [1, 2]}) == stable_id("m", {"b": (1, 2), "a": 1})
    assert stable_id("m", {"a": 1}) != stable_id("m", {"a": 2})
    assert canonical_json({"b": 1, "a": np.float32(0.5)}) == '{"a":0.5,"b":1}'


def test_put_variant_round_trips_row_and_layers(tmp_path: Path, store) -> None:
    store.create_sweep("s1", "mh", "dh", None, "m", {"ratios": [0, 0.5]}, total=2)
    layers = pd.DataFrame({"node": ["conv", "fc"], "op_type": ["Conv", "Gemm"], "ms": [1.5, 0.5],
                           "share": [0.75, 0.25], "provider": ["CPU", "CPU"], "macs": [100, 10],
                           "params": [27, 11], "weight_bytes": [108, 44]})  # fmt: skip
    vid = store.put_variant(
        _row("s1", "a", 0, top1=np.float64(0.9), latency_ms=1.25, bits=8, executable=True, rel_error=float("nan")),
        layers=layers, model_bytes=b"onnx-bytes",
    )  # fmt: skip
    df = store.variants("s1")
    assert list(df.columns[: len(VARIANT_COLUMNS)]) == VARIANT_COLUMNS
    row = df.iloc[0]
    assert (row["variant_id"], row["top1"], row["latency_ms"], row["bits"]) == (vid, 0.9, 1.25, 8)
    assert bool(row["executable"]) and pd.isna(row["rel_error"])
    assert Path(row["artifact_path"]).read_bytes() == b"onnx-bytes"
    got = store.layers(vid)
    assert got["node"].tolist() == ["conv", "fc"] and got["ms"].tolist() == [1.5, 0.5]
    assert got["weight_bytes"].tolist() == [108, 44]


def test_put_variant_stores_failure_with_error(tmp_path: Path, store) -> None:
    store.put_variant(_row("s1", "bad", 0, status="failed", error="PassUnavailableError: op Foo"))
    row = store.variants("s1").iloc[0]
    assert row["status"] == "failed" and "Foo" in row["error"]
    assert store.finished_keys("s1") == {"bad"}


def test_variants_ordered_by_seq_and_scoped_to_sweep(tmp_path: Path, store) -> None:
    for seq, key in [(2, "c"), (0, "a"), (1, "b")]:
        store.put_variant(_row("s1", key, seq))
    store.put_variant(_row("s2", "z", 0))
    assert store.variants("s1")["label"].tolist() == ["a", "b", "c"]
    assert store.finished_keys("s2") == {"z"}


def test_create_sweep_keeps_first_config_and_finish_marks_done(tmp_path: Path, store) -> None:
    store.create_sweep("s1", "mh", "dh", "ch", "m", {"x": 1}, total=3)
    store.create_sweep("s1", "mh", "dh", "ch", "m", {"x": 2}, total=3)
    store.finish_sweep("s1")
    info = store.sweep("s1")
    assert info["config"] == {"x": 1} and info["status"] == "done" and info["total"] == 3
    assert store.sweep("unknown") is None
    assert store.sweeps()["sweep_id"].tolist() == ["s1"]


def test_put_model_records_hash_and_artifact(tmp_path: Path, store, tiny_mlp: ModelHandle) -> None:
    h = store.put_model(tiny_mlp, keep_artifact=True)
    assert h == tiny_mlp.content_hash
    assert (store.artifacts_dir / f"{h}.onnx").read_bytes() == tiny_mlp.model_bytes


def test_put_array_round_trips(tmp_path: Path, store) -> None:
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    store.put_array("ref", arr)
    assert np.array_equal(store.get_array("ref"), arr)
    assert store.get_array("missing") is None


def test_store_reader_sees_rows_while_writer_writes_from_threads(tmp_path: Path, store) -> None:
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for i in range(40):
                store.put_variant(_row("s1", f"k{i}", i, top1=i / 40))
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    t = threading.Thread(target=writer)
    t.start()
    reader = Store(tmp_path)
    seen = [len(reader.variants("s1")) for _ in range(20)]
    t.join()
    assert not errors
    assert seen == sorted(seen)  # monotone: readers never see a partial or rolled-back state
    assert len(reader.variants("s1")) == 40


def test_delete_sweep_removes_rows(tmp_path: Path, store) -> None:
    store.create_sweep("s1", "mh", None, None, "m", {}, total=1)
    vid = store.put_variant(_row("s1", "a", 0), layers=pd.DataFrame({"node": ["n"], "ms": [1.0]}))
    store.delete_sweep("s1")
    assert store.variants("s1").empty and store.layers(vid).empty and store.sweep("s1") is None


def test_store_adds_missing_columns_when_opening_older_database(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "optim.sqlite3") as conn:
        conn.execute("CREATE TABLE variants (variant_id TEXT PRIMARY KEY, sweep_id TEXT, label TEXT, created REAL)")
        conn.execute("INSERT INTO variants VALUES ('v0', 's1', 'old', 0)")
    store = Store(tmp_path)
    store.put_variant(_row("s1", "new", 1, compressed_bytes=123))
    df = store.variants("s1")
    assert df["label"].tolist() == ["old", "new"] and df["compressed_bytes"].iloc[1] == 123


def test_damaged_artifact_is_refused_not_served(tmp_path) -> None:
    from optim.errors import OptimError
    from optim.sweep.store import Store

    st = Store(tmp_path / "s")
    path = st.put_artifact(b"model bytes")
    assert st.read_artifact(path) == b"model bytes"
    path.write_bytes(b"model bytez")
    with pytest.raises(OptimError, match="damaged"):
        st.read_artifact(path)


def test_partial_tmp_files_left_by_a_killed_writer_are_cleaned(tmp_path) -> None:
    import os

    from optim.sweep.store import Store

    st = Store(tmp_path / "s")
    stale = st.artifacts_dir / "abc.tmp123"
    stale.write_bytes(b"half")
    os.utime(stale, (1, 1))
    fresh = st.artifacts_dir / "def.tmp456"
    fresh.write_bytes(b"in flight")
    Store(tmp_path / "s")
    assert not stale.exists() and fresh.exists()
