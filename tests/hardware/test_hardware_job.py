"""The background calibration job: progress, status states, one calibration per CPU across processes."""

from __future__ import annotations

import fcntl
import threading
from pathlib import Path

import pytest

from optim.handle import ModelHandle
from optim.hardware import host, profiles
from optim.hardware.calibration import job
from optim.hardware.calibration.calibrate import CalibrationConfig
from optim.hardware.targets import estimate

TINY = CalibrationConfig(fit=("ref:ds_cnn:0.5",), holdout=("ref:resnet8:0.5",), repeats=1, runs=2, latency_rounds=1)


@pytest.fixture()
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("OPTIM_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("OPTIM_HOST_PROFILE", raising=False)
    monkeypatch.setattr(job, "_JOBS", {})
    return tmp_path


@pytest.fixture()
def gated(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Replace the measuring calibration with one that reports progress, waits for the gate, writes a profile."""
    gate = threading.Event()

    def fake(config, out=None, progress=None, cancel=None, **_):
        progress(0.4, "profiling fake (1/1)")
        gate.wait(30)
        if cancel():
            raise job.CancelledError("Calibration cancelled.")
        prof = {"fingerprint_key": host.host_key(), "model_version": profiles.MODEL_VERSION, "classes": {},
                "holdout": {"errors_pct": {"m": 4.0}}}
        profiles.write_profile(prof, out)
        progress(1.0, "done")
        return prof

    monkeypatch.setattr(job, "calibrate", fake)
    return gate


def test_status_is_missing_before_any_calibration(data_dir: Path) -> None:
    s = job.host_calibration_status()
    assert s["state"] == "missing" and s["profile_source"] == "fallback"
    assert "calibrate" in s["message"]


def test_job_reports_progress_then_calibrated(data_dir: Path, gated: threading.Event) -> None:
    s = job.start_host_calibration()
    assert s["state"] == "calibrating"
    running = job.current_job()
    for _ in range(200):
        if running.fraction >= 0.4:
            break
        running._thread.join(0.01)
    s = job.host_calibration_status()
    assert (s["state"], s["progress"], s["stage"]) == ("calibrating", 0.4, "profiling fake (1/1)")
    assert s["message"].startswith("estimate calibrating… 40 %")
    assert job.start_host_calibration()["state"] == "calibrating"  # no second job while one runs
    assert job.current_job() is running
    gated.set()
    assert running.wait(30) and running.state == "done"
    s = job.host_calibration_status()
    assert s["state"] == "calibrated" and s["profile_source"] == "cached"


def test_estimate_on_host_starts_calibration_and_says_so(data_dir: Path, gated: threading.Event,
                                                         tiny_cnn: ModelHandle) -> None:
    est = estimate(tiny_cnn, "host", auto_calibrate=True)
    assert est.calibration == "calibrating"
    assert est.notes[0].startswith("estimate calibrating…")
    assert est.band_low_ms < est.total_ms < est.band_high_ms
    gated.set()
    assert job.current_job().wait(30)
    assert estimate(tiny_cnn, "host", auto_calibrate=True).calibration == "calibrated"


def test_estimate_does_not_start_calibration_when_switched_off(data_dir: Path, gated: threading.Event,
                                                               tiny_cnn: ModelHandle,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPTIM_HOST_CALIBRATION", "off")
    assert estimate(tiny_cnn, "host").calibration == "fallback"
    assert job.current_job() is None


def test_cancelled_job_reports_failed_and_keeps_fallback(data_dir: Path, gated: threading.Event) -> None:
    job.start_host_calibration()
    running = job.current_job()
    running.cancel()
    gated.set()
    assert running.wait(30) and running.state == "cancelled"
    s = job.host_calibration_status()
    assert s["state"] == "failed" and s["profile_source"] == "fallback"


def test_calibration_in_another_process_is_reported_and_not_duplicated(data_dir: Path,
                                                                      gated: threading.Event) -> None:
    key = host.host_key()
    lock_path = profiles.profile_dir() / f"host-{key}.lock"
    lock_path.parent.mkdir(parents=True)
    (profiles.profile_dir() / f"host-{key}.progress.json").write_text(
        '{"fraction": 0.25, "stage": "profiling x (2/8)", "updated": 9e18}')
    with open(lock_path, "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what the other process holds while it calibrates
        s = job.start_host_calibration()
        assert (s["state"], s["progress"]) == ("calibrating", 0.25)
        assert job.current_job() is None
    gated.set()


@pytest.mark.slow
def test_tiny_real_calibration_writes_profile_with_holdout_residuals(data_dir: Path) -> None:
    seen: list[float] = []
    job.start_host_calibration(TINY)
    running = job.current_job()
    while not running.wait(0.05):
        seen.append(running.fraction)
    assert running.state == "done", running.error
    assert seen == sorted(seen)
    prof = profiles.cached_profile()
    assert prof is not None and prof["calibration_models"] == ["ds_cnn_w0.5"]
    assert list(prof["holdout"]["errors_pct"]) == ["resnet8_w0.5"]
    assert job.host_calibration_status()["state"] == "calibrated"
