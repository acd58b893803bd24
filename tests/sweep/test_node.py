"""Node identity per stored row, and fronts that never compare latencies of different hardware."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import _sweep_fakes as fakes
import numpy as np
import pandas as pd
import pytest

from optim.analysis import select
from optim.analysis.pareto import hardware_count, pareto_mask
from optim.cli.sweep import format_pareto
from optim.handle import ModelHandle
from optim.io.data import Dataset
from optim.passes import base
from optim.sweep import executors as sweep_exec
from optim.sweep import node
from optim.sweep.run import SweepConfig, run_sweep
from optim.sweep.store import Store


def _identity_with(monkeypatch: pytest.MonkeyPatch, host: str, cpu: str) -> dict:
    monkeypatch.setattr(node.socket, "gethostname", lambda: host)
    monkeypatch.setattr(node, "cpu_facts", lambda: {"model": cpu, "flags": {"avx2", "fma", "hypervisor"}, "cores": 4})
    node.node_identity.cache_clear()
    try:
        return node.node_identity()
    finally:
        node.node_identity.cache_clear()


def test_hardware_id_ignores_host_name_and_noise_flags_but_not_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    a = _identity_with(monkeypatch, "node-a", "Xeon 8480")
    b = _identity_with(monkeypatch, "node-b", "Xeon 8480")
    c = _identity_with(monkeypatch, "node-a", "EPYC 9654")
    assert a["hostname"] == "node-a" and b["hostname"] == "node-b"
    assert a["hardware_id"] == b["hardware_id"] != c["hardware_id"]
    assert a["cpu_features"] == ["avx2", "fma"] and a["ort_version"] not in ("", "none")


def test_node_columns_are_the_identity_of_this_machine() -> None:
    cols = node.node_columns()
    ident = json.loads(cols["node_json"])
    assert cols["node"] == ident["hostname"] and cols["node_hw"] == ident["hardware_id"]
    assert node.hardware_label(cols["node_json"]).endswith(f"ORT {ident['ort_version']}")
    assert node.hardware_label(None) == "unknown hardware" and node.hardware_label("{bad") == "unknown hardware"


def test_store_adds_node_columns_to_an_older_database_and_keeps_old_rows(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "optim.sqlite3") as conn:
        conn.execute("CREATE TABLE variants (variant_id TEXT PRIMARY KEY, sweep_id TEXT, label TEXT, seq INTEGER, "
                     "created REAL)")
        conn.execute("INSERT INTO variants VALUES ('v0', 's1', 'old', 0, 0)")
    store = Store(tmp_path)
    store.put_variant({"variant_id": "v1", "sweep_id": "s1", "label": "new", "seq": 1, **node.node_columns()})
    df = store.variants("s1")
    assert df["label"].tolist() == ["old", "new"]
    assert pd.isna(df["node"].iloc[0]) and df["node"].iloc[1] == node.node_identity()["hostname"]


def _rows(hw: list[str | None]) -> pd.DataFrame:
    n = len(hw)
    return pd.DataFrame({"variant_id": [f"v{i}" for i in range(n)], "label": [f"variant {i}" for i in range(n)],
                         "status": ["ok"] * n, "executable": [True] * n, "prune_ratio": [0.0] + [0.5] * (n - 1),
                         "bits": [32] + [8] * (n - 1), "top1": [0.9] * n, "top1_lo": [0.85] * n,
                         "top1_hi": [0.95] * n, "agreement": [1.0] * n, "latency_ms": [2.0 + i for i in range(n)],
                         "effective_size_bytes": [1e6] * n, "macs": [1e6] * n, "node_hw": hw,
                         "node": [f"host-{h}" for h in hw],
                         "node_json": [json.dumps({"cpu_model": f"CPU {h}", "ort_version": "1"}) for h in hw]})


def test_pareto_mask_by_hardware_keeps_a_front_per_machine() -> None:
    df = _rows(["a", "a", "b"])  # v1 is dominated by v0 on the same machine; v2 only by a row of another machine
    assert pareto_mask(df).tolist() == [True, False, False]
    assert pareto_mask(df, by="node_hw").tolist() == [True, False, True]
    assert hardware_count(df) == 2 and hardware_count(_rows(["a", "a"])) == 1 and hardware_count(_rows([None])) == 1


def test_format_pareto_names_each_machine_and_never_mixes_their_latencies() -> None:
    mixed = format_pareto(select.prepare(_rows(["a", "a", "b"])))
    assert "CPU a" in mixed and "CPU b" in mixed and "host-b" in mixed
    assert "variant 2" in mixed and "variant 1" not in mixed
    assert "measured on" not in format_pareto(select.prepare(_rows(["a", "a"])))  # one machine: the plain table


def test_recommend_only_compares_measured_rows_of_the_baselines_hardware() -> None:
    df = _rows(["a", "a", "b"])
    df.loc[2, "latency_ms"] = 0.1  # the fastest row, but measured elsewhere
    assert select.recommend(select.prepare(df))["variant_id"] == "v0"
    estimated = select.prepare(df, pd.Series([2.0, 3.0, 1.0]))  # estimates on one target do compare
    assert select.recommend(estimated)["variant_id"] == "v2"


def test_run_sweep_records_the_measuring_node_on_every_row(
    monkeypatch: pytest.MonkeyPatch, tiny_mlp: ModelHandle, tmp_path: Path, store
) -> None:
    base.list_passes()
    for name, spec in fakes.specs().items():
        monkeypatch.setitem(base._REGISTRY, name, spec)
    for role, name in fakes.FAKE_NAMES.items():
        monkeypatch.setitem(sweep_exec.PASS_NAMES, role, name)
    rng = np.random.default_rng(0)
    test = Dataset(rng.standard_normal((20, 12)).astype(np.float32), rng.integers(0, 4, 20), "t")
    cfg = SweepConfig(ratios=(0, 0.5), bits=(32, 8), prune_kinds=("structured",), latency_budget_s=0.02,
                      profile_runs=2)
    df = store.variants(run_sweep(tiny_mlp, test, None, cfg, store))
    ident = node.node_identity()
    assert len(df) == 4 and (df["node"] == ident["hostname"]).all() and (df["node_hw"] == ident["hardware_id"]).all()
    assert all(json.loads(j)["ort_version"] == ident["ort_version"] for j in df["node_json"])


def test_api_hardware_note_warns_only_when_latencies_come_from_several_machines() -> None:
    from optim import api

    note = api.hardware_note(_rows(["a", "a", "b"]).assign(target_source="measured"))
    assert note is not None and "2 kinds of machine" in note and "CPU a · ORT 1 (2 variants)" in note and "CPU b" in note
    assert api.hardware_note(_rows(["a", "a"])) is None
    assert api.hardware_note(_rows(["a", "b"]).assign(target_source="estimated")) is None  # estimates: no node
    assert api.hardware_note(_rows(["a", "b"]).drop(columns=["node_hw"])) is None


def test_gpu_models_come_from_the_nvidia_driver_files_and_change_the_hardware_id(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(node, "_GPU_INFO", tmp_path / "none")  # no driver files: no GPU
    cpu_only = _identity_with(monkeypatch, "node-a", "Xeon 8480")
    info = tmp_path / "0000:17:00.0" / "information"
    info.parent.mkdir()
    info.write_text("Model: \t\t NVIDIA H200\nIRQ:   \t\t 42\nBus Type: \t PCIe\n")
    monkeypatch.setattr(node, "_GPU_INFO", tmp_path)
    with_gpu = _identity_with(monkeypatch, "node-a", "Xeon 8480")
    assert cpu_only["gpu"] is None and with_gpu["gpu"] == ["NVIDIA H200"]
    assert with_gpu["hardware_id"] != cpu_only["hardware_id"]
    assert node.hardware_label(json.dumps(with_gpu)).startswith("Xeon 8480 + NVIDIA H200 · ORT ")
