"""Device entries for the machine we run on: this CPU (estimated / measured) and this GPU (measured).

Specs come from a host profile (measured peak and bandwidth, fitted factors per kernel class, held-out
residuals) when one is given, and otherwise from the CPU flags (:mod:`optim.hardware.host`) — the
uncalibrated priors keep the estimator usable on a fresh machine.
"""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

from optim.hardware import host
from optim.hardware.device import ClassFactors, Device, PrecisionSupport, Spec

HOST_FLAGS = {"fuses_activations": True, "ort_cpu_fusion": True, "live_plan": True, "dram_weights": True}
INT8_CLASSES = ("conv_int8", "dwconv_int8", "gemm_int8", "conv_integer", "gemm_integer")


def _host_specs(facts: dict[str, Any], profile: dict[str, Any] | None) -> dict[str, Spec]:
    fpc, isa = host.isa(facts["flags"])
    vnni = host.int8_dot_product(facts["flags"])
    peak = facts["ghz"] * fpc
    specs = {
        "peak_fp32": Spec(round(peak, 2), "GFLOPS", "derived", f"1 thread: {facts['ghz']:.2f} GHz x {fpc} FLOP/cycle ({isa})"),
        "bandwidth": Spec(20.0, "GB/s", "assumed", "uncalibrated default for one core; run `python -m optim hardware calibrate`"),
        "memory": Spec(round(facts["mem_bytes"] / 1e9, 2), "GB", "measured", "/proc/meminfo MemTotal"),
        "onchip": Spec(round(facts["cache_bytes"] / 2**20, 2), "MiB", "measured", "largest cache level in /sys/devices/system/cpu"),
        "power": Spec(5.0, "W", "assumed", "rough prior: ~5 W per busy core (one thread)"),
        "eff_compute": Spec(0.3, "fraction", "assumed", "uncalibrated CPU prior"),
        "eff_memory": Spec(1.0, "fraction", "assumed", "uncalibrated CPU prior (small layers stay in cache)"),
        "overhead_us": Spec(2.0, "us", "assumed", "uncalibrated CPU prior: ONNX Runtime per-node dispatch"),
    }
    if profile:
        for key in ("peak_fp32", "bandwidth"):
            if key in profile:
                p = profile[key]
                specs[key] = Spec(float(p["value"]), p["unit"], p.get("tag", "measured"), p["source"])
    int8_ratio, int8_src = (4.0, "VNNI dot product: 4x FP32 ops per instruction") if vnni else (
        1.0, "no VNNI: INT8 measured ~as fast as FP32 on AVX2 (STACK_NOTES.md)")
    int8_tag = "derived" if vnni else "assumed"
    if profile and set(INT8_CLASSES) & set(profile.get("classes", {})):
        int8_ratio, int8_src, int8_tag = 1.0, "INT8 kernel speed is fitted per kernel class at calibration", "fitted"
    specs["peak_int8"] = Spec(round(specs["peak_fp32"].value * int8_ratio, 2), "GOPS", int8_tag,
                              f"peak_fp32 x {int8_ratio:g} ({int8_src})")
    block = host.channel_block(facts["flags"])
    specs["channel_block"] = Spec(block, "count", "derived",
                                  f"ONNX Runtime NCHWc block = {block} floats per vector ({isa})")
    if profile and "run_overhead_us" in profile:
        specs["run_overhead_us"] = Spec(round(float(profile["run_overhead_us"]), 2), "us", "fitted",
                                        "median of measured latency minus fitted kernel sum (calibration models)")
    if "avx512_fp16" in facts["flags"]:
        specs["peak_fp16"] = Spec(round(specs["peak_fp32"].value * 2, 2), "GFLOPS", "derived",
                                  "peak_fp32 x 2 (AVX512-FP16 packs twice the lanes)")
    return specs


def _host_precisions(flags: set[str]) -> dict[str, PrecisionSupport]:
    if "avx512_fp16" in flags:
        fp16 = PrecisionSupport("fp16", "native", None, "derived", "AVX512-FP16 in /proc/cpuinfo flags")
    else:
        fp16 = PrecisionSupport("fp16", "emulated", "fp32", "verified",
                                "ONNX Runtime CPU runs FP16 through inserted casts (STACK_NOTES.md)")
    return {
        "fp32": PrecisionSupport("fp32", "native", None, "verified", "CPU FMA units"),
        "fp16": fp16,
        "int8": PrecisionSupport("int8", "native", None, "verified", "ONNX Runtime QLinear/QDQ kernels (MLAS)"),
        "int4": PrecisionSupport("int4", "emulated", "fp32", "verified",
                                 "ONNX Runtime MatMulNBits dequantizes 4-bit blocks; simulated INT4 runs as FP32"),
    }


