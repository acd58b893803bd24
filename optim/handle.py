"""ModelHandle: the one object that travels between loading, passes, measurement and the store.

The ONNX graph is the canonical artifact: every variant is an ONNX model with its weights embedded
that ONNX Runtime can open. Every node of a handle's main graph has a name (unnamed ones are named
on construction, :func:`optim.graph.names.name_nodes`). A handle is treated as immutable: passes build a new handle with
:meth:`ModelHandle.derive` and never change ``handle.model`` in place.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import onnx

from optim.graph.names import name_nodes


@dataclass(frozen=True, eq=False)
class ModelHandle:
    """An ONNX model plus what we know about it.

    Attributes:
        model: the ONNX ModelProto, weights embedded, input shapes static (batch fixed to 1 unless a
            pass says otherwise; ``measure`` re-batches as needed).
        name: short human name ("resnet_digits", "upload:mynet.onnx").
        source_format: "onnx", "onnx-zip", "torchscript", "pt2" (what the user gave us).
        meta: free-form facts: e.g. ``task``, ``class_names``, ``preprocessing`` from a sample manifest,
            ``history`` (list of pass descriptions applied so far), ``executable`` (False when a pass
            only simulates a precision), ``bits``, ``prune_ratio``, ``prune_kind``.
    """

    model: onnx.ModelProto
    name: str
    source_format: str = "onnx"
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # kernels are traced back to nodes by name (optim.graph.names): an unnamed node gets its key once, here
        name_nodes(self.model)

    @cached_property
    def model_bytes(self) -> bytes:
        return self.model.SerializeToString()

    @cached_property
    def content_hash(self) -> str:
        """sha256 of the serialized model (hex); keys the store and the UI caches."""
        return hashlib.sha256(self.model_bytes).hexdigest()

    @property
    def size_bytes(self) -> int:
        return len(self.model_bytes)

    @property
    def history(self) -> list[str]:
        return list(self.meta.get("history", []))

    def derive(self, model: onnx.ModelProto, step: str, **meta_updates: Any) -> ModelHandle:
        """A new handle for ``model`` (already a fresh object), recording ``step`` in the history."""
        meta = copy.deepcopy(self.meta)
        meta.update(meta_updates)
        meta["history"] = [*self.meta.get("history", []), step]
        return ModelHandle(model=model, name=self.name, source_format=self.source_format, meta=meta)

    def copy_model(self) -> onnx.ModelProto:
        """A deep copy of the ONNX model, for a pass to edit."""
        m = onnx.ModelProto()
        m.CopyFrom(self.model)
        return m
