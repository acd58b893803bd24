"""ONNX Runtime sessions and feeds: the one place a measurement session is configured.

One intra-op thread, sequential execution and an explicit optimisation level by default (latency
with 2 threads varies far more run to run); CPU unless another provider is asked for and present.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from optim.errors import ConfigError, MissingInputError
from optim.handle import ModelHandle
from optim.io.external import assert_inline

OPT_LEVELS: dict[str, ort.GraphOptimizationLevel] = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
_PROVIDER_ALIASES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
_ORT_TO_NUMPY = {
    "tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int16)": np.int16, "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_,
}
ModelLike = ModelHandle | onnx.ModelProto | Path  # a Path: an ONNX file with its weights (ORT reads it itself)


# --- sessions ------------------------------------------------------------------------------------
def model_proto(handle_or_model: ModelLike) -> onnx.ModelProto:
    if isinstance(handle_or_model, Path):
        return onnx.load_model(str(handle_or_model))
    return handle_or_model.model if isinstance(handle_or_model, ModelHandle) else handle_or_model


def model_bytes(handle_or_model: ModelLike) -> bytes:
    if isinstance(handle_or_model, Path):
        return handle_or_model.read_bytes()
    if isinstance(handle_or_model, ModelHandle):
        return handle_or_model.model_bytes
    return handle_or_model.SerializeToString()


def _resolve_providers(providers: list[str] | tuple[str, ...] | None) -> list[str]:
    if not providers:
        return ["CPUExecutionProvider"]
    available = ort.get_available_providers()
    resolved = [_PROVIDER_ALIASES.get(p.lower(), p) for p in providers]
    missing = [p for p in resolved if p not in available]
    if missing:
        raise ConfigError(
            f"providers: {', '.join(missing)} not available in this onnxruntime build "
            f"(available: {', '.join(available)}); use 'cpu'."
        )
    if "CPUExecutionProvider" not in resolved:
        resolved.append("CPUExecutionProvider")  # fallback for ops the accelerator lacks
    return resolved


def make_session(
    handle_or_model: ModelLike,
    threads: int = 1,
    opt_level: str = "all",
    providers: list[str] | tuple[str, ...] | None = None,
    profile_prefix: str | Path | None = None,
    optimized_path: str | Path | None = None,
) -> ort.InferenceSession:
    """An InferenceSession with explicit intra/inter-op threads, sequential execution and ``opt_level``.

    ``providers`` defaults to CPU; "cuda" (or the full provider name) is accepted when this onnxruntime
    build has it and raises ConfigError otherwise. ``profile_prefix`` turns on ORT profiling;
    ``optimized_path`` saves the graph this session optimised (its node names match its profile); its weights
    go to ``<name>.data`` beside it (readers want the graph, not a second copy of the weights in memory).
    """
    if opt_level not in OPT_LEVELS:
        raise ConfigError(f"opt_level: {opt_level!r} is not one of {', '.join(OPT_LEVELS)}.")
    if int(threads) < 1:
        raise ConfigError(f"threads: must be at least 1, got {threads}.")
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = OPT_LEVELS[opt_level]
    so.log_severity_level = 3
    if profile_prefix is not None:
        so.enable_profiling = True
        so.profile_file_prefix = str(profile_prefix)
    if optimized_path is not None:
        so.optimized_model_filepath = str(optimized_path)
        so.add_session_config_entry("session.optimized_model_external_initializers_file_name",
                                    Path(optimized_path).name + ".data")
        so.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    if isinstance(handle_or_model, Path):  # a file ORT reads itself (no Python copy of its bytes)
        assert_inline(onnx.load_model(str(handle_or_model), load_external_data=False))
        source: str | bytes = str(handle_or_model)
    else:
        assert_inline(model_proto(handle_or_model))  # never a session that would read files next to the process
        source = model_bytes(handle_or_model)
    return ort.InferenceSession(source, so, providers=_resolve_providers(providers))


def np_dtype(ort_type: str) -> np.dtype:
    if ort_type not in _ORT_TO_NUMPY:
        raise MissingInputError(f"Input type {ort_type} is not supported for measurement; use float inputs.")
    return np.dtype(_ORT_TO_NUMPY[ort_type])


def is_symbolic(dim: Any) -> bool:
    return not isinstance(dim, int) or dim <= 0


def other_inputs(model: onnx.ModelProto, batch: int, first: str) -> dict[str, np.ndarray]:
    """Synthesised values for every input but ``first`` (models with one input need none)."""
    if sum(1 for _ in graph_inputs(model)) <= 1:
        return {}
    from optim.io.load import synthesize_inputs  # lazy: model_io imports heavy loaders

    feeds = synthesize_inputs(model, batch=batch, seed=0)
    return {k: v for k, v in feeds.items() if k != first}


def fixed_batch(model: onnx.ModelProto, lead: Any) -> int | None:
    """The batch the model must be fed (its first input's fixed or recorded leading dim), None when free."""
    from optim.io.shapes import recorded_batch

    recorded = recorded_batch(model)
    if recorded is not None:
        return recorded
    return None if is_symbolic(lead) else int(lead)


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    inits = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


# --- prediction ----------------------------------------------------------------------------------
