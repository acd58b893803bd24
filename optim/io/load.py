"""Load a user's model (path or uploaded bytes) into a checked, runnable ONNX :class:`ModelHandle`.

Formats: ONNX (one file, opsets 9–21 tested), a zip holding an ONNX model with its external-data
files, TorchScript (``torch.jit.save``) and ``torch.export`` programs (``.pt2``). Everything becomes
an ONNX model with its weights embedded that ONNX Runtime opens.

Safety, in order: sizes are bounded *before* parsing (file size; total uncompressed zip size against
zip bombs), zip member paths must stay inside the archive, pickles are recognised by their bytes and
never unpickled (``torch.save`` archives, raw pickles; see :mod:`optim.io.torch_import` for what
TorchScript/.pt2 loading runs), declared parameter counts are bounded before external data is read.
Every refusal is its own :class:`~optim.errors.OptimError` subclass with a message saying what to do.

Shapes (DESIGN.md "Batch dimension"): a symbolic first dimension stays symbolic (the batch); every
other dynamic dimension must be fixed with ``input_shapes`` or a :class:`DynamicShapeError` names it.
"""

from __future__ import annotations

import io
import posixpath
import re
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from google.protobuf.message import DecodeError

from optim.errors import (
    FileTooLargeError,
    MalformedModelError,
    OptimError,
    TooManyParametersError,
    UnknownFormatError,
)
from optim.handle import ModelHandle
from optim.io import torch_import as tio
from optim.io import zips as zio
from optim.io.bounds import check_structure
from optim.io.fold import fold_constants, lift_ir3
from optim.io.shapes import (  # noqa: F401  (re-exported: callers import them from here)
    InputSpec,
    fix_shapes,
    input_specs,
    parse_input_shape,
    record_shapes,
    synthesize_inputs,
)

DEFAULT_MAX_BYTES = 500 * 2**20
DEFAULT_MAX_PARAMS = 2_000_000_000
MIN_OPSET = 9
_FOREIGN_MAGIC = {
    b"\x89PNG": "a PNG image", b"\xff\xd8\xff": "a JPEG image", b"GIF8": "a GIF image", b"%PDF": "a PDF",
    b"\x7fELF": "a Linux executable", b"\x1f\x8b": "a gzip file", b"BZh": "a bzip2 file", b"MZ": "a Windows executable",
    b"\x89HDF": "an HDF5 file (Keras?)", b"7z\xbc\xaf": "a 7-zip archive", b"Rar!": "a RAR archive",
}
_PICKLE_SUFFIXES = (".pkl", ".pickle", ".pth", ".pt", ".ckpt", ".bin", ".joblib")


class EmptyFileError(MalformedModelError):
    """The upload has zero bytes."""


class UnsupportedOpsetError(MalformedModelError):
    """The ONNX default-domain opset is outside what we load."""


class ModelNotFoundError(OptimError):
    """A path that does not exist."""


# --- reading bytes -------------------------------------------------------------------------------
def _read_source(source: Path | str | bytes, max_bytes: int) -> tuple[bytes, str]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if len(data) > max_bytes:
            raise _too_large(len(data), max_bytes)
        return data, ""
    path = Path(source)
    if not path.is_file():
        raise ModelNotFoundError(f"No model file at {path}. Check the path.")
    size = path.stat().st_size
    if size > max_bytes:
        raise _too_large(size, max_bytes)
    return path.read_bytes(), path.name


def _too_large(size: int, limit: int) -> FileTooLargeError:
    return FileTooLargeError(f"The model is {size / 2**20:.1f} MB, over the {limit / 2**20:.0f} MB limit. "
                             "Quantize or prune it first, or raise the limit (load(..., max_bytes=...)).")


def _sniff(data: bytes, filename: str) -> str:
    """'onnx' | 'zip' | refuse: decided from the bytes (and the name only to break ties)."""
    if not data:
        raise EmptyFileError(f"{filename or 'The upload'} is empty (0 bytes). Upload the model file again.")
    if tio.looks_like_pickle(data):
        raise tio.refuse_pickle("a Python pickle (e.g. a pickled nn.Module or state dict)")
    if data[:4] == b"PK\x03\x04" or data[:4] == b"PK\x05\x06":
        return "zip"
    for magic, what in _FOREIGN_MAGIC.items():
        if data.startswith(magic):
            raise UnknownFormatError(f"{filename or 'This file'} is {what}, not a model. Upload an ONNX file "
                                     "(.onnx), a zip of ONNX + external data, TorchScript (.pt) or a .pt2.")
    if filename.lower().endswith(_PICKLE_SUFFIXES):
        raise tio.refuse_pickle(f"named {filename!r} but is neither TorchScript nor ONNX (an old-style pickle?)")
    if "." in filename and not filename.lower().endswith(".onnx") and data[:1] != b"\x08":
        # ONNX files start with field 1 (ir_version): tag byte 0x08. Other names/bytes: not ours.
        raise UnknownFormatError(f"{filename} is not a format we load. Upload an ONNX file (.onnx), a zip of "
                                 "ONNX + external data, TorchScript (.pt) or a torch.export program (.pt2).")
    return "onnx"


