"""Run the torch converter (:mod:`optim.io.torch_convert`) under bubblewrap: upload bytes in, ONNX bytes out.

What the sandbox sees (nothing else of the host): the Python installation and its packages
read-only (``sys.base_prefix``, ``sys.prefix``, their site-packages), the system libraries they link
(``/usr/lib``, ``/usr/lib64``), the four project files the converter imports, a minimal ``/proc`` and
``/dev``, and an empty size-bounded tmpfs as its working directory. No network, no IPC, its own PID
namespace, a cleared environment, no ``/tmp``, no home, no store, no repository, no upload folder. A
read-only bind of ``/`` would still let a model read any file, hence the explicit list. The converter
also runs under the job's memory, CPU and wall-time limits and is killed with its process group.

``OPTIM_SANDBOX=off`` makes the sandbox unavailable (to test the refusal path);
``OPTIM_ALLOW_UNSANDBOXED_TORCH=1`` lets an operator convert without one (in the limited worker).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import optim
from optim.errors import MalformedModelError, SandboxUnavailableError
from optim.jobs.limits import Limits, apply_rlimits, default_limits

SCRATCH_BYTES = 512 * 2**20
MAX_ANSWER_BYTES = 2 * 2**30
_CONVERTER_FILES = ("__init__.py", "io/__init__.py", "io/export.py", "io/torch_convert.py")
_PKG = "/sandbox/pkg"
_BOOT = (f"import sys; sys.path.insert(0, {_PKG!r}); "
         "from optim.io.torch_convert import main; sys.exit(main())")
INSTALL_HINT = "Install bubblewrap (Debian/Ubuntu: `apt-get install bubblewrap`)."


def bwrap_path() -> str | None:
    if os.environ.get("OPTIM_SANDBOX", "on").strip().lower() in ("off", "0", "no", "false"):
        return None
    return shutil.which("bwrap") or ("/usr/bin/bwrap" if os.access("/usr/bin/bwrap", os.X_OK) else None)


def unsandboxed_allowed() -> bool:
    return os.environ.get("OPTIM_ALLOW_UNSANDBOXED_TORCH", "").strip().lower() in ("1", "yes", "true", "on")


def python_roots() -> list[Path]:
    """Directories holding the interpreter, its standard library and installed packages (deduplicated)."""
    cands = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
             *(sysconfig.get_paths().get(k, "") for k in ("stdlib", "platstdlib", "purelib", "platlib"))}
    cands.add(str(Path(sys.executable).resolve().parent.parent))
    roots: list[Path] = []
    for c in sorted({str(Path(c).resolve()) for c in cands if c}, key=len):
        p = Path(c)
        if p.is_dir() and str(p) != "/" and not any(p.is_relative_to(r) for r in roots):
            roots.append(p)
    return roots


def bwrap_argv(bwrap: str, scratch_bytes: int = SCRATCH_BYTES) -> list[str]:
    """The bubblewrap command line that runs the converter (tested: see tests/io/test_sandbox.py)."""
    argv = [bwrap, "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
            "--hostname", "sandbox", "--clearenv"]
    for lib in ("/usr/lib", "/usr/lib64"):
        if Path(lib).is_dir():
            argv += ["--ro-bind", lib, lib]
    for link, target in (("/lib", "usr/lib"), ("/lib64", "usr/lib64"), ("/bin", "usr/bin")):
        if Path(link).is_symlink():
            argv += ["--symlink", target, link]
        elif Path(link).is_dir() and link != "/bin":
            argv += ["--ro-bind", link, link]
    for root in python_roots():
        argv += ["--ro-bind", str(root), str(root)]
    exe = Path(sys.executable)
    if not any(exe.parent.resolve().is_relative_to(r) for r in python_roots()):
        raise SandboxUnavailableError(f"The Python interpreter {exe} is outside its installation; cannot sandbox.")
    here = Path(optim.__file__).resolve().parent
    for rel in _CONVERTER_FILES:
        argv += ["--ro-bind", str(here / rel), f"{_PKG}/optim/{rel}"]
    argv += ["--proc", "/proc", "--dev", "/dev", "--size", str(scratch_bytes), "--tmpfs", "/scratch",
             "--chdir", "/scratch", "--setenv", "HOME", "/scratch", "--setenv", "TMPDIR", "/scratch",
             "--setenv", "PATH", "/usr/bin", "--setenv", "OMP_NUM_THREADS", "1",
             "--setenv", "PYTHONDONTWRITEBYTECODE", "1", "--setenv", "TORCH_FORCE_WEIGHTS_ONLY_LOAD", "1",
             "--", str(exe), "-I", "-c", _BOOT]
    return argv


@functools.lru_cache(maxsize=1)
def _probe(bwrap: str) -> str:
    """'' when a trivial sandboxed Python runs here, else why not."""
    argv = bwrap_argv(bwrap)
    # A file the host can see in its temp folder must be invisible inside (the Python installation may
    # itself live under /tmp, e.g. a CI clone's .venv, so '/tmp' can exist there holding only that bind).
    with tempfile.NamedTemporaryFile(prefix="optim-sandbox-probe-") as seen_outside:
        argv[-1] = f"import os, sys; sys.exit(3 if os.path.exists({seen_outside.name!r}) else 0)"
        try:
            proc = subprocess.run(argv, capture_output=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return str(exc)
    return "" if proc.returncode == 0 else (proc.stderr.decode(errors="replace").strip()[-300:] or
                                            f"exit status {proc.returncode}")


def sandbox_problem() -> str:
    """'' when sandboxed conversion works on this host, else a sentence saying why not."""
    bwrap = bwrap_path()
    if bwrap is None:
        return "bubblewrap (bwrap) is not installed or is switched off (OPTIM_SANDBOX=off)"
    why = _probe(bwrap)
    return f"bubblewrap cannot start a sandbox here ({why})" if why else ""


def sandbox_available() -> bool:
    return not sandbox_problem()


def run_sandboxed(kind: str, data: bytes, input_shapes: dict[str, list[int]] | None,
                  limits: Limits | None = None) -> dict[str, object]:
    """The converter's answer (see :func:`optim.io.torch_convert.convert`), run inside bubblewrap."""
    bwrap = bwrap_path()
    problem = sandbox_problem()
    if bwrap is None or problem:
        raise SandboxUnavailableError(f"TorchScript and .pt2 files are converted in a sandbox, but {problem}. "
                                      f"{INSTALL_HINT}")
    limits = limits or default_limits("convert_torch")
    request = json.dumps({"kind": kind, "size": len(data), "input_shapes": input_shapes or {}}).encode()
    proc = subprocess.Popen(bwrap_argv(bwrap), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True,
                            preexec_fn=lambda: apply_rlimits(limits))  # noqa: PLW1509 - only setrlimit
    start = time.monotonic()
    try:
        out, err = proc.communicate(struct.pack(">I", len(request)) + request + data, timeout=limits.wall_s)
    except subprocess.TimeoutExpired:
        _kill(proc)
        raise MalformedModelError(f"Converting the {kind} file ran past its {limits.wall_s:.0f} s limit and was "
                                  "stopped (it may loop forever). Export the model to ONNX yourself and upload "
                                  "the .onnx.") from None
    return _answer(kind, proc.returncode, out, err, time.monotonic() - start)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.communicate()


def _answer(kind: str, code: int, out: bytes, err: bytes, elapsed: float) -> dict[str, object]:
    if len(out) >= 4:
        (hlen,) = struct.unpack(">I", out[:4])
        if 4 + hlen <= len(out) <= MAX_ANSWER_BYTES:
            try:
                answer = json.loads(out[4:4 + hlen])
            except ValueError:
                answer = None
            if isinstance(answer, dict):
                if answer.get("ok"):
                    answer["onnx"] = out[4 + hlen:]
                return answer
    tail = " ".join(err.decode(errors="replace").split())[-300:]
    if code == -signal.SIGXCPU:
        why = "it used up its CPU-time limit"
    elif code in (-signal.SIGKILL, -signal.SIGABRT) or "bad_alloc" in tail or "MemoryError" in tail:
        why = "it ran out of memory or was killed"
    else:
        why = f"it stopped with status {code} after {elapsed:.0f} s ({tail or 'no output'})"
    return {"ok": False, "error": "malformed", "message": f"The sandboxed {kind} converter failed: {why}"}
