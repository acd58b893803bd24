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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from google.protobuf.message import DecodeError
from onnx import helper

from optim.errors import (
    ConfigError,
    DynamicShapeError,
    FileTooLargeError,
    MalformedModelError,
    MissingInputError,
    OptimError,
    ShapeMismatchError,
    TooManyParametersError,
    UnknownFormatError,
)
from optim.handle import ModelHandle
from optim.io import torch_import as tio
from optim.io import zips as zio
from optim.io.fold import fold_constants

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


@dataclass(frozen=True)
class InputSpec:
    name: str
    shape: tuple[int | str, ...]
    dtype: np.dtype


def parse_input_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """``"NAME=1,3,224,224"`` → ``("NAME", (1, 3, 224, 224))``; ConfigError when malformed."""
    name, sep, dims = text.rpartition("=")
    try:
        shape = tuple(int(d) for d in dims.replace("x", ",").split(",") if d.strip())
    except ValueError:
        shape = ()
    if not sep or not name.strip() or not shape or any(d <= 0 for d in shape):
        raise ConfigError(f"input shape {text!r} is not NAME=D1,D2,... with positive integers, "
                          "e.g. input=1,3,224,224.")
    return name.strip(), shape


def input_specs(model: onnx.ModelProto) -> list[InputSpec]:
    """Graph inputs that are not initializers; unknown dims appear as ``"?"``."""
    inits = {t.name for t in model.graph.initializer}
    specs = []
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        dims: tuple[int | str, ...] = tuple(
            d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else (d.dim_param or "?")
            for d in tt.shape.dim
        ) if tt.HasField("shape") else ("?...",)
        try:
            dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type))
        except (KeyError, TypeError, ValueError):
            dtype = np.dtype(object)
        specs.append(InputSpec(vi.name, dims, dtype))
    return specs


def _batch_params(specs: list[InputSpec]) -> set[str]:
    """Names of symbolic first dimensions: these are the batch, wherever else they appear."""
    return {s.shape[0] for s in specs if s.shape and isinstance(s.shape[0], str) and s.shape[0] != "?..."}