def class_factors(profile: dict[str, Any] | None) -> dict[str, ClassFactors]:
    if not profile:
        return {}
    return {name: ClassFactors(float(c["eff_compute"]), float(c["eff_memory"]), float(c["overhead_us"]) * 1e-6,
                               float(c.get("out_ns", 0.0)) * 1e-9, float(c.get("row_ns", 0.0)) * 1e-9,
                               float(c.get("kernel_us", 0.0)) * 1e-6, float(c.get("bcast", 0.0)))
            for name, c in profile.get("classes", {}).items()}


def host_device(profile: dict[str, Any] | None, label: str | None = None, calibrated_here: bool = True) -> Device:
    """'This machine (estimated)': calibrated when ``profile`` is given, CPU-flag priors otherwise.

    ``label`` (what :func:`optim.hardware.profiles.select_profile` says of the profile) leads the notes;
    with ``calibrated_here`` False the profile's residuals say nothing about this CPU and are dropped."""
    facts = host.cpu_facts()
    specs = _host_specs(facts, profile)
    if profile:
        note = (f"calibrated {profile.get('created', '?')} on {', '.join(profile.get('calibration_models', []))}; "
                f"fit error {profile.get('fit_error_pct', float('nan')):.1f} % (median over calibration models)")
        if profile.get("cpu_model") not in (None, facts["model"]) and calibrated_here:
            note += (f"; WARNING: profile was fitted on '{profile['cpu_model']}', this CPU is '{facts['model']}' — "
                     "run `python -m optim hardware calibrate`")
    else:
        note = "uncalibrated: efficiency/overhead are priors; run `python -m optim hardware calibrate`"
    notes = (label, note) if label else (note,)
    holdout = (profile or {}).get("holdout", {}) if calibrated_here else {}
    residuals = tuple(float(e) for e in holdout.get("errors_pct", {}).values())
    basis = (f"{len(residuals)} held-out models measured on this CPU at calibration" if residuals
             else "no held-out residuals on this CPU")
    flags = {**HOST_FLAGS, "additive_cost": (profile or {}).get("cost_form") == "additive"}
    return Device("host", f"This machine (estimated) — {facts['model']}", "cpu", "ONNX Runtime CPU, 1 thread",
                  specs, _host_precisions(facts["flags"]), flags, class_factors(profile), notes,
                  residuals_pct=residuals, residual_basis=basis)


def host_measured_device(base: Device) -> Device:
    """'This machine (measured)': the estimator profiles the model here instead of modelling it;
    ``base`` (the host device) supplies the roofline columns."""
    return Device("host_measured", f"This machine (measured) — {host.cpu_facts()['model']}", "cpu",
                  "ONNX Runtime CPU, 1 thread (measured)", base.specs, base.precisions,
                  {**base.flags, "measured": True}, base.class_factors,
                  ("latency measured with ONNX Runtime on this machine, not estimated",),
                  residual_basis="measured")


def _gpu_name_and_memory() -> tuple[str, float]:
    exe = shutil.which("nvidia-smi")
    if exe:
        try:
            out = subprocess.run([exe, "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=10, check=True).stdout
            name, mem = out.splitlines()[0].split(",")
            return name.strip(), float(mem) / 1024
        except (OSError, subprocess.SubprocessError, ValueError, IndexError):
            pass
    return "CUDA GPU", 16.0


def cuda_device() -> Device:
    """'This GPU (measured)': latency measured with the CUDA execution provider; roofline specs are rough."""
    name, mem_gib = _gpu_name_and_memory()
    src = "unknown GPU model: placeholder for the roofline columns only; latency is measured"
    specs = {
        "peak_fp32": Spec(10.0, "TFLOPS", "assumed", src),
        "peak_fp16": Spec(80.0, "TFLOPS", "assumed", src),
        "peak_int8": Spec(160.0, "TOPS", "assumed", src),
        "bandwidth": Spec(500.0, "GB/s", "assumed", src),
        "memory": Spec(round(mem_gib, 1), "GiB", "measured" if name != "CUDA GPU" else "assumed", "nvidia-smi"),
        "onchip": Spec(4.0, "MiB", "assumed", src),
        "power": Spec(250.0, "W", "assumed", src),
        "eff_compute": Spec(0.25, "fraction", "assumed", "GPU class prior"),
        "eff_memory": Spec(0.7, "fraction", "assumed", "GPU class prior"),
        "overhead_us": Spec(5.0, "us", "assumed", "GPU class prior"),
    }
    precisions = {
        "fp32": PrecisionSupport("fp32", "native", None, "verified", "CUDA EP"),
        "fp16": PrecisionSupport("fp16", "native", None, "assumed", "CUDA EP FP16 kernels"),
        "int8": PrecisionSupport("int8", "native", None, "assumed", "CUDA EP QDQ support varies by op"),
        "int4": PrecisionSupport("int4", "emulated", "fp16", "assumed", "MatMulNBits CUDA kernel dequantizes"),
    }
    return Device("cuda_measured", f"This GPU (measured) — {name}", "gpu", "ONNX Runtime CUDA EP (measured)",
                  specs, precisions, {"fuses_activations": True, "measured": True}, {},
                  ("latency measured with ONNX Runtime's CUDA execution provider",), residual_basis="measured")
