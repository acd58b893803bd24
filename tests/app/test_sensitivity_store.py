"""Measured per-layer sensitivity: stored per (model, data, settings), run as a background job, shown on Layers."""

from __future__ import annotations

import json
import time
from pathlib import Path

import app_helpers
import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from optim import api
from optim.io.data import Dataset
from optim.sweep.store import SENSITIVITY_COLUMNS, Store

ROOT = Path(__file__).resolve().parents[2]
SHORT = {"prune_levels": (0.5,), "quant_bits": (4,)}


@pytest.fixture(autouse=True)
def store_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("OPTIM_DATA_DIR", str(tmp_path / "store"))
    return tmp_path / "store"


def _table(layers: tuple[str, ...] = ("conv_a", "fc_b")) -> pd.DataFrame:
    """A hand-made analysis table: fc_b loses 12 points at 2 bits, conv_a 40 points at 75 % pruning."""
    drops = {("conv_a", "prune", 0.75): 40.0, ("conv_a", "quant", 2.0): 1.0, ("fc_b", "prune", 0.75): 5.0,
             ("fc_b", "quant", 2.0): 12.0, ("conv_a", "quant", 8.0): 0.0, ("fc_b", "quant", 8.0): 0.0}
    rows = [{"layer": la, "op_type": "Conv" if la.startswith("conv") else "Gemm", "params": 100, "kind": k,
             "level": lv, "metric": 90.0 - d, "drop": d, "agreement": 100.0 - d, "rel_error": d / 100}
            for (la, k, lv), d in drops.items() if la in layers]
    df = pd.DataFrame(rows)
    df.attrs.update(metric_name="accuracy", baseline=90.0)
    return df


def _loaded(tiny_cnn, tiny_images, with_train: bool) -> api.Loaded:
    x, y = tiny_images
    test = Dataset(x=x[100:], y=y[100:], name="test")
    train = Dataset(x=x[:100], y=y[:100], name="train") if with_train else None
    return api.Loaded(handle=tiny_cnn, test=test, calib=test.subset(32), origin="upload", label="tiny_cnn",
                      train=train)


def test_put_sensitivity_round_trips_rows_and_attrs(store_dir: Path) -> None:
    st, df = Store(store_dir), _table()
    st.put_sensitivity("m1", "d1", {"bits": [8, 2]}, df)
    back = st.sensitivity("m1", "d1")
    assert back is not None
    pd.testing.assert_frame_equal(back[SENSITIVITY_COLUMNS], df[SENSITIVITY_COLUMNS], check_dtype=False)
    assert back.attrs["metric_name"] == "accuracy" and back.attrs["baseline"] == 90.0
    assert back.attrs["settings"] == {"bits": [8, 2]}
    assert st.sensitivity("m1", "d1", {"bits": [8, 2]}) is not None
    assert st.sensitivity("m1", "d1", {"bits": [4]}) is None
    assert st.sensitivity("m1", "other-data") is None and st.sensitivity("m2", "d1") is None


def test_put_sensitivity_replaces_table_when_key_repeats(store_dir: Path) -> None:
    st = Store(store_dir)
    st.put_sensitivity("m1", "d1", {"s": 1}, _table())
    st.put_sensitivity("m1", "d1", {"s": 1}, _table(("fc_b",)))
    back = Store(store_dir).sensitivity("m1", "d1", {"s": 1})  # a fresh Store reopens the same schema
    assert back is not None and set(back["layer"]) == {"fc_b"} and len(back) == 3


def test_sensitivity_data_uses_training_split_not_test_when_model_has_one(tiny_cnn, tiny_images) -> None:
    loaded = _loaded(tiny_cnn, tiny_images, with_train=True)
    data, source = api.sensitivity_data(loaded, n=50)
    assert len(data) == 50 and "training split" in source
    test_rows = {r.tobytes() for r in loaded.test.x}
    assert not any(r.tobytes() in test_rows for r in data.x)


