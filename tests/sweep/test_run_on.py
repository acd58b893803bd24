"""The "Run on" setting: this machine by default, the cluster named by $OPTIM_RAY_ADDRESS when set."""

from __future__ import annotations

import pytest

from optim import api
from optim.errors import ConfigError
from optim.sweep.executors import LocalExecutor
from optim.sweep.ray_executor import ENV_ADDRESS, RayExecutor, executor_for


def test_run_on_defaults_to_this_machine_without_the_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_ADDRESS, raising=False)
    assert api.run_on_choices() == [("local", "this machine")]
    assert isinstance(executor_for(""), LocalExecutor) and isinstance(executor_for("local"), LocalExecutor)


def test_run_on_offers_the_cluster_from_the_environment_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_ADDRESS, "head.example:6379")
    assert api.run_on_choices() == [("head.example:6379", "Ray cluster at head.example:6379"),
                                    ("local", "this machine")]  # fmt: skip
    ex = executor_for(None)
    assert isinstance(ex, RayExecutor) and ex.address == "head.example:6379" and executor_for("") is ex
    assert isinstance(executor_for("local"), LocalExecutor)  # the user may still pick this machine
    assert executor_for("ray-local").address is None


def test_ray_executor_refuses_bad_settings_with_a_message() -> None:
    with pytest.raises(ConfigError, match="workers"):
        RayExecutor(workers=0)
    with pytest.raises(ConfigError, match="quiet"):
        RayExecutor(quiet="sometimes")


def test_optimize_page_offers_run_on_only_when_a_cluster_is_configured(
    monkeypatch: pytest.MonkeyPatch, tiny_mlp, tmp_path  # noqa: ANN001
) -> None:
    import app_helpers
    import numpy as np
    from streamlit.testing.v1 import AppTest

    from optim.io.data import Dataset

    monkeypatch.setenv("OPTIM_DATA_DIR", str(tmp_path))
    rng = np.random.default_rng(0)
    ds = Dataset(rng.standard_normal((20, 12)).astype(np.float32), rng.integers(0, 4, 20), "t")
    loaded = api.Loaded(handle=tiny_mlp, test=ds, calib=ds, origin="upload", label="tiny_mlp")

    ref = app_helpers.inject(monkeypatch, loaded)

    def page() -> AppTest:
        at = app_helpers.with_model(ref)
        at.run()
        at.switch_page("app_pages/optimize.py").run()
        assert not at.exception, [e.value for e in at.exception]
        return at

    monkeypatch.delenv(ENV_ADDRESS, raising=False)
    assert not [s for s in page().selectbox if s.key == "run_on"]
    monkeypatch.setenv(ENV_ADDRESS, "head.example:6379")
    box = [s for s in page().selectbox if s.key == "run_on"]
    assert box and box[0].value == "head.example:6379" and box[0].options == ["Ray cluster at head.example:6379",
                                                                              "this machine"]


def test_the_sweep_job_follows_the_environment_when_no_run_on_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    from optim.jobs import tasks

    monkeypatch.setenv(ENV_ADDRESS, "head.example:6379")
    assert isinstance(tasks._sweep_executor({"run_on": ""}), RayExecutor)
    assert isinstance(tasks._sweep_executor({"run_on": "local", "workers": 2}), LocalExecutor)
    monkeypatch.delenv(ENV_ADDRESS)
    assert tasks._sweep_executor({"workers": 3}).workers == 3
