"""A sweep's status as the pages show it (counts from the store, live ETA, failures in full)."""

from __future__ import annotations

import time
from typing import Any

from optim.api.store import open_store
from optim.hardware.calibration.job import host_calibration_status
from optim.present import status as present_status
from optim.sweep.jobs import SweepJob

__all__ = ["host_estimate_status", "live_eta", "sweep_status"]


def sweep_status(sweep_id: str | None, job: SweepJob | None = None) -> dict[str, Any]:
    """See :func:`optim.present.status.sweep_status`; ``job`` None = what the store holds."""
    sid = sweep_id or (job.sweep_id if job is not None else None)
    rows = open_store().variants(sid) if sid else None
    return present_status.sweep_status(job.snapshot() if job is not None else None, rows, time.time())


def live_eta(snapshot: dict[str, Any]) -> float | None:
    """Seconds left of a job from its measured time per finished item (None until one finished)."""
    return present_status.live_eta(snapshot, time.time())


def host_estimate_status() -> str | None:
    """While this CPU's estimate model is being calibrated (or fell back after a failure), the line to show
    next to host estimates ("estimate calibrating… 40 %"); None once it is calibrated or not started."""
    s = host_calibration_status()
    return str(s["message"]) if s["state"] in ("calibrating", "failed") else None
