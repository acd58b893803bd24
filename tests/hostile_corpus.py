"""A hostile upload corpus, generated (``python tests/hostile_corpus.py OUT_DIR`` or from the tests).

Every payload that could run code would create a file in ``markers`` (``touch``); every read target is a
honey file holding ``HONEY`` placed in the server's working directory and elsewhere. Families:

* ``pickle``: pickles of every protocol (``__reduce__`` → ``os.system``) under every extension, raw and
  as ``torch.save``-style zips, and the SHORT_BINSTRING → STACK_GLOBAL trick;
* ``pt2-expr``: a real ``.pt2`` whose shape expressions are replaced by code, also named ``.onnx``;
* ``onnx-external``: external data in initializers, sparse initializers, ``Constant`` values, ``If``
  sub-graphs and function bodies pointing at the honey files (absolute, relative, ``..``), single files
  and zips (with a symlink member too);
* ``onnx-bomb``: ConstantOfShape/Expand/Range/Tile blow-ups, a 10^15-iteration Loop, a 50k-input Sum,
  node chains, nested If, huge declared initializers;
* ``damaged``: truncations and bit flips of a real model;
* ``zip``: zip slip names, a zip bomb, many members, nested archives, bad CRC, encrypted flags;
* ``npz`` / ``csv`` / ``image-zip``: data attacks (huge declared headers, object arrays, 200k columns,
  huge cells, class folders named 99999999999999999999, 1×1 PNGs resized to gigabytes, PNG bombs);
* ``torchscript``: ``torch.from_file`` reads of the honey files and ``torch.save`` marker writes at load
  and export time, and an endless loop (converted in the sandbox; slow: a torch start each).
"""

from __future__ import annotations

import io
import json
import pickle
import struct
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HONEY = b"HONEY-c0ffee-hostile"
EXTS = (".onnx", ".pt", ".pt2", ".pth", ".pkl", ".bin", ".ckpt", ".joblib", "")


@dataclass(frozen=True)
class Case:
    family: str
    path: Path
    kind: str  # "model" or "data"
    model: str = ""  # for data: which probe model it is checked against ("mlp12", "cnn16")


class _Writer:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.cases: list[Case] = []

    def add(self, family: str, name: str, data: bytes, kind: str = "model", model: str = "") -> None:
        path = self.root / family / f"{len(self.cases):04d}" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.cases.append(Case(family, path, kind, model))


def _opset() -> list[onnx.OperatorSetIdProto]:
    return [helper.make_opsetid("", 17)]


def _model(nodes: list, inits: list | None = None, *, sparse: list | None = None, functions: list | None = None,
           extra_opsets: list | None = None, x_shape: list | None = None) -> bytes:
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape or [4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, x_shape or [4])],
                          initializer=inits or [], sparse_initializer=sparse or [])
    m = helper.make_model(g, opset_imports=_opset() + (extra_opsets or []), functions=functions or [], ir_version=9)
    return m.SerializeToString()


# --- pickles -------------------------------------------------------------------------------------
class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        import os

        return (os.system, (f"touch {self.marker}",))


def _torch_save_zip(pkl: bytes, root: str = "archive") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(f"{root}/data.pkl", pkl)
        zf.writestr(f"{root}/version", "3\n")
    return buf.getvalue()


def pickles(w: _Writer, markers: Path) -> None:
    for proto in range(6):
        raw = pickle.dumps(_Payload(markers / f"pickle-p{proto}"), protocol=proto)
        for ext in EXTS:
            w.add("pickle", f"payload{ext}", raw)
        w.add("pickle", "model.pt", _torch_save_zip(raw))
        w.add("pickle", "model.onnx", _torch_save_zip(raw, "weights"))
        w.add("pickle", "data.npz", _torch_save_zip(raw))
    cmd = f"touch {markers / 'stack-global'}".encode()
    tricky = b"\x80\x04U\x02osU\x06system\x93" + b"U" + bytes([len(cmd)]) + cmd + b"\x85R."
    for ext in (".pkl", ".pt", ".onnx"):
        w.add("pickle", f"short-binstring{ext}", tricky)
    # a TorchScript-looking zip whose data.pkl hides os.system behind SHORT_BINSTRING
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("m/data.pkl", tricky)
        zf.writestr("m/constants.pkl", pickle.dumps((), protocol=2))
        zf.writestr("m/code/__torch__.py", "")
        zf.writestr("m/version", "3\n")
    w.add("pickle", "scripted.pt", buf.getvalue())


