"""The job layer's specs as Ray tasks: :class:`RayJobExecutor` has the ``run(spec, progress, cancel)`` of
:mod:`optim.jobs` executors, so ``optim.jobs.set_executor(RayJobExecutor(...))`` sends every job (a model
load, a conversion, …) to the cluster instead of local worker processes.

A job travels as plain data (the spec's JSON header and its named blobs) and comes back the same way. On
the node, the task hands the spec to that node's own :class:`~optim.jobs.local.LocalProcessExecutor`, so the
job keeps every limit it has on one machine: its own worker process with address-space, CPU and wall-time
limits, a private scratch directory, the sandbox for torch formats. (``limits=False`` runs it inline in the
Ray worker, as ``--no-limits`` does locally.) A limit hit or a crashed job process comes back as the same
``JobLimitError`` as locally; a Ray worker that dies is retried once, then reported as a crash. Cancel
cancels the Ray task (its job process is killed with it). Progress reports are not forwarded.
"""

from __future__ import annotations

import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

from optim.errors import CancelledError, OptimError
from optim.jobs.local import CancelFn, LocalProcessExecutor, ProgressFn
from optim.jobs.registry import JobContext, execute
from optim.jobs.spec import JobResult, JobSpec
from optim.sweep.ray_executor import RayExecutor, cancel_unfinished

Plain = tuple[dict[str, Any], dict[str, bytes]]


@lru_cache(maxsize=1)
def _node_executor() -> LocalProcessExecutor:
    """One pool of limited job processes per Ray worker process."""
    return LocalProcessExecutor(max_workers=1, idle_workers=1)


def run_spec(header: dict[str, Any], blobs: dict[str, bytes], limits: bool) -> Plain:
    """Ray task: one job spec on this node; its result as plain data."""
    spec = JobSpec.from_frame(header, blobs)
    if not limits:
        with tempfile.TemporaryDirectory(prefix="optim-job-") as scratch:
            result = execute(spec, JobContext(scratch=Path(scratch)))
    else:
        try:
            result = _node_executor().run(spec)
        except OptimError as err:  # a limit hit or a crashed job process, as on one machine
            result = JobResult(ok=False, error_type=type(err).__name__, error_message=str(err))
    return result.header(), result.blobs


class RayJobExecutor:
    """Job specs as Ray tasks on ``address`` (None: a local Ray instance, as :class:`RayExecutor`)."""

    def __init__(self, address: str | None = None, workers: int = 2, limits: bool = True,
                 poll_s: float = 0.2, ray_executor: RayExecutor | None = None) -> None:  # fmt: skip
        self.cluster = ray_executor or RayExecutor(address, workers=workers)
        self.limits, self.poll_s = limits, poll_s

    def run(self, spec: JobSpec, progress: ProgressFn | None = None, cancel: CancelFn | None = None) -> JobResult:
        ray = self.cluster.start()
        task = ray.remote(num_cpus=1, max_retries=1)(run_spec)
        ref = task.remote(spec.header(), spec.blobs, self.limits)
        title = spec.label or spec.kind.replace("_", " ")
        while True:
            if cancel is not None and cancel():
                cancel_unfinished(ray, [ref])
                raise CancelledError(f"The job ({title}) was cancelled.")
            ready, _ = ray.wait([ref], timeout=self.poll_s)
            if ready:
                break
        try:
            header, blobs = ray.get(ref)
        except ray.exceptions.RayError as err:
            first = (str(err).strip().splitlines() or [""])[0][:300]
            return JobResult(ok=False, error_type="JobCrashedError",
                             error_message=f"The Ray worker running the job ({title}) died on the first try and on "
                                           f"the retry ({type(err).__name__}: {first}).")  # fmt: skip
        return JobResult.from_frame(header, blobs)

    def prewarm(self) -> None:
        self.cluster.start()

    def shutdown(self) -> None:
        self.cluster.close()
