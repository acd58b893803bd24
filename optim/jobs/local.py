"""Executors: worker processes on this machine (the default) and an inline runner (``--no-limits``).

:class:`LocalProcessExecutor` keeps warm workers (``python -m optim.jobs.worker``, each in its own
session/process group with a private, emptied scratch directory as its working directory) and hands
each job to an idle one. A job past its wall time is killed with its whole process group (sandboxed
converters included); a worker that dies becomes a :class:`~optim.errors.JobLimitError` naming the
limit it most likely hit. The calling thread only waits on a pipe, so a Streamlit server keeps
answering while a job runs.
"""

from __future__ import annotations

import atexit
import collections
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optim
from optim.errors import JobCrashedError, JobMemoryError, JobTimeoutError, OptimError
from optim.jobs.registry import JobContext, execute
from optim.jobs.spec import FrameError, JobResult, JobSpec, encode_frame, read_frame

ProgressFn = Callable[[dict[str, Any]], None]
CancelFn = Callable[[], bool]
START_TIMEOUT_S = 120.0
_TRUSTED_ADVICE = ("For your own trusted file, run the CLI with --no-limits or raise the limit "
                   "(OPTIM_JOB_TIME_SCALE, OPTIM_JOB_MEMORY_FRACTION).")


def _title(spec: JobSpec) -> str:
    return spec.label or spec.kind.replace("_", " ")


