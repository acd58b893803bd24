"""Models by reference (the dashboard's state): ``sample:<name>`` or ``upload:<id>`` (a stored upload), so a page, a reload and a
shared link all name the same model with one plain string."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from optim.api.models import Loaded, attach_data, attach_training, list_samples, load_sample, load_upload
from optim.api.store import data_dir, open_store
from optim.errors import OptimError
from optim.io.uploads import UploadEntry, UploadLibrary

__all__ = ["ModelRef", "UploadEntry", "forget_upload", "model_ref_for_sweep", "open_model", "save_upload",
           "saved_uploads", "upload_library"]


@dataclass(frozen=True)
class ModelRef:
    kind: str  # "sample" | "upload"
    key: str

    @classmethod
    def parse(cls, ref: str) -> ModelRef:
        kind, _, key = str(ref).partition(":")
        if kind not in ("sample", "upload") or not key:
            raise OptimError(f"'{ref}' does not name a model: choose a sample or upload one on Home.")
        return cls(kind, key)

    def __str__(self) -> str:
        return f"{self.kind}:{self.key}"


def upload_library(path: str | None = None) -> UploadLibrary:
    return UploadLibrary(Path(path or data_dir()) / "uploads")


def save_upload(model: bytes, model_name: str, data: bytes | None = None, data_name: str | None = None,
                shapes: str = "", train: bytes | None = None, train_name: str | None = None) -> str:
    """Store an upload by content hash (within the quota); returns its model reference ``upload:<id>``.
    ``train``: a separate training file for distillation (the evaluation data then stays whole)."""
    entry = upload_library().put(model, model_name, data, data_name, shapes, train, train_name)
    return str(ModelRef("upload", entry.id))


def saved_uploads() -> list[UploadEntry]:
    return upload_library().entries()


def forget_upload(ref: str) -> bool:
    r = ModelRef.parse(ref)
    return r.kind == "upload" and upload_library().forget(r.key)


def open_model(ref: str) -> Loaded:
    """Load the model a reference names (a stored upload is loaded and checked like a fresh one)."""
    r = ModelRef.parse(ref)
    if r.kind == "sample":
        if not any(s["name"] == r.key for s in list_samples()):
            raise OptimError(f"There is no bundled sample '{r.key}': choose another on Home, or run `make samples`.")
        return load_sample(r.key)
    lib = upload_library()
    entry, model, data = lib.read(r.key)
    loaded = load_upload(model, entry.model_name, entry.shapes)
    if data is not None:
        loaded = attach_data(loaded, data, entry.data_name or "data")
    train = lib.read_train(r.key)
    if train is not None:
        loaded = attach_training(loaded, train, entry.train_name or "train")
    lib.remember_hash(r.key, loaded.handle.content_hash)
    return loaded


def model_ref_for_sweep(sweep_id: str) -> str | None:
    """The reference of the model a stored sweep was run on, when it can still be opened here."""
    info = open_store().sweep(sweep_id)
    if not info:
        return None
    name = str(info.get("model_name") or "")
    if any(s["name"] == name for s in list_samples()):
        return str(ModelRef("sample", name))
    for entry in saved_uploads():
        if entry.model_hash and entry.model_hash == info.get("model_hash"):
            return str(ModelRef("upload", entry.id))
    return None
