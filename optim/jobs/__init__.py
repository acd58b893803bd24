"""The job layer: everything heavy or untrusted runs as a job (plain-data spec) in a worker process.

``run_job(spec)`` hands a :class:`JobSpec` to the process-wide executor and returns its
:class:`JobResult` (raising the job's ``OptimError``). The executor is a
:class:`~optim.jobs.local.LocalProcessExecutor` (worker processes with limits) unless limits are off
(``OPTIM_JOB_LIMITS=off``, the CLI's ``--no-limits``), then an inline one; :func:`set_executor`
installs another (e.g. a cluster executor with the same ``run(spec, progress, cancel)``).
"""

from __future__ import annotations

import threading
from typing import Any, Protocol

from optim.jobs.limits import Limits, default_limits, limits_enabled
from optim.jobs.local import CancelFn, InlineExecutor, LocalProcessExecutor, ProgressFn
from optim.jobs.spec import JobResult, JobSpec


class Executor(Protocol):
    def run(self, spec: JobSpec, progress: ProgressFn | None = None,
            cancel: CancelFn | None = None) -> JobResult: ...

    def prewarm(self) -> None: ...

    def shutdown(self) -> None: ...


_executor: Any = None
_lock = threading.Lock()


def get_executor() -> Executor:
    global _executor
    with _lock:
        if _executor is None:
            _executor = LocalProcessExecutor() if limits_enabled() else InlineExecutor()
        return _executor


def set_executor(executor: Executor | None) -> Executor | None:
    """Install ``executor`` (None: the default on next use); returns the previous one (not shut down)."""
    global _executor
    with _lock:
        old, _executor = _executor, executor
    return old


def run_job(spec: JobSpec, progress: ProgressFn | None = None, cancel: CancelFn | None = None) -> JobResult:
    """Run ``spec`` on the current executor; raises the job's OptimError (or a JobLimitError)."""
    return get_executor().run(spec, progress=progress, cancel=cancel).unwrap()


__all__ = ["Executor", "InlineExecutor", "JobResult", "JobSpec", "Limits", "LocalProcessExecutor",
           "default_limits", "get_executor", "limits_enabled", "run_job", "set_executor"]
