"""Task registry and the in-process runner.

:func:`execute` runs one :class:`~optim.jobs.spec.JobSpec` in the current process (a local worker,
the inline executor, or a cluster worker): it looks the task up by kind, turns every failure into an
error result (``OptimError`` subclasses by name, ``MemoryError`` as the memory limit, anything else
as an unexpected error with its traceback kept for ``--debug``). Tasks register themselves with
:func:`task`; :data:`TASK_MODULES` lists the modules that hold them (imported by name, so this layer
does not depend on the engine).
"""

from __future__ import annotations

import importlib
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optim.errors import OptimError, environment_message, runtime_reason
from optim.jobs.spec import JobResult, JobSpec

TaskFn = Callable[[JobSpec, "JobContext"], Any]
TASKS: dict[str, TaskFn] = {}
TASK_MODULES = ("optim.jobs.tasks",)
MAX_MESSAGE_CHARS = 700  # a message never echoes more than a few hundred characters of input


def task(kind: str) -> Callable[[TaskFn], TaskFn]:
    """Register ``fn(spec, ctx) -> value | (value, blobs)`` as the task for jobs of ``kind``."""
    def deco(fn: TaskFn) -> TaskFn:
        TASKS[kind] = fn
        return fn
    return deco


@dataclass
class JobContext:
    """What a running task may use: report progress (plain dict), ask whether it was cancelled, scratch."""

    scratch: Path = field(default_factory=Path.cwd)
    progress: Callable[[dict[str, Any]], None] = lambda _p: None
    cancelled: Callable[[], bool] = lambda: False


def load_tasks() -> None:
    for mod in TASK_MODULES:
        importlib.import_module(mod)


def _short(text: str) -> str:
    if len(text) <= MAX_MESSAGE_CHARS:
        return text
    return text[:MAX_MESSAGE_CHARS // 2] + " [...] " + text[-MAX_MESSAGE_CHARS // 2:]  # the advice is at the end


def execute(spec: JobSpec, ctx: JobContext | None = None) -> JobResult:
    """Run ``spec`` here and return its result; never raises for a task's failure."""
    ctx = ctx or JobContext()
    load_tasks()
    fn = TASKS.get(spec.kind)
    if fn is None:
        return JobResult(ok=False, error_type="ConfigError", error_message=f"Unknown job kind {spec.kind!r}.")
    try:
        out = fn(spec, ctx)
    except OptimError as err:
        return JobResult(ok=False, error_type=type(err).__name__, error_message=_short(str(err)),
                         detail=traceback.format_exc())
    except MemoryError:
        limit = spec.effective_limits().address_space_bytes
        where = f"its {limit / 2**30:.1f} GiB memory limit" if limit else "the memory this machine has"
        return JobResult(ok=False, error_type="JobMemoryError",
                         error_message=f"The job ({spec.label or spec.kind}) needed more than {where} and was "
                                       "stopped. Use a smaller model or less data; for your own trusted file, "
                                       "raise OPTIM_JOB_MEMORY_FRACTION or run the CLI with --no-limits.",
                         detail=traceback.format_exc())
    except RecursionError:
        return JobResult(ok=False, error_type="MalformedModelError",
                         error_message="The input is nested too deeply to process (recursion limit). Flatten "
                                       "it or re-export the model.", detail=traceback.format_exc())
    except Exception as err:  # noqa: BLE001 - a bug of ours: short message, traceback kept for --debug
        words = environment_message(err)
        if words is not None:  # full disk, damaged store: the machine, not the input
            return JobResult(ok=False, error_type="OptimError", error_message=words, detail=traceback.format_exc())
        if type(err).__module__.startswith("onnxruntime"):  # the model itself failed to run (allocation, shapes)
            return JobResult(ok=False, error_type="MalformedModelError",
                             error_message=_short(f"ONNX Runtime could not run this model ({spec.label or spec.kind}): "
                                                  f"{runtime_reason(err)}. It may need more memory than its limit, "
                                                  "loop without end, or use operators this runtime lacks; check "
                                                  "the model in your own environment."),
                             detail=traceback.format_exc())
        return JobResult(ok=False, error_type="OptimError",
                         error_message=_short(f"Unexpected error in the {spec.kind} job: {type(err).__name__}: "
                                              f"{err}. This is a bug; please report it (run with --debug for "
                                              "details)."), detail=traceback.format_exc())
    value, blobs = out if isinstance(out, tuple) else (out, {})
    return JobResult(ok=True, value=value, blobs=dict(blobs or {}))


