"""Which models calibrate this CPU and which validate it, named by short specs built on demand.

A spec is ``ref:NAME[:WIDTH]`` (an MLPerf Tiny reference architecture, :mod:`.reference_models`),
``sample:NAME`` (a bundled sample model), ``zoo:NAME`` (a zoo architecture) or ``int8:SPEC`` /
``fp16:SPEC`` (that model quantised by the project's quantize pass). The default fitting set mixes the
bundled samples with odd-width reference models (11/22/45/89 channels exercise the slower non-NCHWc
conv paths pruned models fall into); the default held-out set uses other widths and INT8/FP16 variants,
so the residuals that give the host estimate its band come from models the fit never saw.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from optim.errors import ConfigError
from optim.handle import ModelHandle

FIT_SPECS: tuple[str, ...] = ("sample:*", "ref:resnet8:0.7", "ref:ds_cnn:0.7", "ref:mobilenet_v1_025:0.7",
                              "ref:resnet8:1.4")
FIT_FALLBACK: tuple[str, ...] = ("ref:resnet8", "ref:ds_cnn", "ref:mobilenet_v1_025")
HOLDOUT_SPECS: tuple[str, ...] = ("ref:resnet8:0.5", "ref:ds_cnn:0.5", "ref:mobilenet_v1_025:0.5", "ref:ds_cnn:2",
                                  "ref:mobilenet_v1_025:2", "ref:resnet8:2")


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


def build(spec: str) -> ModelHandle:
    """The model a spec names (see the module docstring); ConfigError for an unknown spec."""
    kind, _, rest = spec.partition(":")
    if kind in ("int8", "fp16"):
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


def quantized(handle: ModelHandle, mode: str = "int8") -> ModelHandle:
    """INT8 static QDQ (per-channel weights, calibrated on 16 seeded random inputs) or FP16 variant."""
    from optim.io.data import Dataset
    from optim.io.load import synthesize_inputs
    from optim.passes.base import PassContext, get_pass

    spec = get_pass("quantize")
    if mode == "fp16":
        q = spec.run(handle, spec.config_cls(mode="fp16"), PassContext())
    else:
        x = np.concatenate([next(iter(synthesize_inputs(handle.model, 1, seed=i).values())) for i in range(16)])
        q = spec.run(handle, spec.config_cls(mode="int8_static"), PassContext(calib=Dataset(x, None, "random")))
    return ModelHandle(q.model, f"{handle.name}_{mode}", meta=q.meta)