def test_start_sensitivity_stores_rows_and_rerun_reads_them_without_recomputing(
        tiny_cnn, tiny_images, monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = _loaded(tiny_cnn, tiny_images, with_train=True)
    assert api.stored_sensitivity(loaded, n=60) is None
    job = api.start_sensitivity(loaded, n=60, **SHORT)
    assert job.wait(60) and job.state == "done", job.error
    df = api.stored_sensitivity(loaded, n=60)
    assert df is not None and job.done == job.total == len(df)
    assert set(df["kind"]) == {"prune", "quant"} and len(df) == 2 * df["layer"].nunique() >= 2 * 4
    assert df.attrs["metric_name"] == "accuracy"
    assert (df["metric"] + df["drop"]).round(6).nunique() == 1  # drop = baseline - metric on every row

    import optim.analysis.sensitivity

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("recomputed a stored analysis")

    monkeypatch.setattr(optim.analysis.sensitivity, "analyze", boom)
    again = api.start_sensitivity(loaded, n=60, **SHORT)
    assert again.wait(30) and again.state == "done", again.error
    pd.testing.assert_frame_equal(api.stored_sensitivity(loaded, n=60), df)


def test_start_sensitivity_cancel_stores_nothing(tiny_cnn, tiny_images, monkeypatch: pytest.MonkeyPatch) -> None:
    import optim.measure.core

    real = optim.measure.core.predict

    def slow_predict(*args: object, **kwargs: object) -> np.ndarray:
        time.sleep(0.05)  # so the cancel lands while layers remain, however fast the machine
        return real(*args, **kwargs)

    monkeypatch.setattr(optim.measure.core, "predict", slow_predict)
    loaded = _loaded(tiny_cnn, tiny_images, with_train=False)
    job = api.start_sensitivity(loaded, n=32)
    job.cancel()
    assert job.wait(30) and job.state == "cancelled"
    assert api.stored_sensitivity(loaded, n=32) is None


def test_sensitivity_view_orders_settings_and_ranks_most_fragile_layer() -> None:
    view = api.sensitivity_view(_table())
    assert list(view["table"].columns) == ["prune 75 %", "8-bit", "2-bit"]
    assert list(view["table"].index) == ["conv_a", "fc_b"]  # graph order
    assert view["table"].loc["fc_b", "2-bit"] == 12.0
    assert list(view["top"]["layer"]) == ["conv_a", "fc_b"]  # worst drop: 40 (pruning) then 12
    assert view["reading"].startswith("fc_b (Gemm) is the most fragile: 2-bit costs 12.0 points")
    fig = api.sensitivity_chart(view["table"], view["metric_name"])
    assert fig.data[0].colorbar.title.text == "accuracy drop (points)"


def _layers_app(loaded: api.Loaded, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    at = app_helpers.with_model(app_helpers.inject(monkeypatch, loaded))
    at.run()
    at.switch_page("app_pages/layers.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _measured_chart(at: AppTest) -> dict | None:
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    hits = [s for s in specs if s["layout"]["title"]["text"].startswith("Measured sensitivity")]
    return hits[0] if hits else None


def test_layers_page_shows_measured_heatmap_when_sensitivity_is_stored(tiny_cnn, tiny_images,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = _loaded(tiny_cnn, tiny_images, with_train=False)
    data, _ = api.sensitivity_data(loaded)
    settings = {"prune_levels": [0.75], "quant_bits": [8, 2]}
    Store().put_sensitivity(tiny_cnn.content_hash, data.content_hash, settings, _table())
    at = _layers_app(loaded, monkeypatch)
    spec = _measured_chart(at)
    assert spec is not None
    assert spec["data"][0]["colorbar"]["title"]["text"] == "accuracy drop (points)"
    assert spec["data"][0]["y"] == ["conv_a", "fc_b"] and spec["layout"]["xaxis"]["title"]["text"]
    assert any("fc_b (Gemm) is the most fragile: 2-bit costs 12.0 points" in m.value for m in at.markdown)
    assert "measure_sens" not in [b.key for b in at.button]


def test_layers_page_measure_button_runs_analysis_then_shows_heatmap(tiny_cnn, tiny_images,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = _loaded(tiny_cnn, tiny_images, with_train=False)
    at = _layers_app(loaded, monkeypatch)
    assert _measured_chart(at) is None
    button = at.button(key="measure_sens")
    assert button.label.startswith("Measure sensitivity (~")
    button.click().run()
    job = api.get_job(at.session_state["sens_job_id"])
    assert job is not None and job.wait(60) and job.state == "done", job.error if job else None
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert _measured_chart(at) is not None
    assert np.isfinite(api.stored_sensitivity(loaded)["drop"]).all()


def test_layers_page_with_sweep_shows_measured_and_proxy_heatmaps(tiny_cnn, tiny_images,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = _loaded(tiny_cnn, tiny_images, with_train=False)
    job = api.start_sweep(loaded, api.SweepRequest(ratios=(0.0,), bits=(32, 8), eval_limit=40,
                                                    latency_budget_s=0.05))
    assert job.wait(120) and job.state == "done", job.error
    data, _ = api.sensitivity_data(loaded)
    Store().put_sensitivity(tiny_cnn.content_hash, data.content_hash, {"s": 1}, _table())
    at = app_helpers.with_model(app_helpers.inject(monkeypatch, loaded), sweep=job.sweep_id)
    at.run()
    at.switch_page("app_pages/layers.py").run()
    assert not at.exception and not at.error, [e.value for e in at.exception] + [e.value for e in at.error]
    titles = [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")]
    assert any(t.startswith("Measured sensitivity") for t in titles), titles
    assert any(t.startswith("Weight-only proxy (no data)") for t in titles), titles


def test_sensitivity_data_raises_config_error_when_model_has_no_data(tiny_cnn) -> None:
    loaded = api.Loaded(handle=tiny_cnn, test=None, calib=None, origin="upload", label="no data")
    with pytest.raises(api.ConfigError, match="upload evaluation data"):
        api.sensitivity_data(loaded)


def test_layers_page_explains_instead_of_failing_when_model_has_no_data(tiny_cnn,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    at = _layers_app(api.Loaded(handle=tiny_cnn, test=None, calib=None, origin="upload", label="no data"),
                     monkeypatch)
    assert not at.error, [e.value for e in at.error]
    assert any("with input data" in i.value for i in at.info)
