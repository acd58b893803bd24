"""Torch archives → ONNX, without ever running a Python pickle from an upload.

Used by :mod:`optim.io.load`. What is safe to open, checked against torch 2.13's sources:

* ``torch.jit.load`` (TorchScript) does not use Python's ``pickle``. Its C++ unpickler
  (``torch/csrc/jit/serialization/unpickler.cpp``) resolves only tensors, storages, a fixed set of
  ``torch`` helpers and ``__torch__.*`` classes compiled from the archive's own TorchScript code,
  which the TorchScript interpreter runs (no Python ``exec``/``import``). A ``GLOBAL os system`` in
  ``data.pkl`` makes it fail (see tests).
* ``torch.export.load`` (``.pt2``) is *not* safe on its own: weights and constants marked
  ``use_pickle`` go through ``torch.load(weights_only=False)``, opaque constants through
  ``pickle.loads``, and AOTInductor packages carry native libraries. We therefore refuse such
  archives after reading only their JSON configs, and load the rest with
  ``TORCH_FORCE_WEIGHTS_ONLY_LOAD=1`` so every ``torch.load`` inside uses torch's restricted
  weights-only unpickler.
* Belt and braces: every pickle stream inside an accepted archive is scanned *statically* with
  :func:`pickletools.genops` (which decodes opcodes without executing them) and refused if it names
  a global outside a small allow-list of tensor-rebuilding helpers.

No maintained library offers this pre-screening for upload handling, hence this module.
"""

from __future__ import annotations

import io
import json
import pickletools
import warnings
import zipfile
from collections.abc import Iterator, Sequence

import onnx

from optim.errors import (
    DynamicShapeError,
    FileTooLargeError,
    MalformedModelError,
    PickleRefusedError,
    SandboxUnavailableError,
    UnsafeArchiveError,
)
from optim.io import external, sandbox, symexpr, torch_convert
from optim.io.bounds import check_structure

EXPORT_HINT = (
    "Export the model to ONNX in your own environment instead: "
    '`torch.onnx.export(model.eval(), example_input, "model.onnx", external_data=False)`, '
    "then upload model.onnx."
)

_ALLOWED_GLOBALS = {
    "collections OrderedDict",
    "torch._utils _rebuild_tensor_v2",
    "torch._utils _rebuild_parameter",
    "torch._utils _rebuild_parameter_with_state",
    "torch._utils _rebuild_qtensor",
    "torch._tensor _rebuild_from_type_v2",
    "torch.nn.parameter Parameter",
    "torch device",
    "torch Size",
    "torch.serialization _get_layout",
    "torch strided",
}
_ALLOWED_TORCH_NAMES = {
    "float32", "float16", "bfloat16", "float64", "int8", "uint8", "int16", "int32", "int64", "bool",
    "qint8", "quint8", "qint32", "per_tensor_affine", "per_channel_affine",
}


class TorchScriptShapesRequiredError(DynamicShapeError):
    """TorchScript records no input shapes: the user must pass ``input_shapes``."""


def _global_allowed(ref: str, torchscript: bool) -> bool:
    module, _, name = ref.partition(" ")
    if ref in _ALLOWED_GLOBALS or module == "torch.jit._pickle":
        return True
    if module == "torch" and (name.endswith("Storage") or name in _ALLOWED_TORCH_NAMES):
        return True
    return torchscript and module.startswith("__torch__")


_STR_OPS = {"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8"}
_MARK = object()
_OPAQUE = object()


