"""Quantization pass: FP16, INT8 dynamic, INT8 static (QDQ / QOperator), INT4, simulated 2–8-bit.

Executable variants come from ONNX Runtime's own tools (``onnxruntime.quantization`` and
``onnxruntime.transformers.float16``), so what we measure is what ORT runs. Simulated variants
(``executable=False``) fake-quantise FP32 weights: their accuracy is that of the low-bit weights, their
latency is FP32's, and ``effective_size_bytes`` counts the weights packed at ``bits`` plus scales.

Default INT8 types — why U8S8 with ``reduce_range`` (uint8 activations, 7-bit int8 weights):
  On x86 CPUs *without* VNNI the U8S8 kernels add pairs of u8×s8 products in 16 bits (``vpmaddubsw``),
  which saturates: a ResNet-style CNN lost 0.8 points of top-1 in QDQ U8S8 while U8U8/S8S8 lost
  nothing (shared/design/STACK_NOTES.md). ``reduce_range`` quantises weights to 7 bits so the pair sum
  cannot overflow — ONNX Runtime's documented remedy for such CPUs. On CPUs *with* VNNI (this
  development machine, a Zen 5 with AVX512-VNNI) U8S8 is the fastest kernel and the 7-bit weights cost
  no measurable accuracy. ``benchmarks/quantization.py`` on ``resnet_digits`` (batch 1, 1 thread,
  latency / FP32): QDQ U8S8 reduce_range 0.42× (top-1 99.77 % = FP32, file 0.256×), QDQ U8S8 0.43×,
  QDQ U8U8 0.80×, QDQ S8S8 1.56×, QOperator U8S8/U8U8 0.42×, QOperator S8S8 8.5× (no fast x64 kernel);
  NNCF 3.4 PTQ of the same model 0.43×, 99.77 %. ``mobilenetv2_digits``: default 0.63× / file 0.328×
  (0.21 M weights but 3.8 k channels: FP32 biases plus one FP32 scale per channel put the per-channel
  INT8 floor near 0.28×; QOperator, with shorter node lists, 0.312×), S8S8 1.56×, NNCF 3.8×.
  So the default is U8S8 + reduce_range: measured fastest and exact here, and the setting ORT documents
  for CPUs without VNNI (not measured on one in this project). On a VNNI machine
  ``reduce_range=False`` keeps the last bit of weight precision.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import onnx

from optim.errors import ConfigError, PassUnavailableError
from optim.handle import ModelHandle
from optim.passes._quant import auto as quant_auto
from optim.passes._quant import int8 as quant_int8
from optim.passes._quant import lowbit as quant_lowbit
from optim.passes._quant import search as quant_search
from optim.passes._quant.core import QuantError, cpu_has_vnni, fake_quantize, quantization_error, weight_refs
from optim.passes.base import PassContext, check_applies, check_literals, check_range, register
from optim.passes.prune_unstructured import why_no_weights

__all__ = ["QuantizeConfig", "run", "fake_quantize", "quantization_error", "QuantError", "variant_label"]

Mode = Literal["fp16", "int8_auto", "int8_dynamic", "int8_static", "int4", "fake"]
IntType = Literal["uint8", "int8"]
QuantFormat = Literal["qdq", "qoperator"]
Calibration = Literal["minmax", "entropy", "percentile"]
Int4Other = Literal["simulate", "fp32"]
MODES: tuple[str, ...] = get_args(Mode)
TYPES: tuple[str, ...] = get_args(IntType)
INT8 = ("int8_static", "int8_dynamic")
# Fields that only some modes read: None by default, filled from DEFAULTS under those modes; set under any
# other mode they are a ConfigError (e.g. bits with int8_static).
APPLIES: dict[str, tuple[str, ...]] = {
    "bits": ("fake",), "quant_format": ("int8_static",), "activation_type": ("int8_static",),
    "calibration": ("int8_static", "int8_auto"), "calib_samples": ("int8_static", "int8_auto"), "weight_type": INT8,
    "per_channel": INT8, "reduce_range": INT8, "int4_other_layers": ("int4",), "keep_fp32": INT8,
    "search_budget_s": ("int8_auto",), "probe_budget_s": ("int8_auto",), "search_only": ("int8_auto",),
}
DEFAULTS: dict[str, object] = {
    "bits": 4, "quant_format": "qdq", "activation_type": "uint8", "calibration": "minmax", "calib_samples": 256,
    "weight_type": "int8", "per_channel": True, "reduce_range": True, "int4_other_layers": "simulate",
    "keep_fp32": (), "search_budget_s": 10.0, "probe_budget_s": 2.0, "search_only": (),
}

NOTES = {
    "fp16": "FP16 weights and compute; on CPU ORT runs most ops through inserted Casts: half the file, no speed-up.",
    "int8_dynamic": "INT8 weights, activations quantised on the fly per batch (ConvInteger/MatMulInteger): "
    "small file, but CNNs ran 6–16× slower than FP32 on this CPU; prefer int8_static for convolutions.",
    "int8_static": "INT8 weights and activations with ranges calibrated on sample data; executable by ORT.",
    "int8_auto": "The fastest INT8 configuration on this CPU whose fidelity holds, chosen on a latency probe.",
    "int4": "4-bit block-wise weights (block 32, symmetric) in MatMulNBits, executed by ORT.",
    "fake": "Simulated: weights rounded to {bits} bits and stored as FP32. Accuracy is that of {bits}-bit "
    "weights; latency and the file are FP32's; size shown as packed bits + scales.",
}


def _f(help_: str, **meta: object) -> dict[str, object]:
    return {"help": help_, **meta}


@dataclass(frozen=True)
class QuantizeConfig:
    """Settings of one quantisation; mode-specific fields stay None unless their mode reads them (``APPLIES``)."""

    mode: Mode = field(
        default="int8_static",
        metadata=_f(
            "fp16: half-precision weights. int8_auto: try the INT8 configurations that apply (QDQ/QOperator, "
            "U8S8/S8S8, per-channel/per-tensor, static/dynamic, slow or edge layers kept FP32) on a short latency "
            "probe and keep the fastest whose fidelity holds. int8_dynamic: no calibration data needed. "
            "int8_static: one fixed configuration, needs calibration data. int4: 4-bit weights (MatMul "
            "executable, others simulated). fake: simulated 2–8-bit weights for teaching.",
            choices=list(MODES),
        ),
    )
    bits: int | None = field(default=None, metadata=_f("Weight bits for mode 'fake' (simulated; default 4).",
                                                       min=2, max=8))
    quant_format: QuantFormat | None = field(
        default=None,
        metadata=_f(
            "int8_static graph format. qdq (default): Quantize/DequantizeLinear pairs that ORT fuses into integer "
            "kernels (recommended). qoperator: explicit QLinearConv/QLinearMatMul nodes.",
            choices=list(get_args(QuantFormat)),
        ),
    )
    activation_type: IntType | None = field(
        default=None,
        metadata=_f(
            "INT8 static activation type (default uint8). uint8 with int8 weights (U8S8) is the fastest x86 kernel; "
            "on CPUs without VNNI keep reduce_range on, or U8S8 saturates and loses accuracy. int8 (S8S8) avoids "
            "that too but was 1.6× slower than FP32 here (QDQ) and ~10× with qoperator.",
            choices=list(TYPES),
        ),
    )
    weight_type: IntType | None = field(
        default=None,
        metadata=_f("INT8 weight type (static and dynamic; default int8).", choices=list(TYPES)),
    )
    per_channel: bool | None = field(default=None, metadata=_f(
        "INT8: one scale per output channel for weights (more accurate; default on)."))
    calibration: Calibration | None = field(
        default=None,
        metadata=_f(
            "INT8 static: how activation ranges are chosen from the calibration data: minmax (default, full "
            "range), entropy (KL divergence), percentile (clip the top 0.001 %).",
            choices=list(get_args(Calibration)),
        ),
    )
    calib_samples: int | None = field(default=None, metadata=_f(
        "Calibration samples used (INT8 static; default 256).", min=1, max=10_000))
    reduce_range: bool | None = field(
        default=None,
        metadata=_f(
            "INT8: quantise weights to 7 bits (default on): prevents U8S8 overflow on CPUs without VNNI (ORT's "
            "advice); on VNNI CPUs it costs no speed and negligible accuracy."
        ),
    )
    int4_other_layers: Int4Other | None = field(
        default=None,
        metadata=_f(
            "INT4: what happens to weight layers ORT has no 4-bit kernel for (Conv, …). simulate (default): "
            "fake-quantised to 4 bits, variant marked simulated. fp32: left in FP32, so the variant stays "
            "executable (mixed precision: 4-bit MatMuls, FP32 elsewhere).",
            choices=list(get_args(Int4Other)),
        ),
    )

    keep_fp32: tuple[str, ...] | None = field(default=None, metadata=_f(
        "INT8 static/dynamic: ONNX node names left in FP32 (e.g. layers whose INT8 kernels are slow)."))
    search_budget_s: float | None = field(default=None, metadata=_f(
        "int8_auto: seconds for building candidates beyond the first (default 10; the rest are recorded as not "
        "tried).", min=0.0, max=600.0))
    probe_budget_s: float | None = field(default=None, metadata=_f(
        "int8_auto: seconds of interleaved 1-thread latency runs per comparison (default 2).", min=0.05, max=60.0))
    search_only: tuple[str, ...] | None = field(default=None, metadata=_f(
        "int8_auto: try only these candidate labels (a sweep's pruned variants reuse the unpruned model's choice)."))

    def __post_init__(self) -> None:
        check_literals(self)
        check_applies(self, "mode", APPLIES, DEFAULTS)
        check_literals(self)
        if self.mode == "fake":
            check_range("bits", self.bits, 2, 8)
        if self.mode in ("int8_static", "int8_auto"):
            check_range("calib_samples", self.calib_samples, 1, 10_000)
        if self.mode == "int8_auto":
            check_range("search_budget_s", self.search_budget_s, 0.0, 600.0)
            check_range("probe_budget_s", self.probe_budget_s, 0.05, 60.0)
        for name in ("keep_fp32", "search_only"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, str) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{name}: expected a list of names, got {value!r}.")
            object.__setattr__(self, name, tuple(value))


def variant_label(cfg: QuantizeConfig) -> str:
    """Short human label, e.g. 'INT8 static QDQ U8S8 reduce_range' or 'fake 3-bit (simulated)'."""
    t = {"uint8": "U8", "int8": "S8"}
    rr = " reduce_range" if cfg.reduce_range else ""
    if cfg.mode == "int8_static":
        return f"INT8 static {cfg.quant_format.upper()} {t[cfg.activation_type]}{t[cfg.weight_type]}{rr}"
    if cfg.mode == "int8_dynamic":
        return f"INT8 dynamic U8{t[cfg.weight_type]}{rr}"
    if cfg.mode == "int8_auto":
        return "INT8 fastest (searched)"
    if cfg.mode == "fake":
        return f"fake {cfg.bits}-bit (simulated)"
    if cfg.mode == "int4" and cfg.int4_other_layers == "fp32":
        return "INT4 MatMul + FP32"
    return cfg.mode.upper()


def _require_weights(model: onnx.ModelProto, mode: str) -> None:
    if not weight_refs(model):
        raise PassUnavailableError(f"Mode '{mode}' found no FP32 Conv/Gemm/MatMul weights to quantise: "
                                   f"{why_no_weights(model)}.")


@register(
    "quantize",
    QuantizeConfig,
    "Quantization",
    "Store weights (and for INT8 static, activations) in fewer bits: FP16, INT8, INT4 or simulated 2–8-bit.",
)
def run(handle: ModelHandle, config: QuantizeConfig, ctx: PassContext | None = None) -> ModelHandle:
    ctx = ctx or PassContext()
    src = handle.model  # read only: the INT8/FP16 tools work on files or copies (memory: no 1× model copy)
    _require_weights(src, config.mode)
    ctx.report(0.0, f"quantize: {variant_label(config)}")
    if config.mode in ("int4", "fake"):
        return _run_lowbit(handle, handle.copy_model(), config, ctx)  # edits its model in place
    if config.mode == "fp16":
        out, bits, fmt = quant_int8.to_fp16(src), 16, "fp16"
    elif config.mode == "int8_auto":
        return _run_auto(handle, config, ctx)
    elif config.mode == "int8_dynamic":
        out = quant_int8.int8_dynamic(src, config.weight_type, config.per_channel, config.reduce_range,
                                      exclude=config.keep_fp32)  # fmt: skip
        bits, fmt = 8, "qoperator"
    else:
        out = quant_int8.int8_static(
            src,
            ctx.calib,
            n_samples=config.calib_samples,
            quant_format=config.quant_format,
            activation_type=config.activation_type,
            weight_type=config.weight_type,
            per_channel=config.per_channel,
            reduce_range=config.reduce_range,
            calibration=config.calibration,
            tick=lambda f: (ctx.check_cancel(), ctx.report(0.1 + 0.8 * f, "calibrating")),
            model_key=handle.content_hash,
            exclude=config.keep_fp32,
        )
        bits, fmt = 8, config.quant_format
    ctx.report(1.0, "quantize: done")
    note = NOTES[config.mode]
    u8s8 = config.mode != "fp16" and config.weight_type == "int8" and (
        config.mode == "int8_dynamic" or config.activation_type == "uint8"
    )
    if u8s8 and not config.reduce_range and cpu_has_vnni() is False:
        note += " This CPU has no VNNI: U8S8 kernels can saturate and lose accuracy; turn reduce_range on."
    return _quantized(handle, out, f"quantize {variant_label(config)}", bits, True, None, fmt, config.mode, note)


def _run_auto(handle: ModelHandle, config: QuantizeConfig, ctx: PassContext) -> ModelHandle:
    """int8_auto: the search's choice, with the record of what was tried (meta ``int8_search``) and a note."""
    out, rec = quant_auto.int8_auto(
        handle, ctx.calib, n_samples=config.calib_samples, calibration=config.calibration,
        budget_s=config.search_budget_s, probe_budget_s=config.probe_budget_s, only=config.search_only,
        tick=lambda f, msg: (ctx.check_cancel(), ctx.report(f, msg)),
    )  # fmt: skip
    ctx.report(1.0, "quantize: done")
    cand = rec["candidate"]
    fmt = "qoperator" if cand["kind"] == "dynamic" else cand["quant_format"]
    kept = handle.meta.get("structured_pruning", {}).get("kept_whole", [])  # a pruned variant's own sentences
    return _quantized(handle, out, f"quantize INT8 auto → {rec['chosen']}", 8, True, None, fmt, "int8_auto",
                      quant_search.note(rec), variant_note=" ".join([quant_search.note(rec), *kept]), int8_search=rec)