def _parse_onnx(data: bytes, filename: str) -> onnx.ModelProto:
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise MalformedModelError(f"{filename or 'The file'} is not a valid ONNX protobuf ({exc}); it may be "
                                  "truncated or not an ONNX model. Re-export it and upload it again.") from exc
    if not model.HasField("graph") or not model.graph.node or not model.opset_import:
        raise MalformedModelError(f"{filename or 'The file'} parsed as protobuf but holds no ONNX graph "
                                  "(no nodes or opset). Upload the .onnx file the exporter wrote.")
    check_structure(model)
    return model


def declared_params(model: onnx.ModelProto) -> int:
    """Elements declared by initializers and Constant tensors (from dims, before any data is read)."""
    total = 0
    for t in model.graph.initializer:
        total += int(np.prod([max(int(d), 0) for d in t.dims], dtype=object)) if t.dims else 1
    for node in model.graph.node:
        for attr in node.attribute:
            if node.op_type == "Constant" and attr.name == "value":
                total += int(np.prod([int(d) for d in attr.t.dims], dtype=object)) if attr.t.dims else 1
    return total


def _check_params(model: onnx.ModelProto, max_params: int) -> None:
    n = declared_params(model)
    if n > max_params:
        raise TooManyParametersError(f"The graph declares {n:,} parameters, over the {max_params:,} limit. "
                                     "Use a smaller model or raise max_params.")


def _check_opset(model: onnx.ModelProto) -> None:
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    newest = onnx.defs.onnx_opset_version()
    if opset < MIN_OPSET or opset > newest:
        raise UnsupportedOpsetError(
            f"The model uses ONNX opset {opset}; we load opsets {MIN_OPSET}–{newest}. Convert it with "
            "`onnx.version_converter.convert_version(model, 17)` or re-export with opset_version=17.")


def _prepared(original: onnx.ModelProto, input_shapes: dict[str, Sequence[int]] | None,
              max_params: int) -> tuple[onnx.ModelProto, int]:
    """The model lifted to IR >= 4, constant-folded and shape-fixed, checked to run at every ORT level.

    Our transformations must never turn a runnable file into a refused one: when the prepared model fails,
    it is prepared again without folding, then with its input shapes recorded (not written into the graph:
    ONNX Runtime's optimiser re-infers ``If`` branches with them, and an untaken branch may not fit them).
    If every way fails but the file as given runs, the message says the fault is ours.
    """
    fix_shapes(_copy(original), input_shapes)  # a wrong or missing shape is the user's to fix: say so first
    first_error: MalformedModelError | None = None
    for fold, write_shapes in ((True, True), (False, True), (True, False)):
        if not write_shapes and not input_shapes:
            continue
        model = _copy(original)
        lift_ir3(model)
        folded = fold_constants(model) if fold else 0
        _check_params(model, max_params)
        if write_shapes:
            fix_shapes(model, input_shapes)
        else:
            record_shapes(model, input_shapes or {})
        try:
            _validate(model)
            return model, folded
        except MalformedModelError as exc:
            first_error = first_error or exc
    assert first_error is not None
    try:
        _validate(original)
    except MalformedModelError:
        raise first_error from None  # the file itself does not run: the first message says why
    raise MalformedModelError(f"This model runs as given, but our preparation for measuring (constant folding, "
                              f"fixing input shapes) breaks it, which is our defect; please report it. "
                              f"{first_error}") from first_error


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def _validate(model: onnx.ModelProto) -> None:
    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, ValueError) as exc:
        raise MalformedModelError(f"The ONNX model fails onnx's checker: {str(exc).splitlines()[0]}. "
                                  "Re-export it with a current exporter.") from exc
    try:
        opens(model)
    except Exception as exc:  # noqa: BLE001 - ORT raises Fail/InvalidGraph/NotImplemented/RuntimeException
        newest = re.search(r"max supported IR version: (\d+)", str(exc))
        if newest is None or model.ir_version <= int(newest.group(1)):
            raise _runtime_error(exc) from exc
        # Written by a newer onnx than this runtime reads; the opsets decide the semantics, so retry
        # with the runtime's newest IR version (what `onnx.helper.make_model` users usually need).
        model.ir_version = int(newest.group(1))
        try:
            opens(model)
        except Exception as exc2:  # noqa: BLE001
            raise _runtime_error(exc2) from exc2