# --- .pt2 shape expressions ----------------------------------------------------------------------
def _pt2_base() -> bytes:
    import torch

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x)

    ep = torch.export.export(Net().eval(), (torch.randn(2, 4),),
                             dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=64)}})
    buf = io.BytesIO()
    torch.export.save(ep, buf)
    return buf.getvalue()


def pt2_expressions(w: _Writer, markers: Path, honey_paths: list[Path]) -> None:
    base = _pt2_base()
    payloads = [
        "__import__('os').system('touch {m}')", "Symbol('s0').__class__.__init__.__globals__",
        "exec(\"open('{m}','w')\")", "eval('__import__(\"os\").system(\"touch {m}\")')",
        "Lambda(s0, __import__('os').system('touch {m}'))", "s0 ** 99999999999", "open('{h}').read()",
        "Symbol('s0', integer=__import__('os').system('touch {m}'))", "(lambda: 0)()", "s0.__getattribute__('x')",
        "Integer(__import__('os').getpid())", "Max(s0, __import__('subprocess'))",
    ]
    for i, p in enumerate(payloads):
        text = p.format(m=markers / f"pt2-{i}", h=honey_paths[i % len(honey_paths)])
        data = _replace_expr(base, text)
        w.add("pt2-expr", "model.pt2", data)
        w.add("pt2-expr", "model.onnx", data)


def _replace_expr(data: bytes, payload: str) -> bytes:
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            raw = src.read(info)
            if info.filename.endswith(".json") and b'"expr_str"' in raw:
                doc = json.loads(raw)
                _set_exprs(doc, payload)
                raw = json.dumps(doc).encode()
            dst.writestr(info, raw)
    return out.getvalue()


def _set_exprs(node: object, payload: str) -> None:
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, dict):
            for k in list(n):
                if k == "expr_str":
                    n[k] = payload
                else:
                    stack.append(n[k])
        elif isinstance(n, list):
            stack.extend(n)


# --- ONNX external data --------------------------------------------------------------------------
def _external(name: str, location: str, n: int = 4) -> TensorProto:
    t = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=[n])
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", str(4 * n))):
        t.external_data.add(key=k, value=v)
    return t


def _ext_models(loc: str) -> dict[str, bytes]:
    add = helper.make_node("Add", ["x", "c"], ["y"])
    then_g = helper.make_graph([helper.make_node("Add", ["x", "w"], ["t"])], "then", [],
                               [helper.make_tensor_value_info("t", TensorProto.FLOAT, [4])], [_external("w", loc)])
    else_g = helper.make_graph([helper.make_node("Identity", ["x"], ["e"])], "else", [],
                               [helper.make_tensor_value_info("e", TensorProto.FLOAT, [4])])
    cond = numpy_helper.from_array(np.array(True), "cond")
    fn = helper.make_function("local", "AddK", ["a"], ["b"],
                              [helper.make_node("Constant", [], ["k"], value=_external("k", loc)),
                               helper.make_node("Add", ["a", "k"], ["b"])], _opset())
    values = _external("s", loc, 2)
    sparse = helper.make_sparse_tensor(values, numpy_helper.from_array(np.array([0, 2], np.int64), "si"), [4])
    return {
        "initializer": _model([add], [_external("c", loc)]),
        "constant": _model([helper.make_node("Constant", [], ["c"], value=_external("c", loc)), add]),
        "if-subgraph": _model([helper.make_node("If", ["cond"], ["y"], then_branch=then_g, else_branch=else_g)],
                              [cond]),
        "function-body": _model([helper.make_node("AddK", ["x"], ["y"], domain="local")], functions=[fn],
                                extra_opsets=[helper.make_opsetid("local", 1)]),
        "sparse-initializer": _model([helper.make_node("Add", ["x", "s"], ["y"])], sparse=[sparse]),
    }


