"""Which models calibrate this CPU and which validate it, named by short specs built on demand.

A spec is ``ref:NAME[:WIDTH]`` (an MLPerf Tiny reference architecture, :mod:`.reference_models`),
``sample:NAME`` (a bundled sample model), ``zoo:NAME`` (a zoo architecture) or ``int8:SPEC`` /
``int8dyn:SPEC`` / ``fp16:SPEC`` (that model through the project's quantize pass: static QDQ, dynamic,
FP16). The default fitting set mixes the bundled samples (dense and depthwise convs, a transformer's
matmuls / norms / data movement, small gemms) with odd-width reference models (11/22/45/89 channels
exercise the slower non-NCHWc conv paths pruned models fall into) and one reference model per integer
path (QLinearConv, ConvInteger, FP16 casts), all at widths no validation model uses; the default held-out
set uses other widths, so the residuals that give the host estimate its band come from models the fit
never saw.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from functools import lru_cache
from importlib import metadata
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError

from optim.errors import ConfigError
from optim.handle import ModelHandle
from optim.paths import data_dir

FIT_SPECS: tuple[str, ...] = (
    "sample:*", "ref:resnet8:0.7", "ref:ds_cnn:0.7", "ref:mobilenet_v1_025:0.7", "ref:resnet8:1.4",
    "ref:resnet8:3", "ref:mobilenet_v1_025:4", "ref:mobilenet_v1_025:1.5", "ref:ds_cnn:1.5",
    "ref:fc_autoencoder:0.7", "zoo:bert_tiny",
    "int8:ref:resnet8:0.7", "int8:ref:resnet8:1.5", "int8:ref:mobilenet_v1_025:0.7", "int8:ref:mobilenet_v1_025:1.5",
    "int8:ref:fc_autoencoder:0.7", "int8:zoo:bert_tiny", "int8dyn:ref:mobilenet_v1_025:0.7", "int8dyn:ref:resnet8:1.5",
    "int8dyn:ref:fc_autoencoder:0.7", "int8dyn:zoo:bert_tiny", "fp16:ref:resnet8:0.7")
FIT_FALLBACK: tuple[str, ...] = ("ref:resnet8", "ref:ds_cnn", "ref:mobilenet_v1_025")
HOLDOUT_SPECS: tuple[str, ...] = ("ref:resnet8:0.5", "ref:ds_cnn:0.5", "ref:mobilenet_v1_025:0.5", "ref:ds_cnn:2",
                                  "ref:mobilenet_v1_025:2", "ref:resnet8:2", "int8:ref:ds_cnn:0.5",
                                  "fp16:ref:mobilenet_v1_025:0.5")


def sample_names() -> list[str]:
    """Bundled samples whose model file exists (none when the samples are not built)."""
    try:
        from optim.io import samples

        return [s.name for s in samples.list_samples() if s.model_path.exists()]
    except Exception:  # noqa: BLE001 - samples not built or their manifest unreadable: reference models only
        return []


def expand(specs: Sequence[str]) -> list[str]:
    """``sample:*`` → one spec per bundled sample; when there are none, :data:`FIT_FALLBACK` instead."""
    out: list[str] = []
    for spec in specs:
        if spec == "sample:*":
            names = sample_names()
            out += [f"sample:{n}" for n in names] if names else list(FIT_FALLBACK)
        else:
            out.append(spec)
    return list(dict.fromkeys(out))


@lru_cache(maxsize=64)
def build(spec: str) -> ModelHandle:
    """The model a spec names (see the module docstring); ConfigError for an unknown spec. Memoised: the
    INT8 / FP16 variants of one reference model share its export (passes never mutate their input)."""
    kind, _, rest = spec.partition(":")
    if kind in ("int8", "int8dyn", "fp16"):
        return quantized(build(rest), kind)
    if kind == "ref":
        from optim.hardware.calibration.reference_models import REFERENCE_NAMES, reference_model

        name, _, width = rest.partition(":")
        if name not in REFERENCE_NAMES:
            raise ConfigError(f"Unknown reference model in {spec!r}; choose one of {REFERENCE_NAMES}.")
        return reference_model(name, float(width) if width else 1.0)
    if kind == "sample":
        from optim.io import samples

        return samples.load_sample(rest)[0]
    if kind == "zoo":
        from optim.reference.zoo import zoo_model

        return ModelHandle(zoo_model(rest), rest, meta={"bits": 32})
    raise ConfigError(f"Unknown calibration model spec {spec!r}; use ref:NAME[:WIDTH], sample:NAME, zoo:NAME, "
                      "int8:SPEC or fp16:SPEC.")


def cache_dir() -> Path:
    """Built calibration models, reused by later calibrations (``$OPTIM_DATA_DIR/hardware/models``)."""
    return data_dir() / "hardware" / "models"


def _cache_key(spec: str) -> str:
    versions = [metadata.version(p) for p in ("torch", "onnx", "onnxruntime")]
    return hashlib.sha256(json.dumps([spec, versions]).encode()).hexdigest()[:16]


def cached_build(spec: str) -> ModelHandle:
    """:func:`build`, from the model cache when this spec was built before with the same torch, onnx and
    onnxruntime (building the INT8 / FP16 variants is most of a first calibration's time)."""
    path = cache_dir() / f"{_cache_key(spec)}.onnx"
    side = path.with_suffix(".json")
    try:
        info = json.loads(side.read_text())
        return ModelHandle(onnx.load(str(path)), info["name"], meta=info["meta"])
    except (OSError, ValueError, KeyError, DecodeError):  # absent or damaged: build it again
        pass
    handle = build(spec)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(handle.model, str(path))
        meta = {k: v for k, v in handle.meta.items() if isinstance(v, str | int | float | bool) or v is None}
        side.write_text(json.dumps({"name": handle.name, "spec": spec, "meta": meta}))
    except OSError:
        pass
    return handle


def quantized(handle: ModelHandle, mode: str = "int8") -> ModelHandle:
    """INT8 static QDQ (per-channel weights, calibrated on 16 seeded random inputs), INT8 dynamic
    (``int8dyn``) or FP16 variant."""
    from optim.io.data import Dataset
    from optim.io.load import synthesize_inputs
    from optim.passes.base import PassContext, get_pass

    spec = get_pass("quantize")
    if mode in ("fp16", "int8dyn"):
        q = spec.run(handle, spec.config_cls(mode="fp16" if mode == "fp16" else "int8_dynamic"), PassContext())
    else:
        x = np.concatenate([next(iter(synthesize_inputs(handle.model, 1, seed=i).values())) for i in range(16)])
        q = spec.run(handle, spec.config_cls(mode="int8_static"), PassContext(calib=Dataset(x, None, "random")))
    return ModelHandle(q.model, f"{handle.name}_{mode}", meta=q.meta)
