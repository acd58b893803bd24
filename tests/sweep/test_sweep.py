from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import _sweep_fakes as fakes
import bundled
import numpy as np
import onnx
import pytest

from optim.errors import ConfigError
from optim.handle import ModelHandle
from optim.io.data import Dataset
from optim.passes import base
from optim.sweep import executors as sweep_exec
from optim.sweep.executors import (
    BUILD_AHEAD_MAX_BYTES,
    LocalExecutor,
    SerialExecutor,
    Variant,
    fitted,
    quant_settings,
)
from optim.sweep.run import SweepConfig, SweepProgress, run_sweep, sweep_id_for
from optim.sweep.store import Store

FAST = dict(latency_budget_s=0.02, profile_runs=2)
GRID = SweepConfig(ratios=(0, 0.5), bits=(32, 8, 4), prune_kinds=("structured", "unstructured"), **FAST)


@pytest.fixture
def fake_passes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Swap the sweep's passes for fast fakes; returns the file each pass call is logged to."""
    base.list_passes()  # import the real passes first so they cannot overwrite the fakes later
    for name, spec in fakes.specs().items():
        monkeypatch.setitem(base._REGISTRY, name, spec)
    for role, name in fakes.FAKE_NAMES.items():
        monkeypatch.setitem(sweep_exec.PASS_NAMES, role, name)
    counter = tmp_path / "calls.log"
    monkeypatch.setenv("OPTIM_FAKE_COUNTER", str(counter))
    return counter


@pytest.fixture
def mlp_data() -> tuple[Dataset, Dataset]:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((60, 12)).astype(np.float32)
    return Dataset(x[:40], rng.integers(0, 4, 40), "test"), Dataset(x[40:], None, "calib")


def _calls(path: Path, prefix: str = "") -> list[str]:
    return [ln for ln in path.read_text().splitlines() if ln.startswith(prefix)] if path.exists() else []


def _n_quantized(df, exclude) -> int:  # noqa: ANN001
    return int(((df["bits"] != 32) & ~df.index.isin(exclude)).sum())


