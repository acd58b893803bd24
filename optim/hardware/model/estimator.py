"""Per-layer latency, memory fit, rough energy and uncertainty band of a variant on a target device.

``estimate_with_device(handle, device)`` reads the per-node counts from :func:`optim.graph.summary.summarize`, picks
the precision path the device takes for the variant's bits (native, emulated, converted, fallback),
prices every layer with the roofline in :mod:`optim.hardware.model.roofline`, checks the model fits the
device's memories, multiplies by power for a rough energy and puts a band around the total from the
device's validation residuals (:mod:`optim.hardware.model.band`). For the "measured" targets (this
machine, this GPU) the total is measured with ONNX Runtime instead and the roofline columns are kept for
explanation. Looking a device up by id (and calibrating this CPU on first use) is
:mod:`optim.hardware.targets`' job.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd

from optim.handle import ModelHandle
from optim.hardware.device import Device
from optim.hardware.model import graphinfo
from optim.hardware.model.band import Band, measured_band, residual_band
from optim.hardware.model.ortplan import Kernel, apply_plan, ort_plan
from optim.hardware.model.roofline import (
    PrecisionPath,
    layer_times,
    precision_of_bits,
    resolve_precision,
    ridge_intensity,
    roof_curve,
)
from optim.measure.layer_profile import profile_layers

FIT_COLUMNS = ["weights_bytes", "peak_act_bytes", "memory_bytes", "onchip_bytes"]


@dataclass(frozen=True)
class Estimate:
    """What a variant costs on one device. Every number is an estimate unless ``measured`` is True.

    ``band_low_ms``/``band_high_ms`` bound the total by the device's validation residuals;
    ``confidence_note`` says where the band comes from (and flags a poorly validated device);
    ``calibration`` is the host profile's state (``calibrated``, ``fallback``, ``calibrating``, ...) and
    empty for other devices."""

    device_id: str
    device_name: str
    total_ms: float
    layers: pd.DataFrame
    fits: bool
    fit_notes: list[str]
    energy_mj: float
    precision_path: str
    notes: list[str]
    batch: int = 1
    measured: bool = False
    memory: dict[str, float] = field(default_factory=dict)
    bound_share: dict[str, float] = field(default_factory=dict)
    band_low_ms: float = 0.0
    band_high_ms: float = 0.0
    confidence_note: str = ""
    poorly_validated: bool = False
    calibration: str = ""


def _summary_layers(handle: ModelHandle) -> pd.DataFrame:
    from optim.graph.summary import summarize

    return summarize(handle).layers


def variant_precision(handle: ModelHandle, device: Device) -> str:
    """The precision the variant asks for: ``meta['bits']`` or, when absent, read from the graph.

    A simulated variant (``executable`` False) runs as FP32 on the machines that measure it."""
    bits = handle.meta.get("bits")
    if bits is None:
        bits = graphinfo.infer_precision_bits(handle.model)
    if device.flag("measured") or device.id == "host":
        if handle.meta.get("executable", True) is False:
            return "fp32"
    return precision_of_bits(bits)


def memory_fit(layers: pd.DataFrame, device: Device, path: PrecisionPath) -> tuple[bool, list[str], dict[str, float]]:
    """Weights + peak activations vs memory (and on-chip memory); a clear 'does not fit'."""
    weights = float(layers["weight_bytes"].sum())
    peak_act = float(layers["act_bytes"].max()) if len(layers) else 0.0
    mem, onchip = device.spec("memory"), device.spec("onchip")
    info = {"weights_bytes": weights, "peak_act_bytes": peak_act, "memory_bytes": mem, "onchip_bytes": onchip}
    mb = 1e6
    notes: list[str] = []
    if device.flag("activations_onchip"):
        fits = weights <= mem and peak_act <= onchip
        notes.append(f"weights {weights / mb:.2f} MB vs {mem / mb:.2f} MB flash: "
                     + ("fits" if weights <= mem else "does not fit"))
        notes.append(f"peak activations {peak_act / mb:.3f} MB vs {onchip / mb:.2f} MB SRAM: "
                     + ("fits" if peak_act <= onchip else "does not fit"))
    elif device.flag("weights_onchip_cache"):
        fits = True
        over = max(0.0, weights - onchip)
        notes.append(f"weights {weights / mb:.2f} MB vs {onchip / mb:.1f} MB on-chip cache: "
                     + ("all cached" if over == 0 else f"{over / mb:.2f} MB streamed from the host every inference"))
    else:
        fits = weights + peak_act <= mem
        notes.append(f"weights + peak activations {(weights + peak_act) / mb:.1f} MB vs {mem / 1e9:.1f} GB memory: "
                     + ("fits" if fits else "does not fit"))
        notes.append(f"weights {'fit' if weights <= onchip else 'do not fit'} in {onchip / mb:.1f} MB on-chip "
                     + ("(can stay resident)" if weights <= onchip else "(streamed from DRAM every inference)"))
    if not fits:
        notes.insert(0, f"does not fit on {device.name}")
    notes.append("peak activations = largest single layer input+output (approximate liveness)")
    return fits, notes, info


def _transfer_ms(layers: pd.DataFrame, device: Device, info: dict[str, float], model_io_bytes: float) -> float:
    if "offchip_bandwidth" not in device.specs:
        return 0.0
    over = max(0.0, info["weights_bytes"] - info["onchip_bytes"]) if device.flag("weights_onchip_cache") else 0.0
    return (over + model_io_bytes) / device.spec("offchip_bandwidth") * 1e3


def _io_bytes(handle: ModelHandle, path: PrecisionPath, batch: int) -> float:
    inits = {i.name for i in handle.model.graph.initializer}
    total = 0
    for vi in [*handle.model.graph.input, *handle.model.graph.output]:
        if vi.name in inits:
            continue
        n = 1
        for d in vi.type.tensor_type.shape.dim:
            n *= d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else batch
        total += n
    return float(total) * path.act_bytes


def _sparsity_notes(handle: ModelHandle, device: Device) -> tuple[bool, list[str]]:
    if handle.meta.get("prune_kind") != "unstructured":
        return False, []
    pattern = handle.meta.get("sparsity_pattern")
    if pattern == "2:4" and device.flag("sparsity_2_4"):
        return True, [f"2:4 structured sparsity: {device.name} sparse tensor cores halve conv/gemm compute"]
    why = ("it accelerates only 2:4 structured sparsity" if device.flag("sparsity_2_4")
           else "dense kernels skip no zeros")
    return False, [f"unstructured sparsity gives no speed-up on {device.name}: {why}; "
                   "weights are still read dense (the gzip size shrinks, not the latency)"]


def annotated_layers(handle: ModelHandle, device: Device, plan: list[Kernel] | None = None) -> pd.DataFrame:
    """Summary rows with op class, fusion and layout rows: on a ``live_plan`` device (this machine) from the
    kernels ONNX Runtime builds for the graph here (``plan``, else :func:`.ortplan.ort_plan`), otherwise
    (or when ORT cannot build it) predicted by :mod:`.graphinfo`."""
    block = int(device.specs["channel_block"].value) if "channel_block" in device.specs else 0
    if device.flag("live_plan"):
        plan = plan if plan is not None else ort_plan(handle.model)
        if plan is not None:
            base = graphinfo.annotate(_summary_layers(handle), handle.model, False, 0, "ort_cpu")
            return apply_plan(base, handle.model, plan, block)
    style = "ort_cpu" if device.flag("ort_cpu_fusion") else "aggressive"
    return graphinfo.annotate(_summary_layers(handle), handle.model, device.flag("fuses_activations"), block, style)


def priced_layers(handle: ModelHandle, device: Device, batch: int = 1, plan: list[Kernel] | None = None
                  ) -> tuple[pd.DataFrame, PrecisionPath, bool]:
    """(per-layer roofline table, precision path, 2:4-sparse) of ``handle`` on ``device``."""
    path = resolve_precision(device, variant_precision(handle, device))
    if device.flag("live_plan") and path.mode == "emulated":
        # ONNX Runtime CPU casts FP16 weights to FP32 once at load: the kernels read FP32 weights
        path = replace(path, storage=path.compute)
    sparse, _ = _sparsity_notes(handle, device)
    annotated = annotated_layers(handle, device, plan)
    return layer_times(annotated, device, path, batch=batch, sparse_2_4=sparse), path, sparse


def _measured_layers(handle: ModelHandle, layers: pd.DataFrame) -> pd.DataFrame:
    """Add ``measured_ms``: this machine's per-kernel profile (ORT_ENABLE_ALL) mapped to graph nodes by the
    project's one kernel→node mapper (:func:`optim.measure.layer_profile.profile_layers`)."""
    per_node = profile_layers(handle, threads=1, opt_level="all", runs=10).table.set_index("node")["ms"]
    out = layers.copy()
    out["measured_ms"] = out["node"].map(per_node).fillna(0.0)
    return out


