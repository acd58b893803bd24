"""Cached host estimates follow the calibration: a new profile for this CPU is never hidden by the cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from optim.analysis import targets as analysis_targets
from optim.hardware import host, profiles
from optim.hardware import targets as hw_targets


@pytest.fixture()
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("OPTIM_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("OPTIM_HOST_PROFILE", raising=False)
    return tmp_path


def _artifact(path: Path) -> str:
    w = numpy_helper.from_array(np.random.default_rng(0).random((8, 3, 3, 3), dtype=np.float32), "w")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=[1, 1, 1, 1])
    model = helper.make_model(helper.make_graph([node], "g", [x], [y], [w]),
                              opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, str(path))
    return str(path)


def _this_cpu_profile(overhead_factor: float, created: str) -> dict:
    prof = json.loads(profiles.FALLBACK_PATH.read_text())
    for c in prof["classes"].values():
        c["overhead_us"] = float(c["overhead_us"]) * overhead_factor
    prof.update(fingerprint_key=host.host_key(), model_version=profiles.MODEL_VERSION, created=created)
    return prof


def test_profile_id_changes_when_a_calibration_lands(data_dir: Path) -> None:
    before = profiles.profile_id()
    profiles.write_profile(_this_cpu_profile(1.0, "2031-01-01T00:00:00Z"))
    landed = profiles.profile_id()
    profiles.write_profile(_this_cpu_profile(1.0, "2031-01-02T00:00:00Z"))
    assert len({before, landed, profiles.profile_id()}) == 3
    assert hw_targets.estimate_key("t4") == ""


def test_cached_host_estimate_recomputed_after_new_calibration(data_dir: Path) -> None:
    artifact = _artifact(data_dir / "m.onnx")
    first = analysis_targets.estimate_artifact(artifact, "host")
    assert first.calibration == "fallback"
    assert analysis_targets.estimate_artifact(artifact, "host") is first  # cached while nothing changed
    profiles.write_profile(_this_cpu_profile(50.0, "2031-01-01T00:00:00Z"))
    second = analysis_targets.estimate_artifact(artifact, "host")
    assert second is not first and second.calibration == "calibrated"
    assert second.total_ms > first.total_ms  # priced with the new profile's (50x) per-kernel overheads