def test_sweep_config_variants_lists_baseline_first_and_dedupes_ratio_zero() -> None:
    grid = SweepConfig().variants()
    assert grid[0] == Variant("none", 0.0, 32, "all")
    assert len(grid) == 4 + 3 * 2 * 4 == 28
    assert len({v.key for v in grid}) == len(grid)
    two_levels = SweepConfig(ratios=(0, 0.5), bits=(32, 8), prune_kinds=("structured",), opt_levels=("disable", "all"))
    assert len(two_levels.variants()) == (1 + 1) * 2 * 2


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"ratios": (0, 1.5)}, "ratios"), ({"bits": (32, 9)}, "bits"), ({"prune_kinds": ("random",)}, "prune_kinds"),
     ({"opt_levels": ("max",)}, "opt_levels"), ({"ratios": ()}, "ratios"), ({"eval_limit": 0}, "eval_limit")],
)  # fmt: skip
def test_sweep_config_raises_config_error_naming_field_when_invalid(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        SweepConfig(**kwargs)


def test_quant_settings_maps_bits_to_modes() -> None:
    assert quant_settings(32, True, "qdq") is None
    assert quant_settings(16, True, "qdq") == {"mode": "fp16"}
    assert quant_settings(8, True, "qoperator") == {"mode": "int8_static", "quant_format": "qoperator"}
    assert quant_settings(8, False, "qdq") == {"mode": "int8_dynamic"}
    assert quant_settings(4, True, "qdq") == {"mode": "int4"}
    assert quant_settings(3, True, "qdq") == {"mode": "fake", "bits": 3}


def test_variant_label_reads_like_the_ui() -> None:
    assert Variant("structured", 0.5, 8, "all").label() == "struct 50% · INT8"
    assert Variant("none", 0.0, 3, "basic").label(with_level=True) == "dense · INT3 · opt basic"


def test_run_sweep_stores_every_variant_with_measurements_and_failures(
    fake_passes: Path, tiny_mlp: ModelHandle, mlp_data: tuple[Dataset, Dataset], tmp_path: Path
) -> None:
    test, calib = mlp_data
    store = Store(tmp_path / "store")
    seen: list[SweepProgress] = []
    sid = run_sweep(tiny_mlp, test, calib, GRID, store, progress=seen.append)
    df = store.variants(sid).set_index("variant_key")
    assert len(df) == 9 and store.sweep(sid)["status"] == "done"
    failed = df[df["status"] == "failed"]
    assert sorted(failed["bits"]) == [4, 4, 4] and failed["error"].str.contains("try 8 bits").all()
    ok = df[df["status"] == "ok"]
    base_row = df.loc["none:0:32:all"]
    assert base_row["agreement"] == 1.0 and base_row["rel_error"] < 1e-5
    assert (ok["latency_ms"] > 0).all() and (ok["top1_lo"] <= ok["top1"]).all() and (ok["top1"] <= ok["top1_hi"]).all()
    assert (ok["n_eval"] == 40).all() and ok["params"].notna().all()
    assert df.loc["structured:0.5:8:all", "effective_size_bytes"] < base_row["effective_size_bytes"]
    assert all(Path(p).exists() for p in ok["artifact_path"])
    assert "fake prune" in df.loc["structured:0.5:32:all", "meta_json"]
    assert not store.layers(base_row["variant_id"]).empty
    assert [p.done for p in seen] == sorted(p.done for p in seen) and seen[-1].fraction == 1.0
    assert seen[-1].done == seen[-1].total == 9 and seen[-1].sweep_id == sid
    assert seen[0].eta_s is None and all(p.eta_s is not None and p.eta_s >= 0 for p in seen[1:-1])
    assert {p.current for p in seen} >= {"dense · FP32", "struct 50% · INT8"}
    assert len(_calls(fake_passes, "prune")) == 2  # one prune per (kind, ratio), shared across bits


def test_run_sweep_returns_stored_results_instantly_when_rerun(
    fake_passes: Path, tiny_mlp: ModelHandle, mlp_data: tuple[Dataset, Dataset], tmp_path: Path
) -> None:
    test, calib = mlp_data
    store = Store(tmp_path / "store")
    sid = run_sweep(tiny_mlp, test, calib, GRID, store)
    first = store.variants(sid)
    n_calls = len(_calls(fake_passes))
    t0 = time.perf_counter()
    assert run_sweep(tiny_mlp, test, calib, GRID, Store(tmp_path / "store")) == sid
    assert time.perf_counter() - t0 < 1.0
    assert len(_calls(fake_passes)) == n_calls
    assert store.variants(sid)["latency_ms"].fillna(-1).tolist() == first["latency_ms"].fillna(-1).tolist()
    other = SweepConfig(ratios=(0, 0.5), bits=(32, 8), prune_kinds=("structured",), **FAST)
    assert sweep_id_for(tiny_mlp, test, calib, other) != sid


def test_run_sweep_stops_after_current_variant_when_cancelled_and_resumes(
    fake_passes: Path, tiny_mlp: ModelHandle, mlp_data: tuple[Dataset, Dataset], tmp_path: Path
) -> None:
    test, calib = mlp_data
    store = Store(tmp_path / "store")
    started: list[str] = []
    sid = run_sweep(tiny_mlp, test, calib, GRID, store, progress=lambda p: started.append(p.current),
                    cancel=lambda: len(store.variants(sweep_id_for(tiny_mlp, test, calib, GRID))) >= 3)  # fmt: skip
    first = store.variants(sid).set_index("variant_key")
    assert store.sweep(sid)["status"] == "cancelled" and len(first) == 3
    before = len(_calls(fake_passes, "quantize"))
    run_sweep(tiny_mlp, test, calib, GRID, store)
    df = store.variants(sid).set_index("variant_key")
    assert len(df) == 9 and store.sweep(sid)["status"] == "done"
    # one quantize call per remaining quantised variant: finished variants were not rebuilt
    assert len(_calls(fake_passes, "quantize")) - before == _n_quantized(df, exclude=first.index)
    assert df.loc[first.index, "latency_ms"].fillna(-1).tolist() == first["latency_ms"].fillna(-1).tolist()


CHILD = """
import sys
sys.path.insert(0, {tests!r})
import numpy as np, onnx
import _sweep_fakes
_sweep_fakes.install_globally()
from optim.io.data import Dataset
from optim.handle import ModelHandle
from optim.sweep.store import Store
from optim.sweep.run import SweepConfig, run_sweep
from optim.sweep.executors import SerialExecutor
d = np.load({data!r})
handle = ModelHandle(onnx.load({model!r}), "tiny_mlp")
cfg = SweepConfig(ratios=(0, 0.5), bits=(32, 8, 4), prune_kinds=("structured", "unstructured"),
                  latency_budget_s=0.02, profile_runs=2)
run_sweep(handle, Dataset(d["x"], d["y"], "test"), None, cfg, Store({store!r}), executor=SerialExecutor())
"""


@pytest.mark.slow
def test_run_sweep_resumes_without_recomputing_when_killed_with_sigkill(
    tiny_mlp: ModelHandle, mlp_data: tuple[Dataset, Dataset], tmp_path: Path
) -> None:
    test, _ = mlp_data
    onnx.save(tiny_mlp.model, tmp_path / "m.onnx")
    np.savez(tmp_path / "d.npz", x=test.x, y=test.y)
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(tests=str(Path(__file__).resolve().parents[1]), data=str(tmp_path / "d.npz"),
                                   model=str(tmp_path / "m.onnx"), store=str(tmp_path / "store")))  # fmt: skip
    counter = tmp_path / "calls.log"
    env = {**os.environ, "OPTIM_FAKE_COUNTER": str(counter), "OPTIM_FAKE_DELAY": "0.3"}
    store = Store(tmp_path / "store")
    proc = subprocess.Popen([sys.executable, str(script)], env=env)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and proc.poll() is None:
            n = store.sweeps()["n_ok"].fillna(0).sum() + store.sweeps()["n_failed"].fillna(0).sum()
            if n >= 3:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "child finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    sid = store.sweeps()["sweep_id"].iloc[0]
    assert store.sweep(sid)["status"] == "running"  # never finished: killed
    with sqlite3.connect(store.db_path) as conn:
        before = dict(conn.execute("SELECT variant_key, created FROM variants").fetchall())
    assert 3 <= len(before) < 9
    calls_before = len(_calls(counter, "quantize"))
    env["OPTIM_FAKE_DELAY"] = "0"
    subprocess.run([sys.executable, str(script)], env=env, check=True, timeout=120)
    df = store.variants(sid).set_index("variant_key")
    assert len(df) == 9 and store.sweep(sid)["status"] == "done"
    with sqlite3.connect(store.db_path) as conn:
        after = dict(conn.execute("SELECT variant_key, created FROM variants").fetchall())
    assert {k: after[k] for k in before} == before  # finished rows untouched: not recomputed, none lost
    assert len(_calls(counter, "quantize")) - calls_before == _n_quantized(df, exclude=list(before))