def synthesize_inputs(model: onnx.ModelProto, batch: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    """One random feed per model input (floats ~ N(0,1), integers and bools zero), batch dims = ``batch``.

    Raises MissingInputError naming inputs whose shape or type cannot be synthesised.
    """
    rng = np.random.default_rng(seed)
    specs = input_specs(model)
    batch_names = _batch_params(specs)
    feeds: dict[str, np.ndarray] = {}
    problems = []
    for spec in specs:
        unresolved = [d for d in spec.shape if isinstance(d, str) and d not in batch_names]
        if unresolved or spec.dtype.kind not in "fiub":
            why = f"dynamic dims {unresolved}" if unresolved else f"type {spec.dtype}"
            problems.append(f"{spec.name} ({why})")
            continue
        shape = tuple(batch if isinstance(d, str) else d for d in spec.shape)
        if spec.dtype.kind == "f":
            feeds[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
        else:
            feeds[spec.name] = np.zeros(shape, dtype=spec.dtype)
    if problems:
        raise MissingInputError(f"Cannot synthesise input(s) {', '.join(problems)}. Fix their shapes with "
                                "input_shapes / --input-shape NAME=D1,D2,..., or provide the data yourself.")
    return feeds


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
    if data[:1] == b"\x80":
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


def _set_dims(vi: onnx.ValueInfoProto, values: dict[int, int]) -> None:
    for i, d in enumerate(vi.type.tensor_type.shape.dim):
        if i in values:
            d.Clear()
            d.dim_value = values[i]


def fix_shapes(model: onnx.ModelProto, input_shapes: dict[str, Sequence[int]] | None) -> None:
    """Fix non-batch dynamic input dims from ``input_shapes`` (in place) or raise DynamicShapeError."""
    shapes = {k: tuple(int(d) for d in v) for k, v in (input_shapes or {}).items()}
    specs = input_specs(model)
    names = [s.name for s in specs]
    unknown = set(shapes) - set(names)
    if unknown:
        raise ConfigError(f"input_shapes names {sorted(unknown)}, but the model's inputs are {names}.")
    batch = _batch_params(specs) - {"?"}
    by_name = {vi.name: vi for vi in model.graph.input}
    params: dict[str, int] = {}
    missing = []
    for spec in specs:
        given = shapes.get(spec.name)
        dyn = [i for i, d in enumerate(spec.shape) if isinstance(d, str) and not (d in batch or (i == 0 and d == "?"))]
        if given is None:
            if dyn or spec.shape == ("?...",):
                missing.append(f"{spec.name} {list(spec.shape)} (dynamic dims at positions {dyn or 'all'})")
            continue
        if spec.shape != ("?...",) and len(given) != len(spec.shape):
            raise ShapeMismatchError(f"input_shapes gives {spec.name} rank {len(given)} {given}, but the model "
                                     f"declares rank {len(spec.shape)} {list(spec.shape)}.")
        if spec.shape == ("?...",):
            by_name[spec.name].type.tensor_type.shape.dim.extend(onnx.TensorShapeProto.Dimension() for _ in given)
            dyn = list(range(len(given)))
        for i, d in enumerate(spec.shape):
            if isinstance(d, int) and d != given[i]:
                raise ShapeMismatchError(f"input_shapes gives {spec.name} {given}, but dim {i} is fixed to {d} "
                                         f"in the model ({list(spec.shape)}).")
        keep_batch = {0} if spec.shape and spec.shape[0] in batch else set()
        values = {i: given[i] for i in dyn if i not in keep_batch}
        params.update({spec.shape[i]: v for i, v in values.items() if isinstance(spec.shape[i], str)
                       and spec.shape[i] not in ("?", "?...")})
        _set_dims(by_name[spec.name], values)
    if missing:
        raise DynamicShapeError("Dynamic input dimensions must be fixed (only the first, batch dimension may "
                                f"stay symbolic): {'; '.join(missing)}. Pass input_shapes={{NAME: (1, 3, 224, 224)}}"
                                " or --input-shape NAME=1,3,224,224.")
    for vi in [*model.graph.output, *model.graph.value_info]:
        dims = vi.type.tensor_type.shape.dim
        _set_dims(vi, {i: params[d.dim_param] for i, d in enumerate(dims) if d.dim_param in params})


def _validate(model: onnx.ModelProto) -> None:
    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, ValueError) as exc:
        raise MalformedModelError(f"The ONNX model fails onnx's checker: {str(exc).splitlines()[0]}. "
                                  "Re-export it with a current exporter.") from exc
    try:
        _open_session(model)
    except Exception as exc:  # noqa: BLE001 - ORT raises Fail/InvalidGraph/NotImplemented/RuntimeException
        newest = re.search(r"max supported IR version: (\d+)", str(exc))
        if newest is None or model.ir_version <= int(newest.group(1)):
            raise _runtime_error(exc) from exc
        # Written by a newer onnx than this runtime reads; the opsets decide the semantics, so retry
        # with the runtime's newest IR version (what `onnx.helper.make_model` users usually need).
        model.ir_version = int(newest.group(1))
        try:
            _open_session(model)
        except Exception as exc2:  # noqa: BLE001
            raise _runtime_error(exc2) from exc2


def _open_session(model: onnx.ModelProto) -> None:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


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
    _check_opset(model)
    folded = fold_constants(model)
    _check_params(model, max_params)
    fix_shapes(model, None if fmt == "torchscript" else input_shapes)
    _validate(model)
    name = filename or "model"
    meta = {"history": [], "filename": filename, "folded_nodes": folded}
    return ModelHandle(model=model, name=name if path_name else f"upload:{name}", source_format=fmt, meta=meta)
