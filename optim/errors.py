"""Typed user-facing errors.

Every error a user can cause (bad file, wrong shape, unsupported model) raises a subclass of
:class:`OptimError` whose message says what happened *and what to do instead*. The UI shows
``str(err)`` verbatim in ``st.error``; the CLI prints it and exits with status 2. Anything that is
not an ``OptimError`` is a bug in this project.
"""

from __future__ import annotations


class OptimError(Exception):
    """Base class: a problem with the user's input, explained in the message."""


# --- model loading -------------------------------------------------------------------------------
class UnknownFormatError(OptimError):
    """The bytes are not a format we load (ONNX, zip of ONNX + data, TorchScript, .pt2)."""


class PickleRefusedError(OptimError):
    """A pickled nn.Module / state dict: never unpickled, user told how to export to ONNX."""


class FileTooLargeError(OptimError):
    """The upload exceeds the configured size limit."""


class TooManyParametersError(OptimError):
    """The graph declares more parameters than the configured limit."""


class MalformedModelError(OptimError):
    """A file that claims to be a model but cannot be parsed or checked."""


class UnsafeArchiveError(OptimError):
    """A zip member whose path escapes the archive (absolute or ``..``)."""


class DynamicShapeError(OptimError):
    """An input has dynamic dimensions (other than batch) the user must fix."""


class MissingInputError(OptimError):
    """The model needs inputs we cannot synthesise or that the data does not provide."""


# --- data ----------------------------------------------------------------------------------------
class DataFormatError(OptimError):
    """An evaluation-data file that cannot be read."""


class ShapeMismatchError(OptimError):
    """Data shape or dtype does not fit the model input; the message names both."""


# --- passes / sweep ------------------------------------------------------------------------------
class ConfigError(OptimError):
    """A pass or sweep configuration value is invalid; the message names the field."""


class PassUnavailableError(OptimError):
    """A pass cannot be applied to this model (e.g. unsupported ops, listed in the message)."""


class CancelledError(OptimError):
    """The user cancelled a long-running job."""


class HardwareError(OptimError):
    """A hardware-catalog or estimator problem (unknown device, invalid catalog entry)."""


# --- jobs (worker processes) ---------------------------------------------------------------------
class JobLimitError(OptimError):
    """A job was stopped: it ran past a limit (memory, CPU time, wall time) or its worker crashed."""


class JobTimeoutError(JobLimitError):
    """A job ran past its wall-time or CPU-time limit and was killed."""


class JobMemoryError(JobLimitError):
    """A job needed more memory than its address-space limit."""


class JobCrashedError(JobLimitError):
    """A job's worker process died (signal or unexpected exit)."""


class SandboxUnavailableError(OptimError):
    """TorchScript/.pt2 need the bubblewrap sandbox, which this host does not have (or it cannot start)."""


def runtime_reason(exc: BaseException, limit: int = 300) -> str:
    """ONNX Runtime's (or any library's) exception text as one short line for a user-facing message:
    the last line, without the ``[ONNXRuntimeError] : N : KIND :`` prefix and source paths."""
    import re

    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()] or [type(exc).__name__]
    text = re.sub(r"\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*\w+\s*:\s*", "", lines[-1])
    text = re.sub(r"/onnxruntime_src/\S+ [^)]*\)\s*", "", text)
    text = re.sub(r"\S*onnxruntime_pybind11_state\.", "", text).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def environment_message(exc: BaseException) -> str | None:
    """Words for a failure of the machine rather than the input: a full disk, a read-only or forbidden
    folder, a damaged results store. None for anything else."""
    import errno
    import sqlite3

    if isinstance(exc, sqlite3.DatabaseError):
        return (f"The results store is damaged or not a database ({runtime_reason(exc, 200)}). Move its folder "
                "away (or set OPTIM_DATA_DIR / --store to a new one) and run again.")
    if isinstance(exc, OSError):
        where = f" ({str(exc.filename)[:200]})" if getattr(exc, "filename", None) else ""
        if exc.errno == errno.ENOSPC:
            return (f"The disk is full{where}. Free some space or point OPTIM_DATA_DIR / --store at a disk with "
                    "room; finished variants are kept and an identical re-run resumes.")
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return f"No permission to write{where}. Choose a writable --store / OPTIM_DATA_DIR."
        return f"{exc.strerror or type(exc).__name__}{where}."
    return None
