"""Uploaded files kept on disk, by content hash, so an upload survives a reload and a shared link.

Layout under ``<data dir>/uploads/<id>/``: ``model.bin``, optional ``data.bin`` (evaluation data) and
``train.bin`` (training data for distillation) and ``entry.json`` (original file names, input-shapes text,
sizes, times). The id hashes the model bytes, the data bytes, the shapes text (and the training bytes when
given), so the same upload is stored once. Bytes are only stored and read back here,
never parsed or executed: loading stays in :mod:`optim.io.load` with all its checks.

A size quota (``OPTIM_UPLOAD_QUOTA_MB``, default 2048) bounds the folder: storing an upload first
drops the least recently used entries until it fits; an upload larger than the whole quota is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from optim.errors import FileTooLargeError, OptimError

DEFAULT_QUOTA_MB = 2048
_ID = re.compile(r"^[0-9a-f]{24}$")


@dataclass(frozen=True)
class UploadEntry:
    """One stored upload (no bytes: read them with :meth:`UploadLibrary.read`)."""

    id: str
    model_name: str
    data_name: str | None
    shapes: str
    size_bytes: int
    created: float
    used: float
    model_hash: str | None = None  # the loaded (ONNX) model's content hash, once it was loaded
    train_name: str | None = None  # a separate training file for distillation


def quota_bytes() -> int:
    raw = os.environ.get("OPTIM_UPLOAD_QUOTA_MB", "")
    try:
        mb = float(raw) if raw else DEFAULT_QUOTA_MB
    except ValueError:
        mb = DEFAULT_QUOTA_MB
    return int(max(mb, 1) * 1e6)


def upload_id(model: bytes, data: bytes | None, shapes: str, train: bytes | None = None) -> str:
    h = hashlib.sha256()
    for part in (model, data or b"", shapes.strip().encode(), *(() if train is None else (b"train", train))):
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()[:24]


def _safe_name(name: str | None) -> str | None:
    if name is None:
        return None
    base = Path(str(name).replace("\\", "/")).name[:200]
    return "".join(ch if ch.isprintable() else "_" for ch in base) or "upload"


def _opt_str(v: object) -> str | None:
    return None if v is None else str(v)


class UploadLibrary:
    """The uploads folder of one data directory."""

    def __init__(self, root: Path | str, quota: int | None = None) -> None:
        self.root = Path(root)
        self.quota = quota if quota is not None else quota_bytes()

    def _dir(self, entry_id: str) -> Path:
        if not _ID.match(entry_id or ""):
            raise OptimError(f"'{entry_id}' is not an upload id: load the model again on Home.")
        return self.root / entry_id

    def put(self, model: bytes, model_name: str, data: bytes | None = None, data_name: str | None = None,
            shapes: str = "", train: bytes | None = None, train_name: str | None = None) -> UploadEntry:
        """Store an upload (or touch the identical one already stored) and return its entry."""
        size = len(model) + len(data or b"") + len(train or b"")
        if size > self.quota:
            raise FileTooLargeError(
                f"This upload is {size / 1e6:.0f} MB, more than the {self.quota / 1e6:.0f} MB kept for uploads: "
                "upload a smaller model, or raise OPTIM_UPLOAD_QUOTA_MB.")
        eid = upload_id(model, data, shapes, train)
        old = self.get(eid)
        if old is not None:
            return old
        self._make_room(size)
        final = self.root / eid
        tmp = self.root / f".{eid}.{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        (tmp / "model.bin").write_bytes(model)
        if data is not None:
            (tmp / "data.bin").write_bytes(data)
        if train is not None:
            (tmp / "train.bin").write_bytes(train)
        now = time.time()
        entry = UploadEntry(eid, _safe_name(model_name) or "model", _safe_name(data_name), shapes.strip()[:2000],
                            size, now, now, train_name=_safe_name(train_name or "train") if train is not None else None)
        (tmp / "entry.json").write_text(json.dumps(entry.__dict__))
        try:
            tmp.rename(final)
        except OSError:  # stored concurrently by another session: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
        return self.get(eid) or entry

    def get(self, entry_id: str) -> UploadEntry | None:
        """The entry (its last-used time refreshed), or None when it is not stored."""
        d = self._dir(entry_id)
        meta = d / "entry.json"
        try:
            raw = json.loads(meta.read_text())
            entry = UploadEntry(id=entry_id, model_name=str(raw["model_name"]),
                                data_name=_opt_str(raw.get("data_name")),
                                shapes=str(raw.get("shapes", "")), size_bytes=int(raw["size_bytes"]),
                                created=float(raw["created"]), used=time.time(),
                                model_hash=_opt_str(raw.get("model_hash")),
                                train_name=_opt_str(raw.get("train_name")))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        try:
            os.utime(meta)
        except OSError:
            pass
        return entry

    def read(self, entry_id: str) -> tuple[UploadEntry, bytes, bytes | None]:
        """(entry, model bytes, data bytes or None); an OptimError when the upload was forgotten."""
        entry = self.get(entry_id)
        d = self._dir(entry_id)
        if entry is None or not (d / "model.bin").exists():
            raise OptimError("This upload is no longer stored (forgotten, or dropped to stay within the upload "
                             "quota): upload the model again on Home.")
        data = (d / "data.bin").read_bytes() if (d / "data.bin").exists() else None
        return entry, (d / "model.bin").read_bytes(), data

    def read_train(self, entry_id: str) -> bytes | None:
        """The upload's separate training data (bytes), or None when it has none."""
        path = self._dir(entry_id) / "train.bin"
        return path.read_bytes() if path.exists() else None

    def entries(self) -> list[UploadEntry]:
        """Stored uploads, most recently used first."""
        if not self.root.exists():
            return []
        out = []
        for d in self.root.iterdir():
            if d.is_dir() and _ID.match(d.name):
                meta = d / "entry.json"
                try:
                    raw = json.loads(meta.read_text())
                    out.append(UploadEntry(d.name, str(raw["model_name"]), _opt_str(raw.get("data_name")),
                                           str(raw.get("shapes", "")), int(raw["size_bytes"]),
                                           float(raw["created"]), meta.stat().st_mtime,
                                           _opt_str(raw.get("model_hash")), _opt_str(raw.get("train_name"))))
                except (OSError, ValueError, KeyError, TypeError):
                    continue
        return sorted(out, key=lambda e: -e.used)

    def remember_hash(self, entry_id: str, model_hash: str) -> None:
        """Record the loaded model's content hash (links a stored sweep back to this upload)."""
        meta = self._dir(entry_id) / "entry.json"
        try:
            raw = json.loads(meta.read_text())
            if raw.get("model_hash") != model_hash:
                raw["model_hash"] = str(model_hash)
                meta.write_text(json.dumps(raw))
        except (OSError, ValueError):
            pass

    def forget(self, entry_id: str) -> bool:
        d = self._dir(entry_id)
        if not d.exists():
            return False
        shutil.rmtree(d, ignore_errors=True)
        return True

    def usage(self) -> int:
        return sum(e.size_bytes for e in self.entries())

    def _make_room(self, size: int) -> None:
        entries = self.entries()
        used = sum(e.size_bytes for e in entries)
        for e in reversed(entries):  # least recently used first
            if used + size <= self.quota:
                break
            self.forget(e.id)
            used -= e.size_bytes
