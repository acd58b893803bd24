"""TorchScript / ``torch.export`` bytes → ONNX bytes: the code that runs *inside* the sandbox.

It imports only the standard library, torch, onnx and :mod:`optim.io.export` (the sandbox binds just
these files), and talks plain bytes: :func:`main` reads ``4-byte length | JSON request | upload bytes``
on stdin and writes ``4-byte length | JSON answer | ONNX bytes`` on a private copy of stdout (its own
stdout goes to stderr, so library prints cannot corrupt the answer). :func:`convert` is the same work
called in-process where an operator allowed converting without a sandbox.
"""

from __future__ import annotations

import io
import json
import os
import re
import struct
import sys
import warnings
from typing import Any

_INT_NAME = re.compile(r"(^|_)(ids?|mask|indices|index|tokens?|positions?)($|_)|mask", re.IGNORECASE)
_WANTS_INT = re.compile(r"Long|Int\b|indices|integer", re.IGNORECASE)
MAX_EXAMPLE_ELEMS = 64 * 2**20  # elements of one synthetic example input (256 MiB of float32)
_MSG = 400


def _short(exc: BaseException) -> str:
    """The last meaningful line of a (TorchScript) error: its interpreter traceback is noise to a user."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip() and "Traceback" not in ln
             and not set(ln.strip()) <= set("~^<-HERE ")]
    text = " ".join((lines[-1] if lines else type(exc).__name__).split())
    return (text[:_MSG] + " [...]") if len(text) > _MSG else text


def _torchscript(data: bytes, input_shapes: dict[str, list[int]]) -> dict[str, Any]:
    import torch

    from optim.io.export import torch_to_onnx

    try:
        module = torch.jit.load(io.BytesIO(data), map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - every failure is "cannot load"
        return {"ok": False, "error": "malformed", "message": f"TorchScript could not load this archive: {_short(exc)}"}
    names = [a.name for a in module.forward.schema.arguments[1:]]
    shapes = dict(input_shapes)
    if len(names) == 1 and len(shapes) == 1 and names[0] not in shapes:
        shapes = {names[0]: next(iter(shapes.values()))}
    missing = [n for n in names if n not in shapes]
    if missing:
        return {"ok": False, "error": "shapes", "names": names[:20], "missing": missing[:20]}
    for n in names:
        elems = 1
        for d in shapes[n]:
            elems *= max(int(d), 0)
        if elems > MAX_EXAMPLE_ELEMS:
            return {"ok": False, "error": "too_large",
                    "message": f"input {n[:60]!r} shape {list(shapes[n])[:8]} has {elems:,} elements, over the "
                               f"{MAX_EXAMPLE_ELEMS:,} limit for an example input"}
    # a TorchScript schema says "Tensor", not its dtype: token ids and masks (by name) get integer examples
    # (ids 0, masks 1), the rest random floats; where that still fails on an integer-only op, all integers
    err: BaseException | None = None
    for integer in ({n for n in names if _INT_NAME.search(n)}, set(names)):
        examples = [(torch.ones if "mask" in n.lower() else torch.zeros)(*shapes[n], dtype=torch.long)
                    if n in integer else torch.randn(*shapes[n]) for n in names]
        try:
            proto = torch_to_onnx(module, examples, input_names=names, output_names=["logits"])
            return {"ok": True, "onnx": proto.SerializeToString()}
        except Exception as exc:  # noqa: BLE001
            err = err or exc
            if not _WANTS_INT.search(str(exc)) or integer == set(names):
                break
    return {"ok": False, "error": "malformed", "message": f"Exporting the TorchScript model to ONNX failed: "
                                                          f"{_short(err or RuntimeError('unknown'))}"}


def _pt2(data: bytes) -> dict[str, Any]:
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"  # every torch.load inside uses the weights-only unpickler
    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.export.load(io.BytesIO(data))
            onnx_program = torch.onnx.export(program, dynamo=True, external_data=False, optimize=True, verbose=False)
    except Exception as exc:  # noqa: BLE001 - torch raises many types; all mean "cannot convert"
        return {"ok": False, "error": "malformed", "message": f"Could not load/convert the torch.export program: "
                                                              f"{_short(exc)}"}
    return {"ok": True, "onnx": onnx_program.model_proto.SerializeToString()}


def convert(kind: str, data: bytes, input_shapes: dict[str, list[int]] | None) -> dict[str, Any]:
    """``{"ok": True, "onnx": bytes}`` or ``{"ok": False, "error": kind, "message": ...}``; never raises."""
    try:
        if kind == "torchscript":
            return _torchscript(data, input_shapes or {})
        if kind == "pt2":
            return _pt2(data)
        return {"ok": False, "error": "malformed", "message": f"unknown kind {kind[:40]!r}"}
    except MemoryError:
        return {"ok": False, "error": "memory", "message": "the conversion ran out of memory"}
    except RecursionError:
        return {"ok": False, "error": "malformed", "message": "the program is nested too deeply"}


def _read_exact(fh: Any, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = fh.read(n - len(buf))
        if not chunk:
            raise EOFError("request cut short")
        buf += chunk
    return buf


def main() -> int:
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    inp = sys.stdin.buffer
    (hlen,) = struct.unpack(">I", _read_exact(inp, 4))
    request = json.loads(_read_exact(inp, hlen))
    data = _read_exact(inp, int(request["size"]))
    answer = convert(str(request["kind"]), data, request.get("input_shapes"))
    payload = answer.pop("onnx", b"")
    head = json.dumps(answer).encode()
    out.write(struct.pack(">I", len(head)) + head + payload)
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
