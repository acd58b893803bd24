"""Input shapes of an ONNX model: what the inputs declare, fixing dynamic dims, synthesising feeds.

Used by :mod:`optim.io.load` (``fix_shapes`` while loading) and by everything that needs inputs without
user data (``synthesize_inputs``: latency, fidelity on synthetic data, calibration fallbacks).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from optim.errors import ConfigError, DynamicShapeError, MissingInputError, ShapeMismatchError

MAX_SYNTH_BYTES = 1 << 30  # one synthetic feed (float64 while drawn), bounded before allocating


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


SHAPES_KEY = "optim.input_shapes"  # metadata_props entry: shapes given by the user but kept out of the graph
SAMPLE_RATE_NAMES = ("sr", "sample_rate", "sampling_rate")
DEFAULT_SAMPLE_RATE = 16000
_INDEX_PASSTHROUGH = {"Cast", "Reshape", "Unsqueeze", "Squeeze", "Flatten", "Identity", "Expand"}


def record_shapes(model: onnx.ModelProto, input_shapes: dict[str, Sequence[int]]) -> None:
    """Keep ``input_shapes`` in the model's metadata instead of its graph (see ``recorded_shapes``)."""
    text = ";".join(f"{k}={','.join(str(int(d)) for d in v)}" for k, v in input_shapes.items())
    kept = [p for p in model.metadata_props if p.key != SHAPES_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    model.metadata_props.add(key=SHAPES_KEY, value=text)


def recorded_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """Shapes the loader recorded for inputs whose dims stay symbolic in the graph (``{}`` when none)."""
    for p in model.metadata_props:
        if p.key == SHAPES_KEY and p.value:
            return dict(parse_input_shape(part) for part in p.value.split(";") if part)
    return {}


def recorded_batch(model: onnx.ModelProto) -> int | None:
    """The first input's batch when its shape was recorded (the model is then fed exactly that batch)."""
    specs = input_specs(model)
    given = recorded_shapes(model).get(specs[0].name) if specs else None
    return int(given[0]) if given else None


def _index_ranges(model: onnx.ModelProto) -> dict[str, int]:
    """input name → number of rows of the table it indexes (``Gather`` on an initializer: an embedding)."""
    rows = {t.name: list(t.dims) for t in model.graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for i in node.input:
            consumers.setdefault(i, []).append(node)
    out: dict[str, int] = {}
    for spec in input_specs(model):
        frontier, seen = [spec.name], set()
        while frontier:
            name = frontier.pop()
            seen.add(name)
            for node in consumers.get(name, []):
                if node.op_type == "Gather" and len(node.input) > 1 and node.input[1] == name \
                        and node.input[0] in rows:
                    axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
                    dims = rows[node.input[0]]
                    if dims and -len(dims) <= axis < len(dims):
                        out[spec.name] = min(out.get(spec.name, dims[axis]), int(dims[axis]))
                elif node.op_type in _INDEX_PASSTHROUGH and node.input[0] == name:
                    frontier.extend(o for o in node.output if o not in seen)
    return out


def index_ranges(model: onnx.ModelProto) -> dict[str, int]:
    """Input name → rows of the embedding table it indexes (valid ids are 0 … rows − 1); inputs that index
    none are absent."""
    return _index_ranges(model)


def constant_role(name: str, rank: int) -> str | None:
    """What a synthesised value of an input named ``name`` means when its value is a convention, not data:
    "mask" (ones: nothing padded), "type_ids" (zeros: one segment), "positions" (0, 1, 2, … along the last
    axis), "sample_rate" (16000); None for inputs that carry data (token ids, pixels, audio, states)."""
    lname = name.lower()
    if "mask" in lname:
        return "mask"
    if "type_id" in lname or "segment" in lname or lname in ("token_type", "type_ids"):
        return "type_ids"
    if "position" in lname and rank >= 1:
        return "positions"
    if rank == 0 and lname in SAMPLE_RATE_NAMES:
        return "sample_rate"
    return None


def _integer_feed(spec: InputSpec, shape: tuple[int, ...], vocab: int | None, rng: np.random.Generator) -> np.ndarray:
    """Masks of ones, type ids zeros, positions 0…T−1, token ids within the vocabulary, a sample rate for audio
    scalars, else zeros."""
    role = constant_role(spec.name, len(shape))
    if role == "mask":
        return np.ones(shape, dtype=spec.dtype)
    if role == "type_ids":
        return np.zeros(shape, dtype=spec.dtype)
    if role == "positions":
        pos = np.broadcast_to(np.arange(shape[-1]), shape)
        return (pos % vocab if vocab else pos).astype(spec.dtype)
    if vocab:
        return rng.integers(0, vocab, size=shape).astype(spec.dtype)
    if role == "sample_rate":
        return np.array(DEFAULT_SAMPLE_RATE, dtype=spec.dtype)
    return np.zeros(shape, dtype=spec.dtype)


def synthesize_inputs(model: onnx.ModelProto, batch: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    """One random feed per model input, batch dims = ``batch``.

    Floats ~ N(0,1); integer inputs named like masks ones (bools True), type ids zeros, position ids
    0…T−1 (:func:`constant_role`); other inputs that index an embedding table get ids within its rows,
    sample-rate scalars (``sr``) 16000, other integers zeros. Shapes the loader
    recorded (``recorded_shapes``) fill symbolic dims, the batch included (``batch`` does not apply there). Raises MissingInputError naming inputs whose shape or
    type cannot be synthesised.
    """
    rng = np.random.default_rng(seed)
    specs = input_specs(model)
    batch_names = _batch_params(specs)
    recorded = recorded_shapes(model)
    vocab = _index_ranges(model) if any(s.dtype.kind in "iu" for s in specs) else {}
    feeds: dict[str, np.ndarray] = {}
    problems = []
    for spec in specs:
        dims = list(spec.shape)
        given = recorded.get(spec.name)
        if given is not None and len(given) == len(dims):
            dims = [d if isinstance(d, int) else given[i] for i, d in enumerate(dims)]  # batch included
        unresolved = [d for d in dims if isinstance(d, str) and d not in batch_names]
        if unresolved or spec.dtype.kind not in "fiub":
            why = f"dynamic dims {unresolved}" if unresolved else f"type {spec.dtype}"
            problems.append(f"{spec.name} ({why})")
            continue
        shape = tuple(batch if isinstance(d, str) else d for d in dims)
        need = int(np.prod(shape, dtype=object)) * max(spec.dtype.itemsize, 8 if spec.dtype.kind == "f" else 1)
        if need > MAX_SYNTH_BYTES:
            raise MissingInputError(f"Input {spec.name[:80]!r} of shape {list(shape)[:8]} would need "
                                    f"{need / 2**30:.1f} GiB of synthetic data, over the "
                                    f"{MAX_SYNTH_BYTES / 2**20:.0f} MiB limit. Fix smaller input shapes with "
                                    "--input-shape NAME=D1,D2,... or provide evaluation data.")
        if spec.dtype.kind == "f":
            feeds[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
        elif spec.dtype.kind == "b":
            feeds[spec.name] = np.ones(shape, dtype=spec.dtype) if "mask" in spec.name.lower() else \
                np.zeros(shape, dtype=spec.dtype)
        else:
            feeds[spec.name] = _integer_feed(spec, shape, vocab.get(spec.name), rng)
    if problems:
        raise MissingInputError(f"Cannot synthesise input(s) {', '.join(problems)}. Fix their shapes with "
                                "input_shapes / --input-shape NAME=D1,D2,..., or provide the data yourself.")
    return feeds


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
