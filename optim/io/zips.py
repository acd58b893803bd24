"""Zip archives for :mod:`optim.io.load`: member checks, bounded reads, format detection, and
copying ONNX external data from members into the model (nothing is extracted to disk)."""

from __future__ import annotations

import posixpath
import zipfile
import zlib

import onnx

from optim.errors import FileTooLargeError, MalformedModelError, UnknownFormatError
from optim.io import torch_import as tio


def zip_members(zf: zipfile.ZipFile, max_bytes: int) -> list[zipfile.ZipInfo]:
    infos = zf.infolist()
    for info in infos:
        tio.ensure_inside(info.filename)
    total = sum(i.file_size for i in infos)
    if total > max_bytes:
        raise FileTooLargeError(f"The archive unpacks to {total / 2**20:.1f} MB, over the {max_bytes / 2**20:.0f} MB "
                                "limit. Upload a smaller model or raise the limit.")
    return infos


# what reading a damaged member can raise (bad CRC or header, truncated stream, bad offsets, encryption)
ZIP_READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError, ValueError)


def read_member(zf: zipfile.ZipFile, name: str, max_bytes: int) -> bytes:
    try:
        with zf.open(name) as fh:  # bounded read: never trust the declared size alone
            data = fh.read(max_bytes + 1)
    except ZIP_READ_ERRORS as exc:  # damaged member, bad CRC, encrypted, unsupported compression
        raise MalformedModelError(f"{name} in the archive cannot be read ({exc}); create the zip again "
                                  "(plain deflate, no password) and re-upload it.") from exc
    if len(data) > max_bytes:
        raise FileTooLargeError(f"{name} in the archive unpacks past the {max_bytes / 2**20:.0f} MB limit.")
    return data


def kind_of_zip(names: list[str]) -> str:
    roots = {n.split("/", 1)[0] for n in names}
    has = lambda suffix: any(n.endswith(suffix) or f"/{suffix}" in f"/{n}" for n in names)  # noqa: E731
    if any(n.lower().endswith(".onnx") for n in names):
        return "onnx-zip"
    if any(n.endswith("archive_format") for n in names) or any("/models/" in f"/{n}" and n.endswith(".json")
                                                                for n in names):
        return "pt2"
    if has("data.pkl") and any("/code/" in f"/{n}" for n in names) and has("constants.pkl"):
        return "torchscript"
    if has("data.pkl"):
        return "torch.save"
    raise UnknownFormatError(f"The zip holds no .onnx model, TorchScript or .pt2 program (top folders: "
                             f"{', '.join(sorted(roots)[:5])}). Put model.onnx (and its data files) in the zip.")


def inline_external(model: onnx.ModelProto, zf: zipfile.ZipFile | None, base: str, max_bytes: int) -> None:
    """Copy external-data tensors from zip members into the model (no files touched)."""
    cache: dict[str, bytes] = {}
    for t in model.graph.initializer:
        if t.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in t.external_data}
        if zf is None:
            raise MalformedModelError(f"Weight {t.name!r} lives in an external file ({info.get('location')}). "
                                      "Upload a zip holding the .onnx and its data file(s), or re-export "
                                      "with external_data=False.")
        location = info.get("location", "")
        tio.ensure_inside(location)
        member = posixpath.normpath(posixpath.join(base, location))
        if member not in zf.namelist():
            raise MalformedModelError(f"Weight {t.name!r} refers to {location!r}, which is not in the zip. "
                                      "Add the data file next to the .onnx in the archive.")
        if member not in cache:
            cache[member] = read_member(zf, member, max_bytes)
        offset, length = int(info.get("offset", 0)), info.get("length")
        blob = cache[member][offset: offset + int(length) if length else None]
        t.raw_data = blob
        del t.external_data[:]
        t.data_location = onnx.TensorProto.DEFAULT