class _Worker:
    """One worker process with its frame reader and a bounded tail of its stderr."""

    def __init__(self, root: Path) -> None:
        self.scratch = Path(tempfile.mkdtemp(prefix="job-", dir=root))
        self.frames: queue.Queue[tuple[dict[str, Any], dict[str, bytes]] | None] = queue.Queue()
        self.stderr_tail: collections.deque[bytes] = collections.deque(maxlen=64)
        env = dict(os.environ)
        pkg_root = str(Path(optim.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join([pkg_root, *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]])
        env.setdefault("OMP_NUM_THREADS", str(min(os.cpu_count() or 1, 4)))
        flags = ["-P"] if sys.version_info >= (3, 11) else []
        self.proc = subprocess.Popen([sys.executable, *flags, "-m", "optim.jobs.worker"], cwd=self.scratch,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=env, start_new_session=True)
        threading.Thread(target=self._read, daemon=True, name=f"worker-{self.proc.pid}-out").start()
        threading.Thread(target=self._drain, daemon=True, name=f"worker-{self.proc.pid}-err").start()
        self.ready = False
        self.retired = False

    def _read(self) -> None:
        try:
            while (frame := read_frame(self.proc.stdout)) is not None:  # type: ignore[arg-type]
                self.frames.put(frame)
        except (FrameError, OSError, ValueError):
            pass
        self.frames.put(None)

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in iter(self.proc.stderr.readline, b""):
            self.stderr_tail.append(line[-500:])

    def send(self, header: dict[str, Any], blobs: dict[str, bytes] | None = None) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(encode_frame(header, blobs))
        self.proc.stdin.flush()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        shutil.rmtree(self.scratch, ignore_errors=True)

    def stderr_text(self) -> str:
        return b"".join(self.stderr_tail).decode(errors="replace")[-2000:]


class LocalProcessExecutor:
    """Runs job specs in warm worker processes with their limits; thread-safe."""

    def __init__(self, max_workers: int | None = None, idle_workers: int = 1, root: Path | None = None) -> None:
        self.max_workers = max_workers or int(os.environ.get("OPTIM_JOB_WORKERS", "2") or 2)
        self.idle_workers = idle_workers
        self.root = Path(root or tempfile.mkdtemp(prefix="optim-jobs-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self._idle: list[_Worker] = []
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(self.max_workers)
        self._own_root = root is None
        atexit.register(self.shutdown)

    # --- pool ------------------------------------------------------------------------------------
    def prewarm(self) -> None:
        """Start an idle worker now (in the background) so the first job does not pay for the start."""
        with self._lock:
            if self._idle:
                return
            self._idle.append(_Worker(self.root))

    def _take(self) -> _Worker:
        with self._lock:
            while self._idle:
                w = self._idle.pop()
                if w.alive():
                    return w
                w.kill()
        return _Worker(self.root)

    def _give_back(self, w: _Worker) -> None:
        with self._lock:
            if w.alive() and not w.retired and len(self._idle) < self.idle_workers:
                self._idle.append(w)
                return
        w.kill()

    def shutdown(self) -> None:
        """Stop the idle workers (running jobs finish); the scratch root goes when this executor made it."""
        with self._lock:
            idle, self._idle = self._idle, []
        for w in idle:
            w.kill()
        if self._own_root and self.root.is_dir() and not any(self.root.iterdir()):
            shutil.rmtree(self.root, ignore_errors=True)

    # --- running ---------------------------------------------------------------------------------
    def run(self, spec: JobSpec, progress: ProgressFn | None = None, cancel: CancelFn | None = None) -> JobResult:
        """Run ``spec`` in a worker; returns its result (``.unwrap()`` raises its error) or raises
        :class:`~optim.errors.JobLimitError` when the worker was killed or died."""
        with self._slots:
            w = self._take()
            try:
                result = self._run_on(w, spec, progress, cancel)
            except BaseException:
                w.kill()
                raise
            self._give_back(w)
            return result

    def _run_on(self, w: _Worker, spec: JobSpec, progress: ProgressFn | None, cancel: CancelFn | None) -> JobResult:
        limits = spec.effective_limits()
        start = time.monotonic()
        if not w.ready:
            self._await_ready(w, spec, start)
        start = time.monotonic()
        deadline = start + limits.wall_s if limits.wall_s else None
        job_id = uuid.uuid4().hex
        w.send({**spec.header(), "job_id": job_id}, spec.blobs)
        cancel_sent = False
        while True:
            wait = 0.2 if deadline is None else max(0.0, min(0.2, deadline - time.monotonic()))
            if cancel is not None and not cancel_sent and cancel():
                w.send({"type": "cancel", "job_id": job_id})
                cancel_sent = True
            try:
                frame = w.frames.get(timeout=wait)
            except queue.Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    raise JobTimeoutError(f"The job ({_title(spec)}) ran past its {limits.wall_s:.0f} s wall-time "
                                          "limit and was stopped. The input may loop forever or be too large for "
                                          f"this server; try a smaller model or less data. {_TRUSTED_ADVICE}") from None
                continue
            if frame is None:
                raise self._death(w, spec, time.monotonic() - start)
            header, blobs = frame
            if header.get("type") == "progress" and progress is not None:
                progress(header.get("progress") or {})
            elif header.get("type") == "result":
                w.retired = bool(header.get("recycle"))  # it exits after this result
                return JobResult.from_frame(header, blobs)

    def _await_ready(self, w: _Worker, spec: JobSpec, start: float) -> None:
        try:
            frame = w.frames.get(timeout=START_TIMEOUT_S)
        except queue.Empty:
            frame = None
        if frame is None or frame[0].get("type") != "ready":
            raise JobCrashedError(f"A worker process for the job ({_title(spec)}) did not start "
                                  f"({w.stderr_text()[-300:].strip() or 'no output'}). Check the installation.")
        w.ready = True

    def _death(self, w: _Worker, spec: JobSpec, elapsed: float) -> OptimError:
        try:
            code = w.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            code = None
        limits = spec.effective_limits()
        if code == -signal.SIGXCPU:
            return JobTimeoutError(f"The job ({_title(spec)}) used up its {limits.cpu_s or 0:.0f} s CPU-time limit "
                                   f"and was stopped. Try a smaller model or less data. {_TRUSTED_ADVICE}")
        tail = w.stderr_text()
        if code == -signal.SIGKILL or "std::bad_alloc" in tail or "MemoryError" in tail or "Cannot allocate" in tail:
            mem = f"{limits.address_space_bytes / 2**30:.1f} GiB" if limits.address_space_bytes else "available"
            return JobMemoryError(f"The job ({_title(spec)}) ran out of memory (limit: {mem}) and was stopped. "
                                  f"Use a smaller model or less data. {_TRUSTED_ADVICE}")
        how = f"signal {-code}" if code is not None and code < 0 else f"exit status {code}"
        return JobCrashedError(f"The worker running the job ({_title(spec)}) crashed ({how}). The input may be "
                               "damaged or unsupported; re-export it and try again.")


class InlineExecutor:
    """Runs jobs in this process without limits (a user's own trusted file: ``--no-limits``)."""

    def run(self, spec: JobSpec, progress: ProgressFn | None = None, cancel: CancelFn | None = None) -> JobResult:
        ctx = JobContext(scratch=Path.cwd(), progress=progress or (lambda _p: None), cancelled=cancel or (lambda: False))
        return execute(spec, ctx)

    def prewarm(self) -> None:
        return None

    def shutdown(self) -> None:
        return None