def test_local_executor_yields_in_order_with_errors_as_values() -> None:
    def build(i: int) -> int:
        if i == 2:
            raise ValueError("two")
        time.sleep(0.01 * (5 - i))
        return i * 10

    out = list(LocalExecutor(workers=2, lookahead=3).map_builds(build, range(5)))
    assert [i for i, _ in out] == [0, 1, 2, 3, 4]
    assert [r for _, r in out if not isinstance(r, BaseException)] == [0, 10, 30, 40]
    assert isinstance(out[2][1], ValueError)
    assert [r for _, r in SerialExecutor().map_builds(lambda i: i + 1, [1, 2])] == [2, 3]


def test_fitted_builds_big_models_one_variant_at_a_time() -> None:
    big = fitted(LocalExecutor(workers=2, lookahead=2), BUILD_AHEAD_MAX_BYTES + 1)
    assert isinstance(big, LocalExecutor) and (big.workers, big.lookahead) == (2, 1)
    small, serial = LocalExecutor(), SerialExecutor()
    assert fitted(small, BUILD_AHEAD_MAX_BYTES) is small and fitted(serial, 10 * BUILD_AHEAD_MAX_BYTES) is serial
    assert isinstance(fitted(None, 1), LocalExecutor)
    events: list[tuple[str, int]] = []

    def build(i: int) -> int:
        events.append(("build", i))
        return i

    for i, _ in big.map_builds(build, range(3)):  # nothing is built while a variant is being measured
        events.append(("measure", i))
        time.sleep(0.02)
    assert events == [(kind, i) for i in range(3) for kind in ("build", "measure")]


