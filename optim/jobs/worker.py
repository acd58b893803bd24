"""The job worker process: ``python -m optim.jobs.worker`` reads job frames on stdin, answers on stdout.

The loop applies each job's limits with ``setrlimit`` before running it (:func:`optim.jobs.registry.execute`),
empties its private scratch directory (its working directory) afterwards, and asks to be replaced when it has
grown past a quarter of its memory limit. A reader thread takes cancel frames while a job runs.
"""

from __future__ import annotations

import os
import queue
import resource
import shutil
import sys
import threading
from pathlib import Path
from typing import Any, BinaryIO

from optim.jobs.limits import apply_rlimits
from optim.jobs.registry import JobContext, execute, load_tasks
from optim.jobs.spec import FrameError, JobResult, JobSpec, encode_frame, read_frame


def _clear(directory: Path) -> None:
    for child in directory.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def _rss_bytes() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def serve(inp: BinaryIO, out: BinaryIO) -> int:
    """The worker loop: one job at a time; a reader thread handles cancel frames while a job runs."""
    jobs: queue.Queue[tuple[dict[str, Any], dict[str, bytes]] | None] = queue.Queue()
    cancelled: set[str] = set()  # job ids the host cancelled (a cancel may arrive before its job starts)
    write_lock = threading.Lock()

    def send(header: dict[str, Any], blobs: dict[str, bytes] | None = None) -> None:
        with write_lock:
            out.write(encode_frame(header, blobs))
            out.flush()

    def reader() -> None:
        try:
            while (frame := read_frame(inp)) is not None:
                if frame[0].get("type") == "cancel":
                    cancelled.add(str(frame[0].get("job_id")))
                else:
                    jobs.put(frame)
        except (FrameError, OSError, ValueError):
            pass
        jobs.put(None)

    threading.Thread(target=reader, daemon=True, name="job-reader").start()
    load_tasks()
    send({"type": "ready", "pid": os.getpid()})
    scratch = Path.cwd()
    while (frame := jobs.get()) is not None:
        spec = JobSpec.from_frame(*frame)
        job_id = str(frame[0].get("job_id"))
        limits = spec.effective_limits()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        apply_rlimits(limits, cpu_used_s=usage.ru_utime + usage.ru_stime)
        ctx = JobContext(scratch=scratch, progress=lambda p: send({"type": "progress", "progress": p}),
                         cancelled=lambda jid=job_id: jid in cancelled)
        result = execute(spec, ctx)
        _clear(scratch)
        recycle = bool(limits.address_space_bytes and _rss_bytes() > limits.address_space_bytes // 4)
        try:
            send({**result.header(), "recycle": recycle}, result.blobs)
        except MemoryError:
            send({**JobResult(ok=False, error_type="JobMemoryError",
                              error_message="The job's result did not fit in its memory limit.").header(),
                  "recycle": True})
        if recycle:
            break
    return 0


def main() -> int:
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # stray prints from libraries go to stderr, never into the frame stream
    sys.stdout = sys.stderr
    return serve(sys.stdin.buffer, out)


if __name__ == "__main__":
    sys.exit(main())