def pickle_globals(data: bytes) -> list[str]:
    """Globals ("module name") a pickle stream would import, decoded without executing anything.

    The pickle machine's stack is simulated from each opcode's declared stack effect (``pickletools``
    metadata), with strings kept as values and the memo followed, so ``STACK_GLOBAL`` is resolved from
    whatever really sits under it: any string opcode (``SHORT_BINSTRING`` included), memo ``GET``s,
    ``DUP``. An operand that is not a known string reports ``<unresolved STACK_GLOBAL>`` (refused).
    """
    found: list[str] = []
    stack: list[object] = []
    memo: dict[int, object] = {}
    try:
        for op, arg, _ in pickletools.genops(data):
            name = op.name
            top = stack[-1] if stack else _OPAQUE
            if name in ("BINPUT", "LONG_BINPUT", "PUT"):
                memo[int(arg)] = top
                continue
            if name == "MEMOIZE":
                memo[len(memo)] = top
                continue
            before = op.stack_before
            if pickletools.markobject in before:
                while stack and stack[-1] is not _MARK:
                    stack.pop()
                if not stack:
                    raise ValueError(f"{name} without a MARK")
                stack.pop()
                for _ in range(before.index(pickletools.markobject)):
                    stack.pop()
            else:
                popped = [stack.pop() for _ in before][::-1]
            if name == "STACK_GLOBAL":
                mod, attr = popped
                ok = isinstance(mod, str) and isinstance(attr, str)
                found.append(f"{mod} {attr}" if ok else "<unresolved STACK_GLOBAL>")
            elif name in ("GLOBAL", "INST"):
                found.append(str(arg))
            elif name == "OBJ":
                found.append("<OBJ>")
            if name in _STR_OPS:
                stack.append(str(arg))
            elif name in ("BINGET", "LONG_BINGET", "GET"):
                stack.append(memo.get(int(arg), _OPAQUE))
            elif name == "DUP":
                stack.extend([top, top])
            else:
                stack.extend(_MARK if a is pickletools.markobject else _OPAQUE for a in op.stack_after)
    except Exception as exc:  # noqa: BLE001 - any decoding problem means "not a clean pickle"
        raise MalformedModelError(f"A pickle inside the archive is corrupt ({str(exc)[:200]}). {EXPORT_HINT}") from exc
    return found


def looks_like_pickle(data: bytes) -> bool:
    """True for a pickle stream of any protocol (0-5), decided by decoding opcodes, never by running them."""
    if data[:1] == b"\x80":
        return True
    if data[:1] not in (b"(", b"c", b"]", b"}", b"I", b"L", b"S", b"V", b"N", b"F", b")", b"i"):
        return False
    try:
        ops = [op.name for op, _, _ in pickletools.genops(data[: 2**20])]
    except Exception:  # noqa: BLE001 - not a (complete) pickle
        return False
    return bool(ops) and ops[-1] == "STOP"


def _iter_pickles(zf: zipfile.ZipFile, max_bytes: int) -> Iterator[tuple[str, bytes]]:
    for info in zf.infolist():
        if info.is_dir() or info.file_size > max_bytes:
            continue
        # raw tensor storages (data/0, weight_0) may start with any byte: only named pickles are scanned
        if info.filename.endswith("pkl"):
            yield info.filename, zf.read(info)
        elif info.filename.endswith(".pt") and zf.open(info).read(4) == b"PK\x03\x04":
            # a torch.save zip nested in a .pt2 (e.g. its sample inputs)
            with zipfile.ZipFile(io.BytesIO(zf.read(info))) as inner:
                if sum(i.file_size for i in inner.infolist()) > max_bytes:
                    raise FileTooLargeError(f"{info.filename} inside the archive unpacks past the size limit.")
                for name, data in _iter_pickles(inner, max_bytes):
                    yield f"{info.filename}!{name}", data


def scan_archive_pickles(zf: zipfile.ZipFile, torchscript: bool, max_bytes: int) -> None:
    """Refuse (PickleRefusedError) if any pickle in ``zf`` names a global outside the allow-list."""
    for name, data in _iter_pickles(zf, max_bytes):
        bad = [g for g in pickle_globals(data) if not _global_allowed(g, torchscript)]
        if bad:
            raise PickleRefusedError(
                f"{name} inside the archive would import Python objects ({', '.join(sorted(set(bad))[:5])}); "
                f"we never unpickle arbitrary objects from an upload. {EXPORT_HINT}"
            )


