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