def _zip(members: dict[str, bytes], symlink: tuple[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink[0])
            info.external_attr = 0o120777 << 16
            zf.writestr(info, symlink[1])
    return buf.getvalue()


def onnx_external(w: _Writer, honey_paths: list[Path]) -> None:
    locations = [str(honey_paths[0]), str(honey_paths[1]), "honey.txt", "../honey.txt", "../../outside/honey.txt",
                 "./honey.txt", "a/../../honey.txt", "\\\\server\\share\\honey.txt"]
    for loc in locations:
        for where, data in _ext_models(loc).items():
            w.add("onnx-external", f"{where}.onnx", data)
            w.add("onnx-external", f"{where}.zip", _zip({"model.onnx": data}))
    for where, data in _ext_models("data.bin").items():
        w.add("onnx-external", f"{where}-symlink.zip", _zip({"model.onnx": data}, ("data.bin", str(honey_paths[0]))))


# --- ONNX resource bombs -------------------------------------------------------------------------
def _chain(n: int) -> bytes:
    nodes = [helper.make_node("Relu", [f"t{i}" if i else "x"], [f"t{i + 1}" if i + 1 < n else "y"]) for i in range(n)]
    return _model(nodes)


def onnx_bombs(w: _Writer) -> None:
    big = np.array([100_000, 100_000], np.int64)
    red = [helper.make_node("ReduceSum", ["c"], ["r"], keepdims=0), helper.make_node("Add", ["x", "r"], ["y"])]
    w.add("onnx-bomb", "constant-of-shape.onnx", _model(
        [helper.make_node("ConstantOfShape", ["s"], ["c"], value=numpy_helper.from_array(np.ones(1, np.float32))), *red],
        [numpy_helper.from_array(big, "s")]))
    w.add("onnx-bomb", "expand.onnx", _model([helper.make_node("Expand", ["a", "s"], ["c"]), *red],
                                             [numpy_helper.from_array(np.ones((1, 1), np.float32), "a"),
                                              numpy_helper.from_array(big, "s")]))
    w.add("onnx-bomb", "tile.onnx", _model([helper.make_node("Tile", ["a", "s"], ["c"]), *red],
                                           [numpy_helper.from_array(np.ones((1, 1), np.float32), "a"),
                                            numpy_helper.from_array(big, "s")]))
    w.add("onnx-bomb", "range.onnx", _model([helper.make_node("Range", ["a", "b", "d"], ["c"]), *red], [
        numpy_helper.from_array(np.array(0.0, np.float32), "a"), numpy_helper.from_array(np.array(1e13, np.float32), "b"),
        numpy_helper.from_array(np.array(1.0, np.float32), "d")]))
    body = helper.make_graph([helper.make_node("Identity", ["cond_in"], ["cond_out"]),
                              helper.make_node("Add", ["v_in", "v_in"], ["v_out"])], "body",
                             [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                              helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
                              helper.make_tensor_value_info("v_in", TensorProto.FLOAT, [4])],
                             [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
                              helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [4])])
    w.add("onnx-bomb", "loop-1e15.onnx", _model([helper.make_node("Loop", ["n", "t", "x"], ["y"], body=body)], [
        numpy_helper.from_array(np.array(10**15, np.int64), "n"), numpy_helper.from_array(np.array(True), "t")]))
    w.add("onnx-bomb", "sum-50k.onnx", _model([helper.make_node("Sum", ["x"] * 50_000, ["y"])]))
    for n in (60_000, 120_000):
        w.add("onnx-bomb", f"chain-{n}.onnx", _chain(n))
    declared = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[10**6, 10**6])
    w.add("onnx-bomb", "declared-1e12.onnx", _model([helper.make_node("Add", ["x", "w"], ["y"])], [declared]))
    w.add("onnx-bomb", "huge-input.onnx", _model([helper.make_node("Relu", ["x"], ["y"])],
                                                 x_shape=[1, 3, 2048 * 16, 2048 * 16]))
    w.add("onnx-bomb", "huge-attr.onnx", _model([helper.make_node("Constant", [], ["c"], value_ints=list(range(2**21))),
                                                 helper.make_node("Relu", ["x"], ["y"])]))
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])
    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "leaf", [], [out])
    for i in range(20):
        g = helper.make_graph([helper.make_node("If", ["c"], ["y"], then_branch=g,
                                                else_branch=helper.make_graph([helper.make_node("Identity", ["x"], ["y"])],
                                                                              f"e{i}", [], [out]))], f"b{i}", [], [out])
    nested = helper.make_model(helper.make_graph(list(g.node), "g", [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, [4]), helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
        [out]), opset_imports=_opset())
    w.add("onnx-bomb", "nested-if-20.onnx", nested.SerializeToString())


# --- damaged copies of a real model --------------------------------------------------------------
def damaged(w: _Writer, original: bytes, n_trunc: int = 30, n_flip: int = 40) -> None:
    rng = np.random.default_rng(7)
    for i in range(n_trunc):
        cut = int(len(original) * (i + 1) / (n_trunc + 1))
        w.add("damaged", "truncated.onnx", original[:cut])
    for _ in range(n_flip):
        data = bytearray(original)
        for pos in rng.integers(0, len(data), size=int(rng.integers(1, 8))):
            data[int(pos)] ^= 1 << int(rng.integers(0, 8))
        w.add("damaged", "flipped.onnx", bytes(data))


