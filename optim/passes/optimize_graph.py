"""Graph optimisation / operator fusion with ONNX Runtime, saved as a model you can download.

ORT rewrites the graph when it opens a session; ``SessionOptions.optimized_model_filepath`` makes it
write the result. Levels:

- ``basic``: constant folding, redundant-node removal, Conv+BatchNorm / Conv+Add folding — portable
  standard ONNX ops.
- ``extended``: adds fusions into ORT contrib ops (``FusedConv`` with its activation, ``FusedGemm``,
  GELU / LayerNorm / attention fusions). They run in any ONNX Runtime CPU build, not in other runtimes.
- ``all``: adds layout optimisations (NCHWc ``Conv``/``ReorderInput``/``ReorderOutput`` in domain
  ``com.microsoft.nchwc``) chosen for *this* CPU's vector width (AVX2 vs AVX-512 block sizes). The
  saved file is only guaranteed to run on the same kind of CPU: ``portable=False`` in its meta.

The op histogram before and after is stored in the meta so the UI can show what fused.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal, get_args

import onnx
import onnxruntime as ort

from optim.errors import PassUnavailableError
from optim.handle import ModelHandle
from optim.measure.session import OPT_LEVELS
from optim.passes._quant.core import load_embedded, op_histogram, scratch_dir
from optim.passes.base import PassContext, check_literals, register

Level = Literal["basic", "extended", "all"]  # the ORT levels that rewrite the graph (measure.session.OPT_LEVELS)
LEVELS = {name: OPT_LEVELS[name] for name in get_args(Level)}
PORTABILITY = {
    "basic": "Standard ONNX ops: runs in any ONNX runtime.",
    "extended": "Uses ONNX Runtime contrib ops (e.g. FusedConv): runs in ONNX Runtime on any CPU.",
    "all": "Uses NCHWc layouts tuned to this CPU's vector width: run it only on the same CPU type, "
    "or re-optimise on the target.",
}


@dataclass(frozen=True)
class OptimizeGraphConfig:
    level: Level = field(
        default="extended",
        metadata={
            "help": "basic: folding and elimination (portable ONNX). extended: + operator fusion into ORT ops. "
            "all: + CPU-specific memory layouts (NCHWc); the saved model runs only on the same CPU type.",
            "choices": list(LEVELS),
        },
    )

    def __post_init__(self) -> None:
        check_literals(self)


def optimize_model(model_bytes: bytes, level: str) -> onnx.ModelProto:
    """Run ORT's optimiser at ``level`` on a serialized model; returns the optimised ModelProto."""
    with scratch_dir() as d:
        src = d / "in.onnx"
        src.write_bytes(model_bytes)
        out = d / "opt.onnx"
        so = ort.SessionOptions()
        so.graph_optimization_level = LEVELS[level]
        so.optimized_model_filepath = str(out)
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        try:
            ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
            raise PassUnavailableError(
                f"ONNX Runtime could not open this model to optimise it ({str(exc).splitlines()[0][:300]}). "
                "Check that the model runs before optimising."
            ) from exc
        return load_embedded(out)


@register(
    "optimize_graph",
    OptimizeGraphConfig,
    "Graph optimisation",
    "Let ONNX Runtime fold and fuse operators (e.g. Conv+BN+ReLU) and save the optimised graph.",
)
def run(handle: ModelHandle, config: OptimizeGraphConfig, ctx: PassContext | None = None) -> ModelHandle:
    ctx = ctx or PassContext()
    ctx.report(0.0, f"optimising graph ({config.level})")
    logging.getLogger("onnxruntime").setLevel(logging.ERROR)
    before = op_histogram(handle.model)
    model = optimize_model(handle.model_bytes, config.level)
    after = op_histogram(model)
    ctx.report(1.0, "graph optimisation: done")
    meta = dict(
        opt_level=config.level,
        op_histogram_before=before,
        op_histogram_after=after,
        nodes_before=sum(before.values()),
        nodes_after=sum(after.values()),
        portable=config.level != "all",
        portability_note=PORTABILITY[config.level],
    )
    if "effective_size_bytes" in handle.meta and handle.meta.get("executable", True):
        meta["effective_size_bytes"] = len(model.SerializeToString())
    return handle.derive(model, f"optimize_graph {config.level}", **meta)
