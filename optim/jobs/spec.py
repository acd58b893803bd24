"""Job specs and results: plain data (a kind, JSON arguments, named byte blobs) and their wire format.

The same :class:`JobSpec` runs in a local worker process (:mod:`optim.jobs.local`) or on a cluster
executor; nothing in it is a Python object that needs pickling. Frames on a pipe are
``8-byte length | 4-byte header length | JSON header | blob bytes...``; the header lists blob names
and sizes.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import optim.errors as errors_mod
from optim.errors import OptimError
from optim.jobs.limits import Limits, default_limits

MAX_FRAME_BYTES = 4 * 2**30


class FrameError(Exception):
    """A frame on the worker pipe is cut short or malformed (the worker died or wrote garbage)."""


@dataclass(frozen=True)
class JobSpec:
    """One unit of work: ``kind`` names a registered task (:mod:`optim.jobs.tasks`)."""

    kind: str
    args: dict[str, Any] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)
    limits: Limits | None = None
    label: str = ""

    def effective_limits(self) -> Limits:
        return self.limits if self.limits is not None else default_limits(self.kind)

    def header(self) -> dict[str, Any]:
        return {"type": "job", "kind": self.kind, "args": self.args, "label": self.label,
                "limits": self.effective_limits().to_dict()}

    @classmethod
    def from_frame(cls, header: dict[str, Any], blobs: dict[str, bytes]) -> JobSpec:
        return cls(kind=str(header["kind"]), args=dict(header.get("args") or {}), blobs=blobs,
                   limits=Limits.from_dict(header.get("limits")), label=str(header.get("label", "")))


@dataclass(frozen=True)
class JobResult:
    """What a job returned: ``value`` (JSON) and ``blobs``, or an error type name + message."""

    ok: bool
    value: Any = None
    blobs: dict[str, bytes] = field(default_factory=dict)
    error_type: str = ""
    error_message: str = ""
    detail: str = ""  # a traceback for --debug; never shown by default

    def header(self) -> dict[str, Any]:
        return {"type": "result", "ok": self.ok, "value": self.value, "error_type": self.error_type,
                "error_message": self.error_message, "detail": self.detail}

    @classmethod
    def from_frame(cls, header: dict[str, Any], blobs: dict[str, bytes]) -> JobResult:
        return cls(ok=bool(header.get("ok")), value=header.get("value"), blobs=blobs,
                   error_type=str(header.get("error_type", "")), error_message=str(header.get("error_message", "")),
                   detail=str(header.get("detail", "")))

    def unwrap(self) -> JobResult:
        """This result, or raise the OptimError (same subclass when known) the job raised."""
        if self.ok:
            return self
        err = error_class(self.error_type)(self.error_message)
        err.detail = self.detail  # type: ignore[attr-defined]
        raise err


def error_class(name: str) -> type[OptimError]:
    """The OptimError subclass called ``name`` (searched through every subclass), else OptimError."""
    pending: list[type[OptimError]] = [OptimError]
    while pending:
        cls = pending.pop()
        if cls.__name__ == name:
            return cls
        pending.extend(cls.__subclasses__())
    candidate = getattr(errors_mod, name, None)
    return candidate if isinstance(candidate, type) and issubclass(candidate, OptimError) else OptimError


def encode_frame(header: dict[str, Any], blobs: dict[str, bytes] | None = None) -> bytes:
    blobs = blobs or {}
    head = dict(header, blobs=[[k, len(v)] for k, v in blobs.items()])
    hb = json.dumps(head, default=_json_default).encode()
    body = struct.pack(">I", len(hb)) + hb + b"".join(bytes(v) for v in blobs.values())
    return struct.pack(">Q", len(body)) + body


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    return str(obj)


def _read_exact(fh: BinaryIO, n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = fh.read(min(left, 1 << 24))
        if not chunk:
            raise FrameError(f"pipe closed with {left} of {n} bytes unread")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_frame(fh: BinaryIO) -> tuple[dict[str, Any], dict[str, bytes]] | None:
    """The next frame, or None at a clean end of stream."""
    first = fh.read(8)
    if not first:
        return None
    if len(first) < 8:
        first += _read_exact(fh, 8 - len(first))
    (size,) = struct.unpack(">Q", first)
    if size > MAX_FRAME_BYTES or size < 4:
        raise FrameError(f"frame of {size} bytes is out of bounds")
    body = _read_exact(fh, size)
    (hlen,) = struct.unpack(">I", body[:4])
    if hlen > size - 4:
        raise FrameError("frame header longer than the frame")
    try:
        header = json.loads(body[4:4 + hlen])
    except ValueError as exc:
        raise FrameError(f"frame header is not JSON ({exc})") from exc
    blobs: dict[str, bytes] = {}
    pos = 4 + hlen
    for name, n in header.pop("blobs", []):
        if pos + int(n) > size:
            raise FrameError("frame blobs overrun the frame")
        blobs[str(name)] = body[pos:pos + int(n)]
        pos += int(n)
    return header, blobs
