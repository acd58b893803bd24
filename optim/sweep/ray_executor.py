"""Run a sweep on Ray: each variant (build → evaluate → time → per-layer profile) is a Ray task.

:class:`RayExecutor` plugs into :func:`optim.sweep.run.run_sweep` through ``run_variants(work, todo, cancel)``:

- **Shared intermediates once.** A pruned model (and its distilled copy, and with several optimisation levels
  each quantised model) is one Ray task whose result stays in the object store; every variant built on it
  gets the object ref, so the pruned model is built once however many bit-widths use it. A failed
  intermediate fails each of its variants with the same message, as on one machine.
- **The driver writes the store.** Tasks return plain rows, the per-layer table and the model bytes; only the
  process that called ``run_sweep`` touches the SQLite file, so a killed driver resumes from the store as before
  (finished variants are skipped, the rest are submitted again).
- **Failures.** A worker process that dies (crash, out of memory, node lost) makes Ray run its task once more
  (``max_retries=1``); a second death stores the variant as failed with the reason. Errors inside a pass are
  data, never retried. A worker whose ``optim`` code differs from the driver's (engine fingerprint) fails its
  variants with a message, since its numbers would be filed under the wrong sweep identity.
- **Cancel** cancels every Ray task of the sweep still queued or running; finished variants stay stored.
- **Latency where it ran.** Each row carries its node (``optim.sweep.node``). With ``quiet="node"`` (default)
  a variant's timing holds an exclusive lock on its node (files under the temp dir, released by the OS if the
  worker dies) while builds and evaluations hold a shared one, the same rule as the local executor's
  ``quiet()``; ``quiet="none"`` lets timings overlap other tasks (each task still reserves
  ``latency_threads`` CPUs).

Ray is an optional dependency (``pip install '.[cluster]'``); it is imported when an executor starts.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from typing import Any, TypeVar

import pandas as pd

from optim.errors import ConfigError, OptimError
from optim.sweep import executors as sweep_exec
from optim.sweep.executors import Variant, engine_fingerprint
from optim.sweep.ray_tasks import Built, RemoteWork, build_stage, call, run_variant
from optim.sweep.run import SweepWork, variant_row

T = TypeVar("T")
R = TypeVar("R")
ENV_ADDRESS = "OPTIM_RAY_ADDRESS"  # "host:6379" or "ray://host:10001": where a hosted dashboard runs sweeps


def default_run_on() -> str:
    """Where sweeps run unless a caller says: ``$OPTIM_RAY_ADDRESS`` (a hosted dashboard's cluster) or "local"."""
    return os.environ.get(ENV_ADDRESS, "").strip() or "local"


_SHARED: dict[str, RayExecutor] = {}
_INIT_LOCK = threading.Lock()


def executor_for(run_on: str | None = None) -> Any:
    """The executor for a "Run on" setting: "local" (this machine), "ray-local" (a local Ray instance) or a
    Ray address ("host:6379", "ray://host:10001"); empty or None: :func:`default_run_on`. A Ray executor is
    shared by every sweep of this process (one Ray connection per process; it lives as long as the process)."""
    target = (run_on or "").strip() or default_run_on()
    if target == "local":
        return sweep_exec.LocalExecutor()
    if target not in _SHARED:
        _SHARED[target] = RayExecutor(None if target == "ray-local" else target)
    return _SHARED[target]


def run_on_label(run_on: str | None = None) -> str:
    target = (run_on or "").strip() or default_run_on()
    return {"local": "this machine", "ray-local": "a local Ray instance"}.get(target, f"Ray cluster at {target}")


def cancel_unfinished(ray: Any, refs: Sequence[Any], recursive: bool = False) -> None:
    """Cancel the tasks behind ``refs`` that have not finished; finished ones are left alone.

    Ray 2.60 aborts the driver process when a task is cancelled while its reply is being processed ("Check
    failed: it != submissible_tasks_.end() Tried to complete task that was not pending", a known race in
    Ray's task submitter): cancelling a task whose result was already fetched hits that window and killed
    whole test runs. So only refs ``ray.wait`` does not report ready are cancelled.
    """
    refs = list(refs)
    if not refs:
        return
    _, unfinished = ray.wait(refs, num_returns=len(refs), timeout=0, fetch_local=False)
    for ref in unfinished:
        ray.cancel(ref, recursive=recursive)


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError("The Ray executor needs Ray: pip install 'compression-explorer[cluster]' "
                          "(or pip install 'ray==2.60.0'), or run on this machine.") from None  # fmt: skip
    return ray


# --- on the driver ---------------------------------------------------------------------------------
class RayExecutor:
    """Variants as Ray tasks on the cluster at ``address`` (``None``: a private local Ray instance with
    ``workers`` CPUs and a small object store, stopped again by :meth:`close`).

    An already connected Ray (``ray.init`` called by the program) is used as it is and left running.
    ``runtime_env`` goes to ``ray.init`` (e.g. ``{"working_dir": ...}`` or a ``worker_process_setup_hook``).
    """

    def __init__(self, address: str | None = None, workers: int = 2, object_store_mb: int = 400,
                 quiet: str = "node", runtime_env: dict[str, Any] | None = None, poll_s: float = 0.2) -> None:  # fmt: skip
        if workers < 1 or object_store_mb < 80:
            raise ConfigError(f"workers must be ≥ 1 and object_store_mb ≥ 80, got {workers} and {object_store_mb}.")
        if quiet not in ("node", "none"):
            raise ConfigError(f"quiet must be 'node' (timing alone on its node) or 'none', got {quiet!r}.")
        self.address, self.workers, self.object_store_mb = address or None, workers, object_store_mb
        self.quiet_mode, self.runtime_env, self.poll_s = quiet, runtime_env, poll_s
        self._owned = False
        self.stats: list[dict[str, Any]] = []  # last sweep, per variant: node, task_s, wait_s, quiet_s (benchmarks)

    # --- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> Any:
        """Connect (or start the local instance) once; returns the ``ray`` module."""
        ray = import_ray()
        with _INIT_LOCK:  # dashboard sweeps start from several threads
            if not ray.is_initialized():
                self._init(ray)
        return ray

    def _init(self, ray: Any) -> None:
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR"}
        if self.runtime_env:
            kwargs["runtime_env"] = self.runtime_env
        try:
            if self.address:
                ray.init(address=self.address, **kwargs)
            else:
                ray.init(address="local", num_cpus=self.workers, object_store_memory=self.object_store_mb * 2**20,
                         **kwargs)  # fmt: skip
        except (ConnectionError, RuntimeError, ValueError) as err:
            where = f"the Ray cluster at {self.address!r}" if self.address else "a local Ray instance"
            raise ConfigError(f"Could not start or reach {where}: {str(err)[:300]}. Check the address "
                              "(`ray start --head` prints it) or run on this machine.") from None  # fmt: skip
        self._owned = True

    def close(self) -> None:
        """Stop the Ray instance this executor started (a connection it did not make stays)."""
        if self._owned:
            import_ray().shutdown()
            self._owned = False

    def __enter__(self) -> RayExecutor:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> str:
        return f"Ray cluster at {self.address}" if self.address else f"local Ray instance ({self.workers} workers)"

    # --- the Executor interface: any picklable build function as Ray tasks ----------------------------
    def map_builds(self, build: Callable[[T], R], items: Sequence[T]) -> Iterator[tuple[T, R | BaseException]]:
        ray = self.start()
        task = ray.remote(max_retries=1)(call)
        fn = ray.put(build)
        refs = [task.remote(fn, item) for item in items]
        fetched = 0
        try:
            for item, ref in zip(items, refs, strict=True):
                try:
                    result: R | BaseException = ray.get(ref)
                except ray.exceptions.RayTaskError as err:
                    result = err.as_instanceof_cause()
                except ray.exceptions.RayError as err:
                    result = OptimError(_death_reason(err))
                fetched += 1
                yield item, result
        finally:  # the consumer stopped early: the builds it will not read stop too
            cancel_unfinished(ray, refs[fetched:])

    def quiet(self) -> Any:
        return nullcontext()  # nothing is timed on the driver

    # --- whole variants ----------------------------------------------------------------------------
    def run_variants(self, work: SweepWork, todo: Sequence[Variant], cancel: Callable[[], bool]
                     ) -> Iterator[tuple[Variant, tuple[dict[str, Any], pd.DataFrame | None, bytes | None]]]:  # fmt: skip
        """Submit every variant of ``todo`` and yield each result as it arrives (completion order)."""
        ray = self.start()
        self.stats = []  # this sweep's
        fingerprint = engine_fingerprint()
        rw = ray.put(RemoteWork(work, dict(sweep_exec.PASS_NAMES), fingerprint, self.quiet_mode))
        cpus = max(1, work.config.latency_threads)
        stage_task = ray.remote(num_cpus=1, max_retries=1)(build_stage)
        variant_task = ray.remote(num_cpus=cpus, max_retries=1)(run_variant)
        stages: dict[tuple[Any, ...], Any] = {(): ray.put(Built(work.handle))}
        charged: set[tuple[Any, ...]] = set()

        def first_use(key: tuple[Any, ...]) -> bool:
            new = key not in charged
            charged.add(key)
            return new

        def stage(parent: tuple[Any, ...], step: tuple[Any, ...]) -> tuple[Any, ...]:
            key = (*parent, step)
            if key not in stages:
                stages[key] = stage_task.remote(rw, stages[parent], step, first_use(parent))
            return key

        several_levels = len(work.config.opt_levels) > 1
        pending: dict[Any, Variant] = {}
        for v in todo:
            key: tuple[Any, ...] = ()
            if v.ratio > 0:
                key = stage(key, ("prune", v.prune_kind, v.ratio))
                if v.distilled:
                    key = stage(key, ("distill",))
            quant_here = not (several_levels and v.bits != 32)  # else the quantised model is shared by levels
            if not quant_here:
                key = stage(key, ("quant", v.bits))
            pending[variant_task.remote(rw, stages[key], v, quant_here, first_use(key))] = v
        try:
            while pending and not cancel():
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=self.poll_s)
                for ref in ready:
                    v = pending.pop(ref)
                    yield v, self._result(ray, ref, v, work, fingerprint)
        finally:  # cancelled or the consumer stopped: nothing of this sweep keeps running
            cancel_unfinished(ray, [*pending, *stages.values()], recursive=True)

    def _result(self, ray: Any, ref: Any, v: Variant, work: SweepWork,
                fingerprint: str) -> tuple[dict[str, Any], pd.DataFrame | None, bytes | None]:  # fmt: skip
        try:
            out = ray.get(ref)
        except ray.exceptions.RayError as err:
            return self._failed(v, work, _death_reason(err))
        if out["fingerprint"] != fingerprint:
            host = out["row"].get("node", "?")
            return self._failed(v, work, f"worker node {host} runs other optim code than this driver (engine "
                                f"fingerprint {out['fingerprint'][:12]} ≠ {fingerprint[:12]}): install the same "
                                "version of the package on every node.")  # fmt: skip
        self.stats.append({"key": v.key, "node": out["row"].get("node"), "build_s": out["row"].get("build_s"),
                           **out.get("timing", {})})  # fmt: skip
        layers = out["layers"]
        frame = None if layers is None else pd.DataFrame(layers["data"], columns=layers["columns"])
        return out["row"], frame, out["model_bytes"]

    @staticmethod
    def _failed(v: Variant, work: SweepWork, reason: str) -> tuple[dict[str, Any], None, None]:
        row, _, _ = variant_row(v, OptimError(reason), work.eval_set, work.ref, work.config, None)
        row.update(error=f"worker: {reason}", node=None, node_hw=None, node_json=None)  # not measured anywhere
        return row, None, None


def _death_reason(err: BaseException) -> str:
    """A failed task's reason in a line: the worker died twice (retried once), or what Ray said."""
    first = (str(err).strip().splitlines() or [""])[0][:300]
    name = type(err).__name__
    if name in ("WorkerCrashedError", "OutOfMemoryError", "NodeDiedError", "LocalRayletDiedError",
                "ObjectLostError", "OwnerDiedError", "ObjectReconstructionFailedError"):  # fmt: skip
        return (f"the Ray worker running it died on the first try and on the retry ({name}: {first}); "
                "see the worker logs on its node (/tmp/ray/session_latest/logs).")
    if name == "TaskCancelledError":
        return "cancelled."
    return f"{name}: {first}"
