"""Target-device catalog: sourced specs from ``devices.toml`` plus this machine.

No maintained library ships a catalog of edge/data-centre accelerators with per-number provenance, so
the catalog is our own data file; this module loads it, checks its schema (every number needs a source
and a tag) and adds the live entries for the machine we run on:

- ``host``          — "this machine (estimated)": roofline with the factors fitted by
  :mod:`optim.hardware.calibrate` (``host_profile.json``), or CPU-flag-derived defaults when uncalibrated;
- ``host_measured`` — "this machine (measured)": the estimator runs the model with ONNX Runtime instead;
- ``cuda_measured`` — "this GPU (measured)": only when ONNX Runtime's CUDA execution provider is present.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd
import tomllib

from optim.errors import HardwareError

HERE = Path(__file__).resolve().parent
CATALOG_PATH = HERE / "devices.toml"
HOST_PROFILE_PATH = HERE / "host_profile.json"

PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8", "int4")
PRECISION_BITS = {"fp32": 32, "fp16": 16, "int8": 8, "int4": 4}
MODES = ("native", "emulated", "convert", "unsupported")
TAGS = ("verified", "derived", "assumed", "measured", "fitted")
UNITS: dict[str, float] = {
    "GFLOPS": 1e9, "TFLOPS": 1e12, "GOPS": 1e9, "TOPS": 1e12,
    "GB/s": 1e9, "MB/s": 1e6,
    "GB": 1e9, "MB": 1e6, "KB": 1e3, "GiB": 2**30, "MiB": 2**20, "KiB": 2**10,
    "W": 1.0, "us": 1e-6, "ms": 1e-3, "fraction": 1.0, "count": 1.0,
}
REQUIRED_SPECS = ("bandwidth", "memory", "onchip", "power", "eff_compute", "eff_memory", "overhead_us")
OPTIONAL_SPECS = ("offchip_bandwidth",)
FLAGS = ("fuses_activations", "activations_onchip", "sparsity_2_4", "weights_onchip_cache", "measured",
         "ort_cpu_fusion")
OP_CLASSES = ("conv", "conv_nchw", "conv1x1_nchw", "dwconv", "dwconv_nchw", "gemm", "conv_int8", "dwconv_int8",
              "gemm_int8", "elementwise", "reorder", "shape")


class CatalogError(HardwareError):
    """``devices.toml`` or the host profile breaks the schema; the message names device and field."""


@dataclass(frozen=True)
class Spec:
    """One sourced number: ``si`` is ``value`` converted to base units (ops/s, bytes, bytes/s, W, s)."""

    value: float
    unit: str
    tag: str
    source: str

    @property
    def si(self) -> float:
        return self.value * UNITS[self.unit]


@dataclass(frozen=True)
class PrecisionSupport:
    """How a device executes one precision: ``mode`` and, for emulated/convert, the ``target`` precision."""

    precision: str
    mode: str
    target: str | None
    tag: str
    source: str


@dataclass(frozen=True)
class ClassFactors:
    """Efficiency and fixed overhead for one op class (calibrated host) or the whole device."""

    eff_compute: float
    eff_memory: float
    overhead_s: float


@dataclass(frozen=True)
class Device:
    id: str
    name: str
    kind: str
    runtime: str
    specs: dict[str, Spec]
    precisions: dict[str, PrecisionSupport]
    flags: dict[str, bool] = field(default_factory=dict)
    class_factors: dict[str, ClassFactors] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def peak(self, precision: str) -> float:
        """Dense peak in ops/s at a precision the device runs natively."""
        spec = self.specs.get(f"peak_{precision}")
        if spec is None:
            raise HardwareError(f"{self.name} has no {precision.upper()} peak in the catalog.")
        return spec.si

    def spec(self, key: str) -> float:
        return self.specs[key].si

    def factors(self, op_class: str) -> ClassFactors:
        """Per-class factors when calibrated, else the device-wide ones."""
        if op_class in self.class_factors:
            return self.class_factors[op_class]
        base = op_class.removesuffix("_int8")
        if base in self.class_factors:  # uncalibrated INT8 kernels: the FP32 kernel's factors
            return self.class_factors[base]
        return ClassFactors(self.spec("eff_compute"), self.spec("eff_memory"), self.spec("overhead_us"))

    def flag(self, name: str) -> bool:
        return bool(self.flags.get(name, False))

    def table(self) -> pd.DataFrame:
        """Every number with unit, tag and source — what the UI shows for provenance."""
        rows = [{"field": k, "value": s.value, "unit": s.unit, "tag": s.tag, "source": s.source}
                for k, s in self.specs.items()]
        rows += [{"field": f"precision_{p}", "value": ps.mode + (f" -> {ps.target}" if ps.target else ""),
                  "unit": "", "tag": ps.tag, "source": ps.source} for p, ps in self.precisions.items()]
        return pd.DataFrame(rows, columns=["field", "value", "unit", "tag", "source"])


def _parse_spec(dev_id: str, key: str, raw: Any) -> Spec:
    if not isinstance(raw, dict):
        raise CatalogError(f"{dev_id}.{key}: write it as {{value, unit, tag, source}}, got {raw!r}.")
    missing = [k for k in ("value", "unit", "tag", "source") if k not in raw]
    if missing:
        raise CatalogError(f"{dev_id}.{key}: missing {', '.join(missing)} — every number needs its source.")
    if not isinstance(raw["value"], int | float) or raw["value"] < 0:
        raise CatalogError(f"{dev_id}.{key}: value must be a non-negative number, got {raw['value']!r}.")
    if raw["unit"] not in UNITS:
        raise CatalogError(f"{dev_id}.{key}: unknown unit {raw['unit']!r}; use one of {sorted(UNITS)}.")
    if raw["tag"] not in TAGS:
        raise CatalogError(f"{dev_id}.{key}: tag {raw['tag']!r} must be one of {TAGS}.")
    if not str(raw["source"]).strip():
        raise CatalogError(f"{dev_id}.{key}: empty source — say where the number comes from.")
    return Spec(float(raw["value"]), raw["unit"], raw["tag"], str(raw["source"]))


def _parse_precision(dev_id: str, prec: str, raw: Any, specs: dict[str, Spec]) -> PrecisionSupport:
    key = f"precision_{prec}"
    if not isinstance(raw, dict) or raw.get("mode") not in MODES:
        raise CatalogError(f"{dev_id}.{key}: needs mode in {MODES}.")
    if not str(raw.get("source", "")).strip() or raw.get("tag") not in TAGS:
        raise CatalogError(f"{dev_id}.{key}: needs a source and a tag in {TAGS}.")
    mode = raw["mode"]
    target = raw.get("via") if mode == "emulated" else raw.get("to") if mode == "convert" else None
    if mode in ("emulated", "convert"):
        if target not in PRECISIONS or f"peak_{target}" not in specs:
            raise CatalogError(f"{dev_id}.{key}: {mode} needs a target precision with a peak, got {target!r}.")
    if mode == "native" and f"peak_{prec}" not in specs:
        raise CatalogError(f"{dev_id}.{key}: native precision needs peak_{prec}.")
    return PrecisionSupport(prec, mode, target, raw["tag"], str(raw["source"]))


def parse_device(raw: dict[str, Any]) -> Device:
    """Validate one catalog entry (a dict as read from TOML) and build the Device."""
    dev_id = str(raw.get("id", "")).strip()
    if not dev_id:
        raise CatalogError("A catalog entry has no id.")
    for k in ("name", "kind", "runtime"):
        if not raw.get(k):
            raise CatalogError(f"{dev_id}: missing {k}.")
    specs: dict[str, Spec] = {}
    for key, val in raw.items():
        if key.startswith("peak_") or key in REQUIRED_SPECS or key in OPTIONAL_SPECS:
            specs[key] = _parse_spec(dev_id, key, val)
    missing = [k for k in REQUIRED_SPECS if k not in specs]
    if missing:
        raise CatalogError(f"{dev_id}: missing {', '.join(missing)}.")
    bad_peaks = [k for k in specs if k.startswith("peak_") and k[5:] not in PRECISIONS]
    if bad_peaks:
        raise CatalogError(f"{dev_id}: unknown precision in {bad_peaks}; use {PRECISIONS}.")
    precisions = {}
    for prec in PRECISIONS:
        if f"precision_{prec}" not in raw:
            raise CatalogError(f"{dev_id}: missing precision_{prec} (native/emulated/convert/unsupported).")
        precisions[prec] = _parse_precision(dev_id, prec, raw[f"precision_{prec}"], specs)
    flags = {k: bool(raw.get(k, False)) for k in FLAGS}
    known = set(FLAGS) | {"id", "name", "kind", "runtime", *REQUIRED_SPECS, *OPTIONAL_SPECS}
    unknown = [k for k in raw if k not in known and not k.startswith(("peak_", "precision_"))]
    if unknown:
        raise CatalogError(f"{dev_id}: unknown fields {unknown}.")
    return Device(dev_id, raw["name"], raw["kind"], raw["runtime"], specs, precisions, flags)


def load_catalog(path: Path = CATALOG_PATH) -> list[Device]:
    """Parse and validate a catalog TOML file."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise CatalogError(f"Cannot read the device catalog {path}: {err}") from err
    devices = [parse_device(d) for d in data.get("device", [])]
    ids = [d.id for d in devices]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise CatalogError(f"Duplicate device ids in {path}: {dupes}.")
    return devices


def load_host_profile(path: Path | None = None) -> dict[str, Any] | None:
    """The calibrated host profile (JSON) or None when absent/unreadable; ``$OPTIM_HOST_PROFILE`` overrides."""
    path = Path(path or os.environ.get("OPTIM_HOST_PROFILE") or HOST_PROFILE_PATH)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def cuda_available() -> bool:
    """True when ONNX Runtime offers the CUDA execution provider."""
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


@lru_cache(maxsize=1)
def _static_catalog() -> tuple[Device, ...]:
    return tuple(load_catalog())


def list_devices() -> list[Device]:
    """All targets: catalog devices, this machine (estimated, measured) and this GPU when present."""
    from optim.hardware.host import cuda_device, host_device, host_measured_device

    devices = [host_device(load_host_profile()), host_measured_device()]
    if cuda_available():
        devices.append(cuda_device())
    return devices + list(_static_catalog())


def get_device(device_id: str) -> Device:
    """One device by id; raises HardwareError listing the valid ids."""
    devices = list_devices()
    for dev in devices:
        if dev.id == device_id:
            return dev
    raise HardwareError(f"Unknown device {device_id!r}; choose one of: {', '.join(d.id for d in devices)}.")