def check_pt2_archive(zf: zipfile.ZipFile, max_bytes: int = 2**30) -> None:
    """Refuse .pt2 archives whose loading would run pickles, native code or a sympy expression outside the
    grammar of :mod:`optim.io.symexpr` (reads only JSON)."""
    symexpr.check_pt2_expressions(zf, max_bytes)
    for name in zf.namelist():
        if "/data/aotinductor/" in f"/{name}":
            raise PickleRefusedError(f"This .pt2 is an AOTInductor package with compiled native code ({name}). "
                                     f"Save the plain program with torch.export.save instead, or {EXPORT_HINT}")
        if name.endswith("_config.json"):
            try:
                config = json.loads(zf.read(name)).get("config", {})
            except (ValueError, AttributeError) as exc:
                raise MalformedModelError(f"{name} in the .pt2 is not valid JSON ({exc}).") from exc
            for fqn, meta in config.items():
                path = str(meta.get("path_name", ""))
                if meta.get("use_pickle") or path.startswith(("custom_obj", "opaque_obj")):
                    raise PickleRefusedError(f"The .pt2 stores {fqn!r} as a pickled Python object, "
                                             f"which we never load. {EXPORT_HINT}")
        parts = name.split("/")
        if len(parts) >= 3 and parts[-3:-1] in (["data", "weights"], ["data", "constants"]) and name.endswith(".pt"):
            raise PickleRefusedError(f"This .pt2 uses the legacy pickled weight format ({name}). "
                                     f"Re-save it with a current torch.export.save, or {EXPORT_HINT}")


def _converted(kind: str, data: bytes, input_shapes: dict[str, Sequence[int]] | None) -> onnx.ModelProto:
    """Convert in the bubblewrap sandbox (:mod:`optim.io.sandbox`); without one, refuse unless allowed."""
    shapes = {str(k): [int(d) for d in v] for k, v in (input_shapes or {}).items()}
    problem = sandbox.sandbox_problem()
    if not problem:
        answer = sandbox.run_sandboxed(kind, data, shapes)
    elif sandbox.unsandboxed_allowed():
        warnings.warn(f"Converting {kind} without a sandbox ({problem}); only do this for your own files.",
                      stacklevel=2)
        answer = torch_convert.convert(kind, data, shapes)
    else:
        raise SandboxUnavailableError(
            f"TorchScript and .pt2 uploads are converted in a sandbox, and {problem}, so this file is refused. "
            f"{EXPORT_HINT} Operators: {sandbox.INSTALL_HINT} Or allow unsandboxed conversion of trusted files "
            "with OPTIM_ALLOW_UNSANDBOXED_TORCH=1 (CLI: --allow-unsandboxed).")
    if answer.get("ok"):
        model = onnx.ModelProto()
        try:
            model.ParseFromString(answer["onnx"])
        except Exception as exc:  # noqa: BLE001 - protobuf decode errors
            raise MalformedModelError(f"The converter returned a damaged ONNX model ({str(exc)[:200]}).") from exc
        external.assert_inline(model)  # the converter ran hostile code: its output is checked like an upload
        check_structure(model)
        return model
    if answer.get("error") == "shapes":
        names = [str(n)[:80] for n in answer.get("names", [])]
        first = names[0] if names else "input"
        raise TorchScriptShapesRequiredError(
            "TorchScript files do not record input shapes. Give the shape of each input "
            f"({', '.join(names)}), e.g. input_shapes={{'{first}': (1, 3, 224, 224)}} "
            f"or --input-shape {first}=1,3,224,224. Missing: {', '.join(str(m)[:80] for m in answer.get('missing', []))}."
        )
    raise MalformedModelError(f"{str(answer.get('message', 'conversion failed'))[:500]}. {EXPORT_HINT}")


def pt2_to_onnx(data: bytes) -> onnx.ModelProto:
    """Convert a (pre-screened) torch.export archive with the dynamo exporter, in the sandbox.

    An ExportedProgram can only go through the dynamo exporter (the legacy one needs an eager module);
    symbolic dimensions stay symbolic in the ONNX graph and are handled like any ONNX input.
    """
    return _converted("pt2", data, None)


def torchscript_to_onnx(data: bytes, input_shapes: dict[str, Sequence[int]] | None) -> onnx.ModelProto:
    """Load a TorchScript archive and export it to ONNX, in the sandbox."""
    return _converted("torchscript", data, input_shapes)


def refuse_pickle(what: str) -> PickleRefusedError:
    return PickleRefusedError(f"This file is {what}. We never unpickle uploads (unpickling runs arbitrary code). "
                              f"{EXPORT_HINT}")


def ensure_inside(name: str) -> None:
    """UnsafeArchiveError when a zip member path is absolute or climbs out with '..'."""
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or (len(parts[0]) == 2 and parts[0][1] == ":") or ".." in parts:
        raise UnsafeArchiveError(f"The zip member {name!r} points outside the archive. Re-create the zip with "
                                 "relative paths only (e.g. `zip model.zip model.onnx model.onnx.data`).")