# --- zips ----------------------------------------------------------------------------------------
def zips(w: _Writer, model: bytes) -> None:
    for name in ("../evil.onnx", "/abs/evil.onnx", "C:/evil.onnx", "a/../../evil.onnx", "..\\evil.onnx"):
        w.add("zip", "slip.zip", _zip({name: model}))
        w.add("zip", "slip-data.zip", _zip({"model.onnx": model, name: b"\0" * 16}))
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("model.onnx", model)
        zf.writestr("model.onnx.data", b"\0" * (700 * 2**20))
    w.add("zip", "bomb.zip", bomb.getvalue())
    w.add("zip", "many.zip", _zip({f"f{i}.txt": b"" for i in range(20_000)}))
    w.add("zip", "two-models.zip", _zip({"a.onnx": model, "b.onnx": model}))
    w.add("zip", "nested.zip", _zip({"inner.zip": _zip({"model.onnx": model})}))
    good = bytearray(_zip({"model.onnx": model}))
    crc_at = good.find(b"PK\x03\x04") + 14
    w.add("zip", "bad-crc.zip", bytes(good[:crc_at]) + b"\xde\xad\xbe\xef" + bytes(good[crc_at + 4:]))
    enc = bytearray(good)
    enc[6] |= 1  # the "encrypted" flag
    w.add("zip", "encrypted.zip", bytes(enc))
    w.add("zip", "empty.zip", _zip({}))
    w.add("zip", "truncated.zip", bytes(good[: len(good) // 2]))


# --- data files ----------------------------------------------------------------------------------
def _npy_header(shape: tuple, descr: str = "<f4", data: bytes = b"") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue() + data


def npz_attacks(w: _Writer, markers: Path) -> None:
    add = lambda name, members: w.add("npz", name, _zip(members), "data", "mlp12")  # noqa: E731
    add("declared-80gb.npz", {"x.npy": _npy_header((10_000_000_000, 2))})
    add("declared-big-y.npz", {"x.npy": _npy_header((2, 12), data=b"\0" * 96), "y.npy": _npy_header((10**11,), "<i8")})
    add("truncated.npz", {"x.npy": _npy_header((1000, 12), data=b"\0" * 64)})
    add("object.npz", {"x.npy": _npy_header((2,), "|O", pickle.dumps(_Payload(markers / "npz-object"), protocol=2))})
    add("negative.npz", {"x.npy": _npy_header((-5, 12))})
    add("no-x.npz", {"a.npy": _npy_header((2, 12), data=b"\0" * 96)})
    add("bad-header.npz", {"x.npy": b"\x93NUMPY\x01\x00\x10\x00{'descr': eval('1')}"})
    add("pickle-member.npz", {"x.npy": pickle.dumps(_Payload(markers / "npz-member"))})
    add("huge-label.npz", {"x.npy": _npy_header((2, 12), data=b"\0" * 96),
                           "y.npy": _npy_header((2,), "<i8", struct.pack("<qq", 0, 10**15))})
    add("nan-label.npz", {"x.npy": _npy_header((2, 12), data=b"\0" * 96),
                          "y.npy": _npy_header((2,), "<f8", struct.pack("<dd", float("nan"), 1.0))})
    add("slip.npz", {"../x.npy": _npy_header((2, 12), data=b"\0" * 96)})
    w.add("npz", "not-a-zip.npz", b"\x93NUMPY garbage", "data", "mlp12")


def csv_attacks(w: _Writer) -> None:
    add = lambda name, data: w.add("csv", name, data, "data", "mlp12")  # noqa: E731
    row = ",".join(["1"] * 200_000).encode()
    add("200k-columns.csv", row + b"\n" + row + b"\n")
    add("huge-cell.csv", b"a,label\n" + b"9" * 200_000 + b",1\n")
    add("huge-line.csv", b"a\n" + b"1" * 3_000_000 + b"\n")
    add("binary.csv", bytes(range(256)) * 100)
    add("formula.csv", b",".join([f"f{i}".encode() for i in range(12)]) + b",label\n" +
        b",".join([b"=cmd|'/c calc'!A1"] * 12) + b",1\n")
    header = b",".join([f"f{i}".encode() for i in range(12)]) + b",label\n"
    add("huge-label.csv", header + b",".join([b"0"] * 12) + b",99999999999999999999\n")
    add("negative-label.csv", header + b",".join([b"0"] * 12) + b",-3\n")
    add("quotes.csv", b'"' * 100_000)
    add("empty.csv", b"")
    add("honey-path.csv", b"path\n/etc/passwd\n")


def _png(w: int = 1, h: int = 1) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (w, h)).save(buf, "PNG")
    return buf.getvalue()


def _png_bomb() -> bytes:
    import zlib

    width = height = 60_000
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))  # noqa: E731
    data = zlib.compress(b"\0" * (3 * width + 1) * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def image_zip_attacks(w: _Writer) -> None:
    add = lambda name, members: w.add("image-zip", name, _zip(members), "data", "cnn16")  # noqa: E731
    png = _png()
    add("huge-class.zip", {"0/a.png": png, "99999999999999999999/b.png": png})
    add("many-classes.zip", {f"{i}/a.png": png for i in range(100_001)})
    add("png-bomb.zip", {"0/bomb.png": _png_bomb(), "1/a.png": png})
    add("slip.zip", {"../0/a.png": png, "1/b.png": png})
    add("not-images.zip", {"0/a.png": b"not a png", "1/b.png": png})
    add("no-classes.zip", {"a.png": png})
    add("gif-frames.zip", {"0/a.gif": png, "1/b.png": png})
    add("tiny-pngs.zip", {f"{i % 2}/{i}.png": png for i in range(60_000)})


# --- TorchScript (sandboxed conversion) -----------------------------------------------------------
def torchscript(w: _Writer, markers: Path, honey_paths: list[Path]) -> None:
    import torch

    def save(module: torch.nn.Module) -> bytes:
        buf = io.BytesIO()
        torch.jit.save(torch.jit.script(module), buf)
        return buf.getvalue()

    class ReadAtLoad(torch.nn.Module):
        def __init__(self, path: str) -> None:
            super().__init__()
            self.path = path
            self.data = torch.zeros(len(HONEY), dtype=torch.uint8)

        @torch.jit.export
        def __getstate__(self) -> tuple[str, bool]:
            return (self.path, self.training)

        @torch.jit.export
        def __setstate__(self, state: tuple[str, bool]) -> None:
            self.path = state[0]
            self.data = torch.from_file(self.path, False, 20, dtype=torch.uint8)
            self.training = state[1]

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.data.to(torch.float32)

    class ReadInForward(torch.nn.Module):
        def __init__(self, path: str) -> None:
            super().__init__()
            self.path = path

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + torch.from_file(self.path, False, 20, dtype=torch.uint8).to(torch.float32)

    class WriteInForward(torch.nn.Module):
        def __init__(self, path: str) -> None:
            super().__init__()
            self.path = path

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            torch.save(x, self.path)
            return x * 2

    class Forever(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            while bool(x.sum() > -1.0):
                x = x + 1.0
            return x

    w.add("torchscript", "read-at-load.pt", save(ReadAtLoad(str(honey_paths[0]))))
    w.add("torchscript", "read-relative.pt", save(ReadAtLoad("honey.txt")))
    w.add("torchscript", "read-in-forward.pt", save(ReadInForward(str(honey_paths[1]))))
    w.add("torchscript", "write-marker.pt", save(WriteInForward(str(markers / "torchscript-write"))))
    w.add("torchscript", "forever.pt", save(Forever()))


def generate(root: Path, markers: Path, honey_paths: list[Path], real_model: bytes,
             with_torch: bool = True) -> list[Case]:
    """Write the corpus under ``root``; returns its cases (family, path, kind, probe model)."""
    w = _Writer(root)
    pickles(w, markers)
    onnx_external(w, honey_paths)
    onnx_bombs(w)
    damaged(w, real_model)
    zips(w, real_model)
    npz_attacks(w, markers)
    csv_attacks(w)
    image_zip_attacks(w)
    if with_torch:
        pt2_expressions(w, markers, honey_paths)
        torchscript(w, markers, honey_paths)
    return w.cases


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "hostile_corpus")
    (out / "markers").mkdir(parents=True, exist_ok=True)
    honey = [out / "elsewhere" / "honey.txt", out / "honey.txt"]
    for h in honey:
        h.parent.mkdir(parents=True, exist_ok=True)
        h.write_bytes(HONEY)
    real = (Path(__file__).resolve().parent.parent / "sample_models" / "mlp_tabular.onnx").read_bytes()
    cases = generate(out / "corpus", out / "markers", honey, real)
    counts: dict[str, int] = {}
    for c in cases:
        counts[c.family] = counts.get(c.family, 0) + 1
    print(json.dumps(counts, indent=1), len(cases))
