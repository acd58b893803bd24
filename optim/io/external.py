"""ONNX external data, everywhere in a model: read only from inside the uploaded zip, inlined, else refused.

A tensor can point at an external file from many places, not only ``graph.initializer``: sparse
initializers, ``Constant`` values and any tensor attribute, initializers of ``If``/``Loop``/``Scan``
sub-graphs (nested), and the nodes of model-local functions. ONNX Runtime resolves such paths
against the process's working directory, so every one is checked here: the location must be a
regular member of the uploaded zip (no absolute path, no ``..``, no symlink member) and
offset/length must lie inside it; the bytes are copied into the tensor. Anything else refuses the
model, naming the tensor. :func:`assert_inline` is the guard run before any session is created.
"""

from __future__ import annotations

import posixpath
import stat
import zipfile
from collections.abc import Iterator

import onnx

from optim.errors import MalformedModelError, UnsafeArchiveError

MAX_GRAPH_DEPTH = 64
_EXTERNAL = onnx.TensorProto.EXTERNAL


def _attr_tensors(attr: onnx.AttributeProto, where: str) -> Iterator[tuple[onnx.TensorProto, str]]:
    if attr.HasField("t"):
        yield attr.t, f"{where} attribute {attr.name}"
    for i, t in enumerate(attr.tensors):
        yield t, f"{where} attribute {attr.name}[{i}]"
    for sp, label in [(attr.sparse_tensor, attr.name)] if attr.HasField("sparse_tensor") else []:
        yield sp.values, f"{where} attribute {label} (sparse values)"
        yield sp.indices, f"{where} attribute {label} (sparse indices)"
    for i, sp in enumerate(attr.sparse_tensors):
        yield sp.values, f"{where} attribute {attr.name}[{i}] (sparse values)"
        yield sp.indices, f"{where} attribute {attr.name}[{i}] (sparse indices)"


def _attr_graphs(attr: onnx.AttributeProto) -> list[onnx.GraphProto]:
    return ([attr.g] if attr.HasField("g") else []) + list(attr.graphs)


def iter_tensors(model: onnx.ModelProto) -> Iterator[tuple[onnx.TensorProto, str]]:
    """Every TensorProto in the model with a readable description of where it sits."""
    pending: list[tuple[onnx.GraphProto, str, int]] = [(model.graph, "graph", 0)]
    for fn in model.functions:
        for node in fn.node:
            label = f"function {fn.name[:60]!r} node {node.name[:60] or node.op_type!r}"
            for attr in node.attribute:
                yield from _attr_tensors(attr, label)
                pending.extend((g, f"{label} sub-graph", 1) for g in _attr_graphs(attr))
    while pending:
        graph, where, depth = pending.pop()
        if depth > MAX_GRAPH_DEPTH:
            raise MalformedModelError(f"The model nests sub-graphs more than {MAX_GRAPH_DEPTH} deep; re-export it.")
        for t in graph.initializer:
            yield t, f"{where} initializer"
        for sp in graph.sparse_initializer:
            yield sp.values, f"{where} sparse initializer"
            yield sp.indices, f"{where} sparse initializer (indices)"
        for node in graph.node:
            label = f"{where} node {node.name[:60] or node.op_type!r}"
            for attr in node.attribute:
                yield from _attr_tensors(attr, label)
                pending.extend((g, f"{label} sub-graph", depth + 1) for g in _attr_graphs(attr))


def is_external(t: onnx.TensorProto) -> bool:
    return t.data_location == _EXTERNAL or len(t.external_data) > 0


def _name(t: onnx.TensorProto, where: str) -> str:
    return f"{t.name[:80]!r} ({where})" if t.name else where


def _member(zf: zipfile.ZipFile, base: str, location: str, label: str) -> zipfile.ZipInfo:
    loc = location.replace("\\", "/")
    parts = loc.split("/")
    if not loc or loc.startswith("/") or ".." in parts or (parts and ":" in parts[0]) or "\x00" in loc:
        raise UnsafeArchiveError(f"Tensor {label} points its data at {location[:100]!r}, outside the uploaded zip. "
                                 "External data must be a file inside the zip, next to the .onnx.")
    name = posixpath.normpath(posixpath.join(base, loc))
    try:
        info = zf.getinfo(name)
    except KeyError:
        raise MalformedModelError(f"Tensor {label} refers to {location[:100]!r}, which is not in the zip. Add the "
                                  "data file next to the .onnx in the archive.") from None
    if stat.S_ISLNK(info.external_attr >> 16) or info.is_dir():
        raise UnsafeArchiveError(f"Tensor {label} refers to {location[:100]!r}, which is a link or folder in the zip; "
                                 "store the data file itself.")
    return info


def _span(info: dict[str, str], size: int, label: str) -> tuple[int, int]:
    try:
        offset = int(info.get("offset", "0") or 0)
        length = int(info["length"]) if info.get("length") not in (None, "") else size - offset
    except ValueError:
        raise MalformedModelError(f"Tensor {label} has a non-integer external-data offset/length.") from None
    if offset < 0 or length < 0 or offset + length > size:
        raise MalformedModelError(f"Tensor {label} asks for bytes {offset}..{offset + length} of a {size}-byte data "
                                  "file; the file is truncated or the model is damaged.")
    return offset, length


def inline_all(model: onnx.ModelProto, zf: zipfile.ZipFile | None, base: str, max_bytes: int,
               read_member: object) -> int:
    """Copy every external tensor's bytes from ``zf`` into the model (in place); returns how many.

    ``read_member(zf, name, max_bytes) -> bytes`` is the bounded zip reader. Without a zip, any external
    reference refuses the model.
    """
    cache: dict[str, bytes] = {}
    total = 0
    count = 0
    for t, where in list(iter_tensors(model)):
        if not is_external(t):
            continue
        label = _name(t, where)
        entries = {e.key: e.value for e in t.external_data}
        if zf is None:
            raise MalformedModelError(f"Tensor {label} keeps its data in an external file "
                                      f"({entries.get('location', '?')[:100]!r}). Upload a zip holding the .onnx "
                                      "and its data file(s), or re-export with external_data=False.")
        member = _member(zf, base, entries.get("location", ""), label)
        if member.filename not in cache:
            cache[member.filename] = read_member(zf, member.filename, max_bytes)  # type: ignore[operator]
        blob = cache[member.filename]
        offset, length = _span(entries, len(blob), label)
        total += length
        if total > max_bytes:
            raise MalformedModelError(f"External data adds up past the {max_bytes / 2**20:.0f} MB limit.")
        t.raw_data = blob[offset:offset + length]
        del t.external_data[:]
        t.data_location = onnx.TensorProto.DEFAULT
        count += 1
    assert_inline(model)
    return count


def assert_inline(model: onnx.ModelProto) -> None:
    """MalformedModelError naming the first tensor that still references an external file."""
    for t, where in iter_tensors(model):
        if is_external(t):
            raise MalformedModelError(f"Tensor {_name(t, where)} still references external data; refusing to run it.")
