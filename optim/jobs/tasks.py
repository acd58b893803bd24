"""The tasks a worker runs, by kind: plain data in (JSON args, byte blobs), plain data out.

* ``load_model``: upload bytes → checked ONNX bytes + handle facts (TorchScript/.pt2 are converted in
  the sandbox, :mod:`optim.io.sandbox`).
* ``probe``: a self-test of the limits (sleep, spin, allocate, crash) for tests and operators.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from optim.jobs.registry import JobContext, task
from optim.jobs.spec import JobSpec


@task("probe")
def probe(spec: JobSpec, ctx: JobContext) -> Any:
    """``mode``: echo | sleep | spin | alloc | crash | cwd | progress (what the limits tests need)."""
    mode = spec.args.get("mode", "echo")
    if mode == "sleep":
        time.sleep(float(spec.args.get("seconds", 3600)))
    elif mode == "spin":
        end = time.monotonic() + float(spec.args.get("seconds", 3600))
        while time.monotonic() < end:
            pass
    elif mode == "alloc":
        blocks = [bytearray(int(spec.args.get("bytes", 2**40)))]
        return {"allocated": len(blocks[0])}
    elif mode == "crash":
        os.kill(os.getpid(), signal.SIGSEGV)
    elif mode == "cwd":
        (ctx.scratch / "left-behind.txt").write_text("x")
        return {"cwd": os.getcwd(), "pid": os.getpid(), "listing": sorted(os.listdir("."))}
    elif mode == "progress":
        for i in range(int(spec.args.get("steps", 3))):
            ctx.progress({"done": i + 1})
            if ctx.cancelled():
                return {"cancelled_at": i + 1}
            time.sleep(float(spec.args.get("step_s", 0.05)))
        return {"cancelled_at": None}
    return {"args": spec.args, "pid": os.getpid()}, {k: v[::-1] for k, v in spec.blobs.items()}
