"""How the API and the CLI hand work to the job layer: one call per job, model and datasets packed as plain
data (:mod:`optim.jobs.codec`).

Everything heavy or untrusted the pages ask for (loading an upload, its data, the summary, the baseline,
sweeps, sensitivity, predictions) runs as a job in a worker process (:mod:`optim.jobs`), never in the
Streamlit server process; a hang or a memory bomb becomes a message there. The CLI loads files the same way.
"""

from __future__ import annotations

from typing import Any

from optim.handle import ModelHandle
from optim.jobs import JobResult, JobSpec, Limits, codec, run_job
from optim.jobs.local import CancelFn, ProgressFn


def run(kind: str, label: str, args: dict[str, Any] | None = None, blobs: dict[str, bytes] | None = None, *,
        handle: ModelHandle | None = None, datasets: dict[str, Any] | None = None, limits: Limits | None = None,
        progress: ProgressFn | None = None, cancel: CancelFn | None = None) -> JobResult:
    """Run a job of ``kind``; ``handle`` and ``datasets`` travel as ONNX bytes and ``.npy`` blobs."""
    args, blobs = dict(args or {}), dict(blobs or {})
    if handle is not None:
        args["model"] = codec.handle_facts(handle)
        blobs.update(codec.handle_blobs(handle))
    if datasets is not None:
        args["datasets"], more = codec.pack_datasets(datasets)
        blobs.update(more)
    return run_job(JobSpec(kind, codec.plain(args), blobs, limits=limits, label=label), progress, cancel)