def _measured_total(handle: ModelHandle, device: Device, batch: int) -> tuple[float, Band]:
    from optim.measure import core as measure

    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device.id == "cuda_measured" else None
    lat = measure.latency(handle, batch=batch, threads=1, opt_level="all", budget_s=0.5, providers=providers)
    return float(lat.median_ms), measured_band(float(lat.median_ms), float(lat.p90_ms), int(lat.runs))


def estimate_with_device(handle: ModelHandle, device: Device, batch: int = 1, calibration: str = "",
                         plan: list[Kernel] | None = None) -> Estimate:
    """Latency (ms) with its band, per-layer table, memory fit and rough energy of ``handle`` on ``device``
    (``plan``: ORT's kernels for the graph when the caller already has them, see :func:`annotated_layers`)."""
    layers, path, _ = priced_layers(handle, device, batch, plan)
    fits, fit_notes, info = memory_fit(layers, device, path)
    _, notes = _sparsity_notes(handle, device)
    notes = [*device.notes, *notes]
    if path.mode != "native":
        notes.insert(0, path.text)
    transfer = _transfer_ms(layers, device, info, _io_bytes(handle, path, batch))
    run_over = device.spec("run_overhead_us") * 1e3 if "run_overhead_us" in device.specs else 0.0
    total = float(layers["ms"].sum()) + transfer + run_over
    if transfer:
        notes.append(f"host link transfer {transfer:.2f} ms (inputs/outputs and uncached weights)")
    measured = device.flag("measured")
    band = residual_band(total, device.residuals_pct, device.residual_basis)
    if measured:
        est_total = total
        total, band = _measured_total(handle, device, batch)
        if device.id == "host_measured" and batch == 1:
            layers = _measured_layers(handle, layers)
            notes.append("per-layer measured_ms: ORT profile of fused kernels, mapped to the conv/gemm they compute")
        notes.append(f"measured {total:.3f} ms with ONNX Runtime; roofline columns estimate {est_total:.3f} ms")
    energy = device.spec("power") * total  # W × ms = mJ
    notes.append(f"energy ≈ power × time = {device.spec('power'):g} W × {total:.3f} ms (rough: board/TDP power)")
    busy = layers[layers["bound"].isin(["compute", "memory"])]
    share = busy.groupby("bound")["ms"].sum() / max(busy["ms"].sum(), 1e-12)
    return Estimate(device.id, device.name, total, layers, fits, fit_notes, energy, path.text, notes,
                    batch, measured, info, {k: float(v) for k, v in share.items()}, band.low_ms, band.high_ms,
                    band.note, band.poorly_validated, calibration)


def roofline_points_for(handle: ModelHandle, device: Device, batch: int = 1) -> dict[str, Any]:
    """Chart data: per-layer (intensity, attained GOPS) and the device's peak/effective roofs."""
    layers, path, _ = priced_layers(handle, device, batch)
    pts = layers[layers["ms"] > 0].copy()
    pts["attained_gops"] = pts["ops"] / (pts["ms"] * 1e-3) / 1e9
    return {
        "layers": pts[["node", "op_type", "op_class", "intensity", "attained_gops", "bound", "ms"]].reset_index(drop=True),
        "roof": roof_curve(device, path.compute),
        "ridge_intensity": ridge_intensity(device, path.compute),
        "peak_gops": device.peak(path.compute) / 1e9,
        "bandwidth_gbs": device.spec("bandwidth") / 1e9,
        "precision_path": path.text,
        "device_name": device.name,
    }
