"""Target hardware model: sourced device catalog, per-layer roofline estimator, host calibration."""

from __future__ import annotations

from optim.hardware.catalog import Device, get_device, list_devices
from optim.hardware.estimator import Estimate, estimate, roofline_points

__all__ = ["Device", "Estimate", "estimate", "get_device", "list_devices", "roofline_points"]