def _run_lowbit(handle: ModelHandle, model: onnx.ModelProto, config: QuantizeConfig, ctx: PassContext) -> ModelHandle:
    bits = 4 if config.mode == "int4" else config.bits
    n_nbits = 0
    if config.mode == "int4":
        quant_lowbit.gemm_to_matmul(model)
        model = quant_lowbit.matmul_nbits(model, bits=4)
        n_nbits = quant_lowbit.count_matmul_nbits(model)
        ctx.report(0.6, f"MatMulNBits: {n_nbits} layers")
    keep_fp32 = config.mode == "int4" and config.int4_other_layers == "fp32"
    if keep_fp32 and n_nbits == 0:
        raise PassUnavailableError(
            "INT4 with other layers kept FP32: this model has no MatMul/Gemm weight that ONNX Runtime runs in "
            "4 bits (MatMulNBits), so nothing would change. Use int4_other_layers='simulate'."
        )
    stored, packed = (0, 0) if keep_fp32 else quant_lowbit.simulate_weights(model, bits)
    executable = config.mode == "int4" and stored == 0 and n_nbits > 0
    size = len(model.SerializeToString())
    effective = size - stored + packed
    fmt = "matmulnbits" if executable else ("matmulnbits+simulated" if n_nbits else "simulated")
    if keep_fp32 and weight_refs(model):
        fmt = "matmulnbits+fp32"
    note = NOTES[config.mode].format(bits=bits)
    if config.mode == "int4" and not executable:
        note += " Some weight layers have no 4-bit kernel here: the variant is simulated."
    elif keep_fp32 and weight_refs(model):
        note += " Weight layers without a 4-bit kernel stay FP32 (mixed precision)."
    ctx.report(1.0, "quantize: done")
    return _quantized(handle, model, f"quantize {variant_label(config)}", bits, executable, effective, fmt,
                      config.mode, note, int4_executed_layers=n_nbits)


def _quantized(handle: ModelHandle, model: onnx.ModelProto, label: str, bits: int, executable: bool,
               size: int | None, fmt: str, mode: str, note: str, **meta: Any) -> ModelHandle:
    """The quantised variant's handle: every mode records the same fields (bits, executable, effective size,
    format, mode, note) plus its own extras. ``size`` None: the file's size (the handle's own serialisation,
    which the store writes anyway, not a second one)."""
    out = handle.derive(model, label, bits=bits, executable=executable, effective_size_bytes=size,
                        quant_format=fmt, quant_mode=mode, quant_note=note, **meta)
    if size is None:
        out.meta["effective_size_bytes"] = out.size_bytes
    return out