def opens(model: onnx.ModelProto | Path) -> None:
    """Raise unless ORT opens ``model`` as written and fully optimised (the levels sweeps measure at): the one
    check used on loading and on every graph a pass builds. A path (a file a pass wrote, weights inline) is
    read by ORT itself: no serialised copy of the model in Python."""
    data: str | bytes = str(model) if isinstance(model, Path) else model.SerializeToString()
    for level in (ort.GraphOptimizationLevel.ORT_DISABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
        opts = ort.SessionOptions()
        opts.graph_optimization_level = level
        opts.intra_op_num_threads = opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


def _runtime_error(exc: Exception) -> MalformedModelError:
    text = str(exc).strip().splitlines()[-1]
    reason = re.sub(r"/onnxruntime_src/\S+ [^)]*\)\s*", "", text)[:500]
    return MalformedModelError(f"ONNX Runtime cannot open this model: {reason}. Check for custom or "
                               "unsupported operators, or re-export with opset 17.")


def _load_zip(data: bytes, filename: str, max_bytes: int, max_params: int,
              input_shapes: dict[str, Sequence[int]] | None) -> tuple[onnx.ModelProto, str]:
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zio.ZIP_READ_ERRORS as exc:
        raise MalformedModelError(f"{filename or 'The file'} looks like a zip but cannot be opened ({exc}).") from exc
    with zf:
        infos = zio.zip_members(zf, max_bytes)
        kind = zio.kind_of_zip([i.filename for i in infos])
        if kind == "torch.save":
            raise tio.refuse_pickle("a torch.save archive (pickled module or state dict)")
        if kind in ("torchscript", "pt2"):
            try:
                if kind == "pt2":
                    tio.check_pt2_archive(zf)
                tio.scan_archive_pickles(zf, torchscript=kind == "torchscript", max_bytes=max_bytes)
            except zio.ZIP_READ_ERRORS as exc:
                raise MalformedModelError(f"{filename or 'The archive'} is damaged ({exc}); save or export it "
                                          "again and re-upload it.") from exc
            if kind == "torchscript":
                return tio.torchscript_to_onnx(data, input_shapes), kind
            return tio.pt2_to_onnx(data), kind
        onnx_names = [i.filename for i in infos if i.filename.lower().endswith(".onnx")]
        if len(onnx_names) != 1:
            raise MalformedModelError(f"The zip holds {len(onnx_names)} .onnx files ({', '.join(onnx_names)}); "
                                      "put exactly one model (plus its data files) in the archive.")
        model = _parse_onnx(zio.read_member(zf, onnx_names[0], max_bytes), onnx_names[0])
        _check_params(model, max_params)
        zio.inline_external(model, zf, posixpath.dirname(onnx_names[0]), max_bytes)
        return model, kind


def load(source: Path | str | bytes, filename: str | None = None, *, max_bytes: int = DEFAULT_MAX_BYTES,
         max_params: int = DEFAULT_MAX_PARAMS, input_shapes: dict[str, Sequence[int]] | None = None) -> ModelHandle:
    """Load ONNX / zip(ONNX + data) / TorchScript / .pt2 from a path or bytes into a checked handle.

    The result has weights embedded, constant sub-graphs folded (:mod:`optim.io.fold`), a symbolic
    batch dimension kept symbolic (also when ``input_shapes`` gives a value for it), every other input dimension static, passes ``onnx.checker`` and opens
    in ONNX Runtime. ``filename`` names uploaded bytes (used for messages and the handle name).
    """
    data, path_name = _read_source(source, max_bytes)
    filename = filename or path_name
    kind = _sniff(data, filename)
    if kind == "zip":
        model, fmt = _load_zip(data, filename, max_bytes, max_params, input_shapes)
    else:
        model, fmt = _parse_onnx(data, filename), "onnx"
        _check_params(model, max_params)
        zio.inline_external(model, None, "", max_bytes)
    del data  # the file's bytes: not held while the model is copied, checked and opened (peak memory)
    _check_opset(model)
    model, folded = _prepared(model, None if fmt == "torchscript" else input_shapes, max_params)
    name = filename or "model"
    meta = {"history": [], "filename": filename, "folded_nodes": folded}
    return ModelHandle(model=model, name=name if path_name else f"upload:{name}", source_format=fmt, meta=meta)
