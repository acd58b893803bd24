"""Plain-data forms of what jobs carry: models as ONNX bytes + JSON facts, datasets as ``.npy`` bytes, tables
as JSON columns. Nothing is pickled in either direction (arrays are read with ``allow_pickle=False``)."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import onnx
import pandas as pd

from optim.errors import MalformedModelError
from optim.handle import ModelHandle
from optim.io.data import Dataset


def plain(obj: Any) -> Any:
    """``obj`` with NumPy scalars/arrays, tuples and sets turned into JSON types (round-trips through json)."""
    return json.loads(json.dumps(obj, default=_default))


def _default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    return str(obj)


# --- models --------------------------------------------------------------------------------------
def handle_blobs(handle: ModelHandle, prefix: str = "model") -> dict[str, bytes]:
    return {prefix: handle.model_bytes}


def handle_facts(handle: ModelHandle) -> dict[str, Any]:
    return {"name": handle.name, "source_format": handle.source_format, "meta": plain(handle.meta)}


def handle_from(blobs: dict[str, bytes], facts: dict[str, Any] | None = None, prefix: str = "model") -> ModelHandle:
    model = onnx.ModelProto()
    try:
        model.ParseFromString(blobs[prefix])
    except Exception as exc:  # noqa: BLE001 - protobuf decode errors
        raise MalformedModelError(f"A job returned a damaged model ({str(exc)[:200]}).") from exc
    facts = facts or {}
    return ModelHandle(model=model, name=str(facts.get("name", "model")),
                       source_format=str(facts.get("source_format", "onnx")), meta=dict(facts.get("meta") or {}))


# --- arrays and datasets -------------------------------------------------------------------------
def array_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(a), allow_pickle=False)  # np.save writes any layout; a 0-d array stays 0-d
    return buf.getvalue()


def array_from(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def dataset_blobs(ds: Dataset | None, prefix: str) -> tuple[dict[str, Any] | None, dict[str, bytes]]:
    """(facts, blobs) of a dataset; (None, {}) for None."""
    if ds is None:
        return None, {}
    blobs = {f"{prefix}.x": array_bytes(ds.x)}
    if ds.y is not None:
        blobs[f"{prefix}.y"] = array_bytes(ds.y)
    feeds = list((ds.feeds or {}).items())
    for i, (_, arr) in enumerate(feeds):
        blobs[f"{prefix}.feed{i}"] = array_bytes(arr)
    consts = list((ds.constants or {}).items())
    for i, (_, arr) in enumerate(consts):
        blobs[f"{prefix}.const{i}"] = array_bytes(arr)
    return {"name": ds.name, "class_names": ds.class_names, "x_name": ds.x_name,
            "feeds": [k for k, _ in feeds] if ds.feeds is not None else None,
            "constants": [k for k, _ in consts] if consts else None}, blobs


def dataset_from(facts: dict[str, Any] | None, blobs: dict[str, bytes], prefix: str) -> Dataset | None:
    if facts is None or f"{prefix}.x" not in blobs:
        return None
    y = array_from(blobs[f"{prefix}.y"]) if f"{prefix}.y" in blobs else None
    names = facts.get("class_names")
    keys = facts.get("feeds")
    feeds = None if keys is None else {str(k): array_from(blobs[f"{prefix}.feed{i}"]) for i, k in enumerate(keys)}
    ckeys = facts.get("constants")
    consts = None if not ckeys else {str(k): array_from(blobs[f"{prefix}.const{i}"]) for i, k in enumerate(ckeys)}
    x_name = facts.get("x_name")
    return Dataset(x=array_from(blobs[f"{prefix}.x"]), y=y, name=str(facts.get("name", prefix)),
                   class_names=[str(n) for n in names] if names is not None else None,
                   x_name=None if x_name is None else str(x_name), feeds=feeds, constants=consts)


def pack_datasets(named: dict[str, Dataset | None]) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Several datasets, the same object sent once (``calib is test`` stays one copy)."""
    facts: dict[str, Any] = {}
    blobs: dict[str, bytes] = {}
    seen: dict[int, str] = {}
    for name, ds in named.items():
        if ds is not None and id(ds) in seen:
            facts[name] = {"same_as": seen[id(ds)]}
            continue
        f, b = dataset_blobs(ds, name)
        facts[name] = f
        blobs.update(b)
        if ds is not None:
            seen[id(ds)] = name
    return facts, blobs


def unpack_datasets(facts: dict[str, Any], blobs: dict[str, bytes]) -> dict[str, Dataset | None]:
    out: dict[str, Dataset | None] = {}
    for name, f in facts.items():
        if isinstance(f, dict) and "same_as" in f:
            out[name] = out[f["same_as"]]
        else:
            out[name] = dataset_from(f, blobs, name)
    return out


# --- tables --------------------------------------------------------------------------------------
def frame_plain(df: pd.DataFrame) -> dict[str, Any]:
    return {"columns": [str(c) for c in df.columns], "data": plain(df.to_dict(orient="list"))}


def frame_from(d: dict[str, Any]) -> pd.DataFrame:
    data = d.get("data") or {}
    return pd.DataFrame({c: data.get(c, []) for c in d.get("columns", [])})
