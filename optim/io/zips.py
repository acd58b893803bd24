"""Zip archives for :mod:`optim.io.load`: member checks, bounded reads, format detection, and
copying ONNX external data from members into the model (nothing is extracted to disk)."""

from __future__ import annotations

import zipfile
import zlib

import onnx

from optim.errors import FileTooLargeError, MalformedModelError, UnknownFormatError
from optim.io import external
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
    """Copy every external-data tensor (anywhere in the model, :mod:`optim.io.external`) from zip members
    into the model; no files are touched and nothing outside the zip is read."""
    external.inline_all(model, zf, base, max_bytes, read_member)
