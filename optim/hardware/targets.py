"""The hardware package's front door: every target by id, estimates on them, and this CPU's calibration.

- ``list_devices()`` / ``get_device(id)``: ``host`` ("this machine (estimated)", under the profile
  :func:`optim.hardware.profiles.select_profile` picks), ``host_measured``, ``cuda_measured`` (only when
  ONNX Runtime offers the CUDA execution provider) and the catalog (``devices.toml``).
- ``estimate(handle, id)`` / ``roofline_points(handle, id)``: on the host without a profile fitted on
  this CPU, the first call starts the background calibration (:mod:`.calibration.job`) and the estimate
  says "estimate calibrating…" (``Estimate.calibration == "calibrating"``) on the labelled fallback
  until the profile lands.
"""

from __future__ import annotations

from typing import Any

from optim.errors import HardwareError
from optim.handle import ModelHandle
from optim.hardware import profiles
from optim.hardware.calibration.job import (
    auto_calibration_enabled,
    host_calibration_status,
    start_host_calibration,
)
from optim.hardware.catalog import static_catalog
from optim.hardware.device import Device
from optim.hardware.model.estimator import Estimate, estimate_with_device, roofline_points_for
from optim.hardware.model.host_device import cuda_device, host_device, host_measured_device


def cuda_available() -> bool:
    """True when ONNX Runtime offers the CUDA execution provider."""
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def current_host_device() -> Device:
    """'This machine (estimated)' under the profile in use now, its label first in the notes."""
    choice = profiles.select_profile()
    return host_device(choice.profile, choice.label, calibrated_here=choice.calibrated_here)


def list_devices() -> list[Device]:
    """All targets: this machine (estimated, measured), this GPU when present, then the catalog."""
    host = current_host_device()
    devices = [host, host_measured_device(host)]
    if cuda_available():
        devices.append(cuda_device())
    return devices + list(static_catalog())


def get_device(device_id: str) -> Device:
    """One device by id; raises HardwareError listing the valid ids."""
    devices = list_devices()
    for dev in devices:
        if dev.id == device_id:
            return dev
    raise HardwareError(f"Unknown device {device_id!r}; choose one of: {', '.join(d.id for d in devices)}.")


def _host_state(device_id: str, auto_calibrate: bool | None) -> str:
    """For the host: start calibrating on first use (unless switched off) and say where it stands."""
    if device_id != "host":
        return ""
    status = host_calibration_status()
    auto = auto_calibration_enabled() if auto_calibrate is None else auto_calibrate
    if status["state"] == "missing" and auto:
        status = start_host_calibration()
    return {"calibrated": "calibrated", "calibrating": "calibrating", "failed": "fallback"}.get(
        status["state"], "fallback")


def estimate_key(device_id: str) -> str:
    """What a cached estimate on ``device_id`` depends on besides the model: "" off the host; on the host
    the profile in use (:func:`optim.hardware.profiles.profile_id`) and the calibration state, so a new
    calibration (or its start) is never hidden behind an estimate cached under the previous profile."""
    if device_id != "host":
        return ""
    status = host_calibration_status()
    return f"{profiles.profile_id()}|{status['state']}"


def estimate(handle: ModelHandle, device_id: str, batch: int = 1, auto_calibrate: bool | None = None) -> Estimate:
    """Latency (ms) with its band, per-layer table, memory fit and rough energy of ``handle`` on ``device_id``.

    ``auto_calibrate`` (default ``$OPTIM_HOST_CALIBRATION`` != off): whether a host estimate without a
    profile for this CPU starts the background calibration; a short-lived process (the CLI) passes False."""
    state = _host_state(device_id, auto_calibrate)
    est = estimate_with_device(handle, get_device(device_id), batch, calibration=state)
    if state == "calibrating":
        est.notes.insert(0, host_calibration_status()["message"])
    return est


def roofline_points(handle: ModelHandle, device_id: str, batch: int = 1,
                    auto_calibrate: bool | None = None) -> dict[str, Any]:
    """Chart data: per-layer (intensity, attained GOPS) and the device's peak/effective roofs."""
    _host_state(device_id, auto_calibrate)
    return roofline_points_for(handle, get_device(device_id), batch)
