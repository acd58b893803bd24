"""The data types of the hardware model: a sourced number (:class:`Spec`), how a precision runs
(:class:`PrecisionSupport`), per-op-class factors (:class:`ClassFactors`) and a target :class:`Device`.

Pure data: no file reading and no probing here, so every other hardware module can import it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from optim.errors import HardwareError

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
         "ort_cpu_fusion", "live_plan", "additive_cost", "dram_weights")
OP_CLASSES = ("conv", "conv_in", "conv1x1", "conv_nchw", "conv1x1_nchw", "dwconv", "dwconv_nchw", "gemm", "conv_int8", "dwconv_int8",
              "gemm_int8", "conv_int8_odd", "dwconv_int8_odd", "conv_integer", "dwconv_integer",
              "conv_integer_odd", "dwconv_integer_odd", "gemm_integer", "gemv", "gemv_int8", "gemv_integer",
              "elementwise", "norm", "pool", "move", "quant", "cast",
              "reorder", "shape")
# An uncalibrated class borrows the factors of its parent (then the parent's parent, then the device's).
CLASS_PARENT = {"conv1x1": "conv", "conv_in": "conv", "conv_nchw": "conv", "conv1x1_nchw": "conv_nchw", "dwconv_nchw": "dwconv", "dwconv": "conv",
                "conv_int8": "conv", "dwconv_int8": "dwconv", "gemm_int8": "gemm", "conv_integer": "conv_int8",
                "gemm_integer": "gemm_int8", "dwconv_integer": "conv_integer", "conv_int8_odd": "conv_int8",
                "dwconv_int8_odd": "dwconv_int8", "conv_integer_odd": "conv_integer",
                "dwconv_integer_odd": "dwconv_integer", "gemv": "gemm", "gemv_int8": "gemm_int8",
                "gemv_integer": "gemm_integer", "norm": "elementwise", "pool": "elementwise", "move": "elementwise",
                "quant": "elementwise", "cast": "elementwise", "reorder": "move",
                # piecewise-linear unary activations run like Relu (one pass over an in-cache tensor), not like
                # the elementwise family's average over binary, broadcasting and transcendental ops: a
                # standalone Clip (ReLU6 of an FP16 MobileNetV2, where ORT does not fuse it) was priced 7x
                **{f"elementwise:{op}": "elementwise:Relu" for op in ("Clip", "LeakyRelu", "HardSigmoid", "Neg", "Abs")}}


def parent_class(op_class: str) -> str | None:
    """The class an uncalibrated ``op_class`` borrows from: ``elementwise:Mul`` → ``elementwise`` → none,
    ``elementwise:Clip`` → ``elementwise:Relu`` → ``elementwise`` (:data:`CLASS_PARENT` first)."""
    if op_class in CLASS_PARENT:
        return CLASS_PARENT[op_class]
    if ":" in op_class:
        return op_class.split(":", 1)[0]
    return None


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
    per_output_s: float = 0.0  # cost per output element (calibrated host): small-K convs pay it per pixel
    per_row_s: float = 0.0  # cost per output row (calibrated host): kernels loop over rows, a narrow plane pays
    kernel_s: float = 0.0  # cost once per kernel on top of ``overhead_s`` per call (calibrated host)
    bcast: float = 0.0  # blocked convs: cost of their input broadcasts, x broadcast ops at peak (calibrated host)


@dataclass(frozen=True)
class ValidationPoint:
    """A published batch-1 latency of a known architecture on a device, and what the estimator gives for
    it (``estimated_ms``, recorded by ``benchmarks/hardware.py``; a slow test keeps it current)."""

    label: str
    model: str
    bits: int
    published_ms: float
    estimated_ms: float
    source: str

    @property
    def residual_pct(self) -> float:
        """How far reality is from the estimate: (published / estimated - 1) x 100."""
        return (self.published_ms / self.estimated_ms - 1) * 100


@dataclass(frozen=True)
class Device:
    """One target. ``residuals_pct`` are signed (actual / estimated - 1) x 100 errors of this device's
    validation (published points for catalog devices, held-out models for the calibrated host);
    ``residual_basis`` says where they come from. The estimate's uncertainty band is built from them."""

    id: str
    name: str
    kind: str
    runtime: str
    specs: dict[str, Spec]
    precisions: dict[str, PrecisionSupport]
    flags: dict[str, bool] = field(default_factory=dict)
    class_factors: dict[str, ClassFactors] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    validation: tuple[ValidationPoint, ...] = ()
    residuals_pct: tuple[float, ...] = ()
    residual_basis: str = ""

    def peak(self, precision: str) -> float:
        """Dense peak in ops/s at a precision the device runs natively."""
        spec = self.specs.get(f"peak_{precision}")
        if spec is None:
            raise HardwareError(f"{self.name} has no {precision.upper()} peak in the catalog.")
        return spec.si

    def spec(self, key: str) -> float:
        return self.specs[key].si

    def factors(self, op_class: str) -> ClassFactors:
        """Per-class factors when calibrated, else the nearest calibrated parent's (:data:`CLASS_PARENT`: an
        uncalibrated INT8 kernel takes the FP32 kernel's), else the device-wide ones."""
        c: str | None = op_class
        while c is not None:
            if c in self.class_factors:
                return self.class_factors[c]
            c = parent_class(c)
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