def test_local_executor_quiet_holds_builds_until_released() -> None:
    ex = LocalExecutor(workers=1, lookahead=2)
    started = threading.Event()

    def build(i: int) -> float:
        started.set()
        return time.perf_counter()

    with ex.quiet():
        gen = ex.map_builds(build, [1])
        t_release = None
        consumer = threading.Thread(target=lambda: results.extend(gen))
        results: list = []
        consumer.start()
        time.sleep(0.1)
        assert not started.is_set()
        t_release = time.perf_counter()
    consumer.join(5)
    assert results and results[0][1] >= t_release


def test_run_sweep_raises_shape_error_when_data_does_not_fit(
    fake_passes: Path, tiny_mlp: ModelHandle, tmp_path: Path
) -> None:
    from optim.errors import OptimError

    bad = Dataset(np.zeros((4, 7), np.float32), np.zeros(4, np.int64), "bad")
    with pytest.raises(OptimError):
        run_sweep(tiny_mlp, bad, None, GRID, Store(tmp_path))


def test_cli_sweep_prints_pareto_writes_csv_and_reuses_store_when_rerun(
    fake_passes: Path, tiny_mlp: ModelHandle, mlp_data: tuple[Dataset, Dataset], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    import pandas as pd

    from optim.__main__ import main

    test, _ = mlp_data
    onnx.save(tiny_mlp.model, tmp_path / "m.onnx")
    np.savez(tmp_path / "d.npz", x=test.x, y=test.y)
    argv = ["sweep", str(tmp_path / "m.onnx"), "--data", str(tmp_path / "d.npz"), "--ratios", "0,0.5",
            "--bits", "32,8", "--kinds", "structured", "--budget", "0.02", "--store", str(tmp_path / "s"),
            "--csv", str(tmp_path / "out.csv")]  # fmt: skip
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert "Pareto set" in out and "4/4" in err
    df = pd.read_csv(tmp_path / "out.csv")
    assert len(df) == 4 and df["pareto"].any() and set(df["status"]) == {"ok"}
    table = out.split("Pareto set")[1].split("\nrecommended: ")[0]
    assert all((label in table) == on_front for label, on_front in zip(df["label"], df["pareto"], strict=True))
    n_calls = len(_calls(fake_passes))
    assert main(argv) == 0
    assert len(_calls(fake_passes)) == n_calls
    assert capsys.readouterr().out.splitlines()[0].startswith("sweep ")


def test_cli_sweep_exits_2_with_message_when_model_unknown(capsys: pytest.CaptureFixture[str]) -> None:
    from optim.__main__ import main

    assert main(["sweep", "no_such_model_xyz"]) == 2
    assert "no_such_model_xyz" in capsys.readouterr().err


@pytest.mark.slow
def test_run_sweep_composes_real_passes_on_tiny_cnn(
    tiny_cnn: ModelHandle, tiny_images: tuple[np.ndarray, np.ndarray], tmp_path: Path, store
) -> None:
    x, y = tiny_images
    test, calib = Dataset(x[:80], y[:80], "test"), Dataset(x[80:144], None, "calib")
    # quant_format="qdq": the standard static INT8 (whose file is smaller than FP32); on a model this small the
    # INT8 search (auto) may pick, on timing noise, a candidate with layers kept in FP32 whose file is larger
    config = SweepConfig(ratios=(0, 0.5), bits=(32, 8, 3), prune_kinds=("structured", "unstructured"),
                         quant_format="qdq", **FAST)
    df = store.variants(run_sweep(tiny_cnn, test, calib, config, store)).set_index("variant_key")
    assert len(df) == 9
    assert (df["status"] == "ok").all(), df.loc[df["status"] != "ok", "error"].tolist()
    dense, pruned = df.loc["none:0:32:all"], df.loc["structured:0.5:32:all"]
    assert pruned["params"] < dense["params"] and pruned["macs"] < dense["macs"]
    assert df.loc["none:0:8:all", "size_bytes"] < dense["size_bytes"]
    assert not df.loc["none:0:3:all", "executable"]
    assert df.loc["none:0:3:all", "effective_size_bytes"] < df.loc["none:0:3:all", "size_bytes"]
    history = df.loc["structured:0.5:8:all", "meta_json"]
    assert "prune" in history and "quantize" in history  # composed: prune → quantize
    layers = store.layers(dense["variant_id"])
    assert layers["ms"].notna().any() and layers["macs"].notna().any()


def test_format_pareto_uses_agreement_when_data_has_no_labels() -> None:
    import pandas as pd

    from optim.analysis import select
    from optim.cli.sweep import format_pareto

    df = pd.DataFrame({"variant_id": ["a", "b", "c"], "label": ["dense · FP32", "dense · INT8", "dense · INT4"],
                       "status": ["ok", "ok", "failed"], "executable": [True, True, False], "prune_kind": "none",
                       "prune_ratio": 0.0, "bits": [32, 8, 4], "opt_level": "all", "n_eval": 300,
                       "top1": [None, None, None], "top1_lo": [None] * 3, "top1_hi": [None] * 3,
                       "agreement": [1.0, 0.99, None], "latency_ms": [2.0, 1.0, None], "size_bytes": [4e6, 1e6, None],
                       "effective_size_bytes": [4e6, 1e6, None], "macs": [1e6, 1e6, None]})  # fmt: skip
    prepared = select.prepare(df)
    table = format_pareto(prepared, select.recommend(prepared))
    assert "agree" in table.splitlines()[0]
    assert "dense · FP32" in table and "dense · INT8" in table and "INT4" not in table
    assert "dense · INT8" in [line for line in table.splitlines() if "← recommended" in line][0]


@pytest.mark.slow
def test_run_sweep_keeps_int8_static_accuracy_and_shrinks_file_on_bundled_resnet(tmp_path: Path, store) -> None:

    handle, test, train = bundled.sample("resnet_digits")
    config = SweepConfig(ratios=(0.0,), bits=(32, 8), prune_kinds=("structured",), eval_limit=300, **FAST)
    df = store.variants(run_sweep(handle, test, train.subset(128), config, store)).set_index("variant_key")
    fp32, int8 = df.loc["none:0:32:all"], df.loc["none:0:8:all"]
    assert int8["status"] == "ok" and int8["n_eval"] == 300
    assert int8["size_bytes"] < 0.35 * fp32["size_bytes"]
    assert int8["top1"] >= fp32["top1_lo"] and int8["agreement"] >= 0.97


def test_sweep_id_for_changes_when_engine_code_changes(
    monkeypatch: pytest.MonkeyPatch, tiny_mlp: ModelHandle, mlp_data: tuple[Dataset, Dataset]
) -> None:
    import optim.sweep.run

    test, calib = mlp_data
    assert sweep_exec.engine_fingerprint() == sweep_exec.engine_fingerprint()
    before = sweep_id_for(tiny_mlp, test, calib, GRID)
    monkeypatch.setattr(optim.sweep.run, "engine_fingerprint", lambda: "edited passes")
    assert sweep_id_for(tiny_mlp, test, calib, GRID) != before


def test_run_sweep_tries_a_failing_prune_once_and_fails_its_variants(
    fake_passes: Path, monkeypatch: pytest.MonkeyPatch, tiny_mlp: ModelHandle, mlp_data: tuple[Dataset, Dataset],
    tmp_path: Path, store,
) -> None:  # fmt: skip
    import dataclasses

    from optim.errors import PassUnavailableError

    def broken(handle: ModelHandle, cfg: object, ctx: object = None) -> ModelHandle:
        fakes._log("prune broken")
        raise PassUnavailableError("op Foo cannot be pruned")

    name = fakes.FAKE_NAMES["structured"]
    monkeypatch.setitem(base._REGISTRY, name, dataclasses.replace(base._REGISTRY[name], run=broken))
    df = store.variants(run_sweep(tiny_mlp, mlp_data[0], mlp_data[1], GRID, store)).set_index("variant_key")
    struct = df[df["prune_kind"] == "structured"]
    assert len(struct) == 3 and (struct["status"] == "failed").all()
    assert struct["error"].str.contains("op Foo").all()
    assert len(_calls(fake_passes, "prune broken")) == 1
    assert (df.loc[df["prune_kind"] == "unstructured", "bits"].isin([32, 8]) == (df.loc[df["prune_kind"] == "unstructured", "status"] == "ok")).all()


def test_run_sweep_builds_each_intermediate_once_when_builders_run_in_parallel(
    fake_passes: Path, tiny_mlp: ModelHandle, mlp_data: tuple[Dataset, Dataset], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv("OPTIM_FAKE_DELAY", "0.02")
    store = Store(tmp_path)
    sid = run_sweep(tiny_mlp, *mlp_data, GRID, store, executor=LocalExecutor(workers=3, lookahead=5))
    df = store.variants(sid)
    assert df["variant_key"].tolist() == [v.key for v in GRID.variants()]
    assert len(_calls(fake_passes, "prune")) == 2 and len(_calls(fake_passes, "quantize")) == 6


def test_sweep_id_for_ignores_target_device_but_not_measurement_settings(
    tiny_mlp: ModelHandle, mlp_data: tuple[Dataset, Dataset]
) -> None:
    import dataclasses

    test, calib = mlp_data
    sid = sweep_id_for(tiny_mlp, test, calib, GRID)
    assert sweep_id_for(tiny_mlp, test, calib, dataclasses.replace(GRID, target_device="rpi4")) == sid
    assert sweep_id_for(tiny_mlp, test, calib, dataclasses.replace(GRID, latency_threads=2)) != sid
    assert sweep_id_for(tiny_mlp, test, None, GRID) != sid


@pytest.mark.parametrize("package", sweep_exec.FINGERPRINT_PACKAGES)
def test_engine_fingerprint_changes_when_any_file_of_a_result_shaping_package_changes(
    tmp_path: Path, package: str
) -> None:
    import shutil

    import optim

    tree = tmp_path / "optim"
    shutil.copytree(Path(optim.__file__).parent, tree, ignore=shutil.ignore_patterns("__pycache__"))
    before = sweep_exec.engine_fingerprint(tree)
    deepest = max((tree / package).rglob("*.py"), key=lambda p: len(p.parts))
    deepest.write_text(deepest.read_text() + "\n# edited\n")
    assert sweep_exec.engine_fingerprint(tree) != before
