"""Background jobs for the dashboard: a sweep runs in a thread, the page polls a snapshot.

Streamlit reruns its script on every interaction; a sweep that ran inside the script would be
interrupted by the first click (including "Cancel"). So a sweep runs in a daemon thread holding a
``threading.Event`` for cancellation; results land in the store as each variant finishes, and pages
poll :meth:`SweepJob.snapshot`. Written here because it is glue between our sweep and Streamlit's
rerun model, not a general task queue (a queue library would add a broker for one process).
"""

from __future__ import annotations

import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from optim.errors import CancelledError, OptimError

WorkFn = Callable[[Callable[[Any], None], Callable[[], bool]], str]


@dataclass
class SweepJob:
    """One background sweep. ``state`` is running | done | cancelled | failed."""

    label: str
    total: int
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    state: str = "running"
    fraction: float = 0.0
    done: int = 0
    current: str = ""
    eta_s: float | None = None
    sweep_id: str | None = None
    error: str | None = None
    detail: str | None = None
    started: float = field(default_factory=time.time)
    finished: float | None = None
    reused: int = 0  # results already in the store when the job started (counted in ``done``)
    last_done_at: float | None = None  # when ``done`` last grew (the ETA counts from there)
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def snapshot(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in (
            "id", "label", "total", "state", "fraction", "done", "current", "eta_s", "sweep_id", "error", "detail",
            "started", "finished", "reused", "last_done_at")}

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job ends (tests, CLI); True when it ended within ``timeout``."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.state != "running"

    def _on_progress(self, p: Any) -> None:
        self.fraction = float(getattr(p, "fraction", self.fraction))
        done = int(getattr(p, "done", self.done))
        if done > self.done:
            self.last_done_at = time.time()
        self.done = done
        self.total = int(getattr(p, "total", self.total) or self.total)
        self.current = str(getattr(p, "current", "") or "")
        self.eta_s = getattr(p, "eta_s", None)
        sid = getattr(p, "sweep_id", None)
        if sid:
            self.sweep_id = sid
            _BY_SWEEP[sid] = self.id


_JOBS: dict[str, SweepJob] = {}
_BY_SWEEP: dict[str, str] = {}
_LOCK = threading.Lock()


def _run(job: SweepJob, work: WorkFn) -> None:
    try:
        sid = work(job._on_progress, job._cancel.is_set)
        job.sweep_id = sid or job.sweep_id
        job.state = "cancelled" if job.cancelled else "done"
        job.fraction = 1.0 if job.state == "done" else job.fraction
    except CancelledError as err:
        job.state, job.error = "cancelled", str(err)
    except OptimError as err:
        job.state, job.error = "failed", str(err)
    except Exception as err:  # noqa: BLE001 - shown as a short message + details, never a crash
        job.state, job.error = "failed", f"Unexpected error: {type(err).__name__}: {err}"
        job.detail = traceback.format_exc()
    finally:
        job.finished = time.time()
        if job.sweep_id:
            _BY_SWEEP[job.sweep_id] = job.id


def start_job(work: WorkFn, label: str, total: int, sweep_id: str | None = None, reused: int = 0) -> SweepJob:
    """Run ``work(progress, should_cancel) -> sweep_id`` in a daemon thread and register the job;
    ``reused`` results are already stored (the job starts at that count)."""
    job = SweepJob(label=label, total=total, sweep_id=sweep_id, reused=reused, done=reused)
    with _LOCK:
        _JOBS[job.id] = job
        if sweep_id:
            _BY_SWEEP[sweep_id] = job.id
    job._thread = threading.Thread(target=_run, args=(job, work), name=f"sweep-{job.id}", daemon=True)
    job._thread.start()
    return job


def get_job(job_id: str | None) -> SweepJob | None:
    return _JOBS.get(job_id) if job_id else None


def job_for_sweep(sweep_id: str | None) -> SweepJob | None:
    return get_job(_BY_SWEEP.get(sweep_id)) if sweep_id else None
