"""Calibrating this CPU in the background, once, with progress anyone can read.

:func:`start_host_calibration` runs :func:`.calibrate.calibrate` in a daemon thread (ONNX Runtime with
one intra-op thread; the dashboard keeps answering). While it runs, a lock file in the data dir
(``hardware/host-<key>.lock``, ``fcntl.flock``) keeps other processes from calibrating the same CPU
at the same time, and a progress file next to it lets them — and :func:`host_calibration_status` in
any process — see "estimate calibrating… 40 %". ``$OPTIM_HOST_CALIBRATION=off`` stops estimates from
starting a calibration by themselves (tests, CI); the CLI and explicit calls still can.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optim.errors import CancelledError, OptimError
from optim.hardware import host, profiles
from optim.hardware.calibration.calibrate import CalibrationConfig, calibrate

STALE_PROGRESS_S = 600.0


@dataclass
class CalibrationJob:
    """One background calibration. ``state``: running | done | failed | cancelled."""

    key: str
    config: CalibrationConfig
    out: Path
    state: str = "running"
    fraction: float = 0.0
    stage: str = "starting"
    error: str | None = None
    started: float = field(default_factory=time.time)
    finished: float | None = None
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    def cancel(self) -> None:
        self._cancel.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job ends; True when it ended within ``timeout``."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.state != "running"


_LOCK = threading.Lock()
_JOBS: dict[str, CalibrationJob] = {}


def auto_calibration_enabled() -> bool:
    """False when ``$OPTIM_HOST_CALIBRATION`` is ``off``/``0``/``no``: estimates then never start one."""
    return os.environ.get("OPTIM_HOST_CALIBRATION", "auto").strip().lower() not in ("off", "0", "no", "false")


def _lock_path(key: str) -> Path:
    return profiles.profile_dir() / f"host-{key}.lock"


def _progress_path(key: str) -> Path:
    return profiles.profile_dir() / f"host-{key}.progress.json"


def _write_progress(job: CalibrationJob) -> None:
    try:
        _progress_path(job.key).write_text(json.dumps({"pid": os.getpid(), "fraction": job.fraction,
                                                       "stage": job.stage, "updated": time.time()}))
    except OSError:
        pass


def _run(job: CalibrationJob) -> None:
    path = _lock_path(job.key)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            job.state, job.stage = "failed", "another process is calibrating this CPU"
            job.error, job.finished = job.stage, time.time()
            return
        try:
            def progress(fraction: float, stage: str) -> None:
                job.fraction, job.stage = float(fraction), stage
                _write_progress(job)

            calibrate(job.config, out=job.out, progress=progress, cancel=job._cancel.is_set)
            job.state = "done"
        except CancelledError:
            job.state, job.stage = "cancelled", "cancelled"
        except Exception as err:  # noqa: BLE001 - a failed calibration is reported, the estimate stays on the fallback
            job.state = "failed"
            job.error = str(err) if isinstance(err, OptimError) else f"{type(err).__name__}: {err}"
            job.stage = "failed"
            traceback.print_exc()
        finally:
            job.finished = time.time()
            _progress_path(job.key).unlink(missing_ok=True)
            fcntl.flock(lock, fcntl.LOCK_UN)


def start_host_calibration(config: CalibrationConfig | None = None, force: bool = False,
                           out: Path | None = None) -> dict[str, Any]:
    """Start calibrating this CPU in the background unless it is calibrated (``force`` refits anyway) or
    a calibration is already running; returns :func:`host_calibration_status`."""
    key = host.host_key()
    with _LOCK:
        job = _JOBS.get(key)
        running = job is not None and job.state == "running"
        if not running and (force or profiles.cached_profile(key) is None) and not _other_process(key):
            job = CalibrationJob(key, config or CalibrationConfig(), Path(out) if out else profiles.profile_path(key))
            job._thread = threading.Thread(target=_run, args=(job,), name=f"calibrate-{key}", daemon=True)
            _JOBS[key] = job
            job._thread.start()
    return host_calibration_status()


def current_job() -> CalibrationJob | None:
    """This process's latest calibration job for this CPU, if any."""
    return _JOBS.get(host.host_key())


def _other_process(key: str) -> dict[str, Any] | None:
    """Progress of a calibration another process is running for ``key`` (lock held, fresh progress)."""
    path = _lock_path(key)
    if not path.exists():
        return None
    with open(path, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                data = json.loads(_progress_path(key).read_text())
            except (OSError, ValueError):
                data = {"fraction": 0.0, "stage": "calibrating in another process", "updated": time.time()}
            return data if time.time() - float(data.get("updated", 0)) < STALE_PROGRESS_S else None
        fcntl.flock(lock, fcntl.LOCK_UN)
    return None


def host_calibration_status() -> dict[str, Any]:
    """Where this CPU's calibration stands, for a page or the CLI.

    ``state``: ``calibrated`` (a profile fitted on this CPU is in use), ``calibrating`` (running here
    or in another process; ``progress`` 0-1 and ``stage`` say how far), ``failed`` (``error`` says why;
    the estimate stays on the fallback), ``missing`` (none yet: the next host estimate starts one
    unless auto-calibration is off). ``message`` is the line to show, e.g. "estimate calibrating… 40 %"."""
    key = host.host_key()
    choice = profiles.select_profile()
    job = _JOBS.get(key)
    out: dict[str, Any] = {"key": key, "profile_source": choice.source, "profile_label": choice.label,
                           "progress": None, "stage": "", "error": None, "auto": auto_calibration_enabled()}
    other = None if job is not None and job.state == "running" else _other_process(key)
    if job is not None and job.state == "running":
        out.update(state="calibrating", progress=job.fraction, stage=job.stage)
    elif other is not None:
        out.update(state="calibrating", progress=float(other.get("fraction", 0.0)), stage=str(other.get("stage", "")))
    elif choice.calibrated_here:
        out.update(state="calibrated", progress=1.0)
    elif job is not None and job.state in ("failed", "cancelled"):
        out.update(state="failed", error=job.error or job.state, stage=job.stage)
    else:
        out["state"] = "missing"
    out["message"] = _message(out)
    return out


def _message(s: dict[str, Any]) -> str:
    if s["state"] == "calibrating":
        return f"estimate calibrating… {100 * (s['progress'] or 0):.0f} % ({s['stage']})"
    if s["state"] == "calibrated":
        return s["profile_label"]
    if s["state"] == "failed":
        return f"calibration failed ({s['error']}); {s['profile_label']}"
    return f"{s['profile_label']}; run `python -m optim hardware calibrate`"
