"""Fit this machine's efficiency and overhead factors from ONNX Runtime per-node profiles.

1. Micro-benchmarks (one thread): peak FP32 from an ORT MatMul, memory bandwidth from a large copy.
2. Per-kernel profiles (``measure.profile_nodes`` at ORT_ENABLE_ALL, the level latency is measured at)
   of the calibration models; fused kernels are mapped back to the conv/gemm they compute
   (:func:`map_fused_nodes`) and joined with the summary's per-node MACs and bytes.
   ONNX Runtime's layout reorders (named only ``ReorderOutput_token_N``) are shared among the reorders
   :mod:`optim.hardware.ortcpu` predicts; odd-width calibration models cover the non-NCHWc conv paths.
3. Per op class (conv, conv_nchw, conv1x1_nchw, dwconv, dwconv_nchw, gemm, elementwise, reorder, shape)
   a least-squares fit of
   ``max(ops / (peak × e_c), bytes / (bw × e_m)) + overhead`` to the node times, in log space and
   pulled gently towards priors so a class with few nodes stays sane (``scipy.optimize.least_squares``).
4. Whole-model correction: the per-run overhead is measured on an empty graph; profiling inflates
   each kernel by its own timer cost, so a kernel-time scale and a per-kernel profiler cost are fitted
   to the measured whole-model latencies of the same models (bounded linear least squares).
No library fits a roofline to ORT traces, hence this module.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pandas as pd

from optim.handle import ModelHandle
from optim.hardware import graphinfo
from optim.hardware.catalog import HOST_PROFILE_PATH, OP_CLASSES
from optim.hardware.roofline import COMPUTE_CLASSES

ODD_WIDTH = 0.7
CONV_VARIANTS = ("conv_nchw", "conv1x1_nchw", "dwconv_nchw", "gemm_int8")
INT8_CALIBRATION: tuple[str, ...] = ()
PRIORS = {"eff_compute": 0.3, "eff_memory": 1.0, "overhead_us": 5.0}
BOUNDS = {"eff_compute": (1e-3, 3.0), "eff_memory": (1e-3, 50.0), "overhead_us": (0.05, 2000.0)}


def measure_peak_gflops(n: int = 256, budget_s: float = 0.4) -> float:
    """Best single-thread FP32 MatMul rate (GFLOPS) of ONNX Runtime itself (MLAS), over a short loop."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.random((n, n), dtype=np.float32), "w")
    vi = [helper.make_tensor_value_info(k, TensorProto.FLOAT, [n, n]) for k in ("x", "y")]
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "peak", [vi[0]], [vi[1]], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    x = rng.random((n, n), dtype=np.float32)
    best, start = float("inf"), time.perf_counter()
    while time.perf_counter() - start < budget_s:
        t0 = time.thread_time()
        sess.run(None, {"x": x})
        best = min(best, time.thread_time() - t0)
    return 2.0 * n**3 / best / 1e9


def measure_bandwidth_gbs(mbytes: int = 64, repeats: int = 5) -> float:
    """Best single-thread copy bandwidth (GB/s, read + write bytes) of a buffer far larger than caches."""
    src = np.ones(mbytes * 2**20 // 8)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.thread_time()
        np.copyto(dst, src)
        best = min(best, time.thread_time() - t0)
    return 2 * src.nbytes / best / 1e9


def default_calibration_models(minimum: int = 3) -> list[ModelHandle]:
    """The bundled sample models whose artifacts exist, topped up with MLPerf Tiny reference models
    (ResNet-8, DS-CNN) until there are ``minimum`` (two whole-model unknowns need several models), plus
    ResNet-8, DS-CNN and MobileNetV1 at width 0.7 (and ResNet-8 at 1.4): their 11/22/45/89/90 channels
    exercise the slower non-NCHWc dense and depthwise conv paths that pruned models fall into and no
    bundled model shows. Validation uses other widths (0.5, 1, 2) and the samples' compression variants.
    :data:`INT8_CALIBRATION` names reference models whose INT8 variants would calibrate the integer
    kernel classes; it is empty because INT8 ResNet-8 + MobileNetV1-0.25 (depthwise QLinearConv at
    8-64 channels, ~40x slower per MAC than FP32) made the held-out INT8 samples +54 % / +128 % off,
    while the FP32 factors at the VNNI peak give -4 % / -23 %."""
    handles: list[ModelHandle] = []
    try:
        from optim.io import samples as samples

        for info in samples.list_samples():
            if info.model_path.exists():
                handles.append(samples.load_sample(info.name)[0])
    except Exception:  # noqa: BLE001 - samples not built yet: reference models only
        handles = []
    from optim.hardware.reference_models import reference_model

    for name in ("resnet8", "ds_cnn", "mobilenet_v1_025")[: max(0, minimum - len(handles))]:
        handles.append(reference_model(name))
    handles += [reference_model(n, ODD_WIDTH) for n in ("resnet8", "ds_cnn", "mobilenet_v1_025")]
    handles.append(reference_model("resnet8", 2 * ODD_WIDTH))
    handles += [quantized(reference_model(n)) for n in INT8_CALIBRATION]
    return handles


def channel_block() -> int:
    """This CPU's NCHWc channel block (16 floats with AVX-512, 8 otherwise)."""
    from optim.hardware.host import cpu_facts

    return 16 if "avx512f" in cpu_facts()["flags"] else 8


def int8_peak_ratio() -> float:
    """Host INT8 peak / FP32 peak as the host device states it (4 with VNNI, 1 without)."""
    from optim.hardware.host import host_device

    spec = host_device(None).specs
    return spec["peak_int8"].value / spec["peak_fp32"].value


def quantized(handle: ModelHandle) -> ModelHandle:
    """INT8 static QDQ variant of ``handle`` (per-channel weights), calibrated on 16 seeded random inputs."""
    from optim.io.data import Dataset
    from optim.io.load import synthesize_inputs
    from optim.passes.base import PassContext, get_pass

    x = np.concatenate([next(iter(synthesize_inputs(handle.model, 1, seed=i).values())) for i in range(16)])
    spec = get_pass("quantize")
    q = spec.run(handle, spec.config_cls(mode="int8_static"), PassContext(calib=Dataset(x, None, "random")))
    return ModelHandle(q.model, f"{handle.name}_int8", meta=q.meta)


def robust_profile(handle: ModelHandle, repeats: int = 4, runs: int = 5) -> pd.DataFrame:
    """Per-node ms at ORT_ENABLE_ALL: the minimum over ``repeats`` profiles of ``runs`` runs each.

    On a shared machine a preempted run inflates a node's mean several-fold; the minimum of a few short
    means is far more repeatable than one long mean."""
    from optim.measure import core as measure

    tables = [measure.profile_nodes(handle, threads=1, opt_level="all", runs=runs).table[["node", "op_type", "ms"]]
              for _ in range(repeats)]
    return pd.concat(tables).groupby(["node", "op_type"], as_index=False)["ms"].min()


def map_fused_nodes(model: onnx.ModelProto, profiled: Sequence[str]) -> dict[str, str]:
    """Profiled node name (ORT_ENABLE_ALL) → the graph's conv/gemm node that kernel computes.

    ORT keeps plain node names, prefixes activation fusions with ``fused `` (FusedConv, FusedGemm),
    suffixes the integer kernels it builds from Q/DQ groups with ``_token_N`` (QLinearConv) and
    names NCHWc kernels ``<output of the last fused node>_nchwc``; we walk
    from that output back through the fused chain (Relu, Add, BN, ...) to the conv/gemm."""
    names = {n.name for n in model.graph.node}
    producer = {o: n for n in model.graph.node for o in n.output}
    mapping: dict[str, str] = {}
    for prof_name in profiled:
        plain = re.sub(r"_token_\d+$", "", prof_name.removeprefix("fused "))
        if plain in names:
            mapping[prof_name] = plain
            continue
        node = producer.get(prof_name.removesuffix("_nchwc"))
        while node is not None and node.op_type in graphinfo.FUSABLE_OPS:
            node = next((producer[i] for i in node.input if i in producer
                         and producer[i].op_type not in {"Constant", "Identity"}), None)
        if node is not None:
            mapping[prof_name] = node.name
    return mapping


def node_table(handle: ModelHandle, repeats: int = 4, runs: int = 5, target_ms: float | None = None) -> pd.DataFrame:
    """Measured fused kernels of one model joined with the summary counts of the node each computes.

    With ``target_ms`` (the model's contention-free whole-run time less the per-run overhead) the kernel
    times are rescaled to sum to it: the profiler times kernels in wall-clock, which preemption on a
    shared machine inflates by a different factor in every profiling session (1.05-1.35x seen here),
    while the shares between kernels are stable."""
    from optim.graph.summary import summarize

    layers = graphinfo.annotate(summarize(handle).layers, handle.model, fuses=False, channel_block=channel_block())
    prof = robust_profile(handle, repeats, runs)
    mapping = map_fused_nodes(handle.model, prof["node"].tolist())
    prof["graph_node"] = prof["node"].map(mapping)
    df = layers.merge(prof[["graph_node", "ms"]], left_on="node", right_on="graph_node", how="inner")
    df = df.groupby("node", as_index=False, sort=False).agg({**{c: "first" for c in layers.columns if c != "node"},
                                                             "ms": "sum"})
    reorders = layers[layers["op_class"] == "reorder"].copy()
    is_reorder = prof["op_type"].isin(["ReorderInput", "ReorderOutput"]) | (
        (prof["op_type"] == "Transpose") & prof["graph_node"].isna())
    if len(reorders) and is_reorder.any():
        df = pd.concat([df, _split_reorders(reorders, float(prof.loc[is_reorder, "ms"].sum()))], ignore_index=True)
        prof.loc[is_reorder, "graph_node"] = "reorder"
    is_compute = df["op_class"].isin(COMPUTE_CLASSES)
    # the estimator prices an INT8 model's every node at the INT8 peak and one byte per element
    int8 = graphinfo.infer_precision_bits(handle.model) == 8
    speed, elem_bytes = (int8_peak_ratio(), 1.0) if int8 else (1.0, 4.0)
    df["ops"] = np.where(is_compute, 2.0 * df["macs"].astype(float) * df["mac_pad"].astype(float),
                         df["flops"].astype(float)) / speed
    df["bytes"] = (df["params"] + df["act_in_elems"] + df["act_out_elems"]).astype(float) * elem_bytes
    df["model"] = handle.name
    unmapped = float(prof.loc[prof["graph_node"].isna(), "ms"].sum())
    factor = 1.0
    if target_ms is not None and df["ms"].sum() + unmapped > 0:
        factor = max(target_ms, 1e-6) / (df["ms"].sum() + unmapped)
        df["ms"] = df["ms"] * factor
    df.attrs["unmapped_ms"] = unmapped * factor
    df.attrs["wall_inflation"] = 1.0 / factor
    return df


def _split_reorders(rows: pd.DataFrame, total_ms: float) -> pd.DataFrame:
    """The profile names layout reorders ``ReorderOutput_token_N``, which says not which tensor they move;
    share the model's measured reorder time among the predicted reorders in proportion to a prior
    (2 us + bytes moved at 20 GB/s)."""
    nbytes = (rows["act_in_elems"] + rows["act_out_elems"]).astype(float) * 4
    prior = 2e-3 + nbytes / 20e9 * 1e3
    return rows.assign(ms=total_ms * prior / prior.sum())


def _predict(params: np.ndarray, ops: np.ndarray, nbytes: np.ndarray, peak: float, bw: float) -> np.ndarray:
    e_c, e_m, over = np.exp(params)
    return np.maximum(ops / (peak * e_c), nbytes / (bw * e_m)) * 1e3 + over * 1e-3


def _objective(pred: np.ndarray, meas: np.ndarray, w: np.ndarray, params: np.ndarray, prior: np.ndarray,
               prior_weight: float) -> np.ndarray:
    """Sum of squared weighted log errors over nodes (last axis) plus the pull towards the priors."""
    data = (w * (np.log(pred) - np.log(meas))) ** 2
    return data.sum(-1) + (prior_weight**2) * ((params - prior) ** 2).sum(-1)


def fit_class(rows: pd.DataFrame, peak: float, bw: float, prior_weight: float = 0.3,
              priors: dict[str, float] | None = None, eff_memory: float | None = None,
              overhead_us: float | None = None) -> dict[str, float]:
    """Fit (eff_compute, eff_memory, overhead_us) of one op class to its node times (ms); a given
    ``eff_memory`` is held fixed (the memory system does not depend on the op), and so is a given
    ``overhead_us`` (a conv variant seen in a few same-shaped layers cannot tell overhead from speed).

    A log-spaced grid search followed by a local least-squares polish: the ``max`` makes the objective
    non-smooth, and a gradient method alone was seen to stall far from the optimum."""
    from scipy.optimize import least_squares

    keys = ("eff_compute", "eff_memory", "overhead_us")
    prior = np.log([(priors or PRIORS)[k] for k in keys])
    lo = np.log([BOUNDS[k][0] for k in keys])
    hi = np.log([BOUNDS[k][1] for k in keys])
    for i, fixed in ((1, eff_memory), (2, overhead_us)):
        if fixed is not None:
            prior[i] = np.log(fixed)
            lo[i], hi[i] = prior[i] - 1e-4, prior[i] + 1e-4
    ops, nbytes = rows["ops"].to_numpy(float), rows["bytes"].to_numpy(float)
    meas = np.maximum(rows["ms"].to_numpy(float), 1e-5)
    w = np.sqrt(meas / meas.sum() * len(meas))
    grids = [np.linspace(lo[i], hi[i], n) for i, n in enumerate((25, 25, 40))]
    for i, fixed in ((1, eff_memory), (2, overhead_us)):
        if fixed is not None:
            grids[i] = prior[i:i + 1]
    g = np.stack(np.meshgrid(*grids, indexing="ij"), -1).reshape(-1, 3)
    e = np.exp(g)
    pred = (np.maximum(ops / (peak * e[:, :1]), nbytes / (bw * e[:, 1:2])) * 1e3 + e[:, 2:3] * 1e-3)
    best = g[int(np.argmin(_objective(pred, meas, w, g, prior, prior_weight)))]

    def resid(p: np.ndarray) -> np.ndarray:
        data = w * (np.log(_predict(p, ops, nbytes, peak, bw)) - np.log(meas))
        return np.concatenate([data, prior_weight * (p - prior)])

    sol = least_squares(resid, np.clip(best, lo + 1e-6, hi - 1e-6), bounds=(lo, hi))
    x = sol.x if sol.cost * 2 <= _objective(
        _predict(best, ops, nbytes, peak, bw), meas, w, best, prior, prior_weight) else best
    e_c, e_m, over = np.exp(x)
    return {"eff_compute": float(e_c), "eff_memory": float(e_m), "overhead_us": float(over), "nodes": len(rows)}


def fit_factors(table: pd.DataFrame, peak: float, bw: float) -> dict[str, dict[str, float]]:
    """Per-class factors for every class that has nodes in ``table``.

    Dense convs are fitted first; their factors are the prior of the other compute classes (the same
    MLAS GEMM kernels run them), so a class seen only in a few memory-bound layers — the classifier Gemm
    of a CNN — does not keep an arbitrary compute efficiency; they share the convs' memory efficiency,
    and the other conv kernels (:data:`CONV_VARIANTS`) its per-kernel overhead too."""
    out: dict[str, dict[str, float]] = {}
    if (table["op_class"] == "conv").any():
        out["conv"] = fit_class(table[table["op_class"] == "conv"], peak, bw)
    compute_prior = {k: out["conv"][k] for k in PRIORS} if "conv" in out else None
    for c in OP_CLASSES:
        rows = table[table["op_class"] == c]
        if c in out or rows.empty:
            continue
        compute = compute_prior is not None and c in COMPUTE_CLASSES
        out[c] = fit_class(rows, peak, bw, priors=compute_prior if compute else None,
                           eff_memory=compute_prior["eff_memory"] if compute else None,
                           overhead_us=compute_prior["overhead_us"] if compute and c in CONV_VARIANTS else None)
    return out


def _profile_dict(peak: float, bw: float, classes: dict[str, Any], names: Sequence[str]) -> dict[str, Any]:
    return {
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "peak_fp32": {"value": round(peak, 2), "unit": "GFLOPS", "tag": "measured",
                      "source": "single-thread ONNX Runtime MatMul 256x256 FP32, best of a 0.4 s loop by thread CPU time"},
        "bandwidth": {"value": round(bw, 2), "unit": "GB/s", "tag": "measured",
                      "source": "single-thread 64 MiB numpy copy (read + write), best of 5 by thread CPU time"},
        "classes": classes, "calibration_models": list(names), "run_overhead_us": 0.0,
        "opt_level": "all", "threads": 1, "cpu_model": _cpu_model(),
    }


def _cpu_model() -> str:
    from optim.hardware.host import cpu_facts

    return str(cpu_facts()["model"])


def measured_latency_ms(handle: ModelHandle, budget_s: float = 0.3, min_runs: int = 10,
                        clock: str = "cpu") -> float:
    """Whole-model latency (ORT_ENABLE_ALL, 1 intra-op thread, batch 1), median over the timed runs.

    ``clock="cpu"`` times the calling thread's CPU time: with one intra-op thread ONNX Runtime runs
    every kernel on the caller, so this equals wall-clock latency on a quiet machine, but unlike wall
    time it is not inflated when other jobs preempt us (this project's 2 shared cores: ResNet-18 read
    ~50 ms wall vs 16.4 ms CPU under load, 16.4 ms being the sum of its per-kernel minima).
    ``clock="wall"`` gives the wall-clock median, what ``measure.latency`` reports."""
    from optim.io.load import synthesize_inputs
    from optim.measure import core as measure

    timer = time.thread_time if clock == "cpu" else time.perf_counter
    sess = measure.make_session(handle, threads=1, opt_level="all")
    feeds = synthesize_inputs(handle.model, batch=1)
    for _ in range(3):
        sess.run(None, feeds)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - start < budget_s:
        t0 = timer()
        sess.run(None, feeds)
        times.append(timer() - t0)
    return float(np.median(times)) * 1e3


def estimate_host(handle: ModelHandle, profile: dict[str, Any] | None) -> float:
    """Estimated ms for ``handle`` on this machine under ``profile`` (without touching the saved file)."""
    from optim.hardware.estimator import estimate_with_device
    from optim.hardware.host import host_device

    return estimate_with_device(handle, host_device(profile)).total_ms


def _host_layers(handle: ModelHandle, profile: dict[str, Any]) -> pd.DataFrame:
    from optim.hardware.estimator import estimate_with_device
    from optim.hardware.host import host_device

    return estimate_with_device(handle, host_device(profile)).layers


def measure_run_overhead_ms(runs: int = 300) -> float:
    """Median thread-CPU time of one ``session.run`` of a one-element Identity graph: the fixed cost
    of a call (binding inputs, executor start, output allocation) that every model pays once."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    vi = [helper.make_tensor_value_info(k, TensorProto.FLOAT, [1]) for k in ("x", "y")]
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "noop", [vi[0]], [vi[1]])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    feed = {"x": np.zeros(1, np.float32)}
    times = []
    for _ in range(runs):
        t0 = time.thread_time()
        sess.run(None, feed)
        times.append(time.thread_time() - t0)
    return float(np.median(times)) * 1e3


def fit_whole_model(sums: np.ndarray, counts: np.ndarray, measured: np.ndarray, run_overhead_ms: float,
                    max_delta_ms: float = 0.005) -> tuple[float, float]:
    """(kernel scale s, profiler cost per kernel δ) minimising the relative whole-model error of
    ``s·sums - δ·counts + R`` vs ``measured``, R the measured per-run overhead; 0.5 ≤ s ≤ 2,
    0 ≤ δ ≤ max_delta_ms.

    The profiler's own timing events inflate every profiled kernel by about the same amount, and
    kernels timed one by one run warmer or colder than inside a whole run; whole-model latencies of
    the calibration models pin both down."""
    from scipy.optimize import lsq_linear

    a = np.stack([sums, -counts], axis=1) / measured[:, None]
    b = (measured - run_overhead_ms) / measured
    sol = lsq_linear(a, b, bounds=([0.5, 0.0], [2.0, max(max_delta_ms, 1e-9)]))
    return float(sol.x[0]), float(sol.x[1])


def calibrate(models: Sequence[ModelHandle] | None = None, out: Path | None = HOST_PROFILE_PATH,
              repeats: int = 8, runs: int = 5) -> dict[str, Any]:
    """Run the micro-benchmarks and profiles, fit the factors, save the host profile JSON (unless out=None).

    Kernel shares come from the profiles, rescaled per model to its contention-free CPU-time latency;
    a residual kernel scale and per-kernel cost from the whole-model latencies (:func:`fit_whole_model`)."""
    handles = list(models) if models is not None else default_calibration_models()
    t0 = time.perf_counter()
    peak, bw, run_over = measure_peak_gflops(), measure_bandwidth_gbs(), measure_run_overhead_ms()
    measured = np.array([measured_latency_ms(h) for h in handles])
    tables = [node_table(h, repeats, runs, target_ms=m - run_over) for h, m in zip(handles, measured, strict=True)]
    table = pd.concat(tables, ignore_index=True)
    profile = _profile_dict(peak, bw, fit_factors(table, peak * 1e9, bw * 1e9), [h.name for h in handles])
    profile["profile_wall_inflation"] = {h.name: round(t.attrs["wall_inflation"], 3)
                                         for h, t in zip(handles, tables, strict=True)}
    kernels = [_host_layers(h, profile) for h in handles]
    sums = np.array([k["ms"].sum() for k in kernels])
    counts = np.array([float((k["ms"] > 0).sum()) for k in kernels])
    scale, delta = fit_whole_model(sums, counts, measured, run_over)
    for c in profile["classes"].values():
        c["eff_compute"], c["eff_memory"] = c["eff_compute"] / scale, c["eff_memory"] / scale
        c["overhead_us"] = round(max(scale * c["overhead_us"] - delta * 1e3, BOUNDS["overhead_us"][0]), 3)
    profile["kernel_scale"] = round(scale, 4)
    profile["profiler_cost_us"] = round(delta * 1e3, 3)
    profile["run_overhead_us"] = round(run_over * 1e3, 2)
    predicted = np.array([estimate_host(h, profile) for h in handles])
    errors = np.abs(predicted - measured) / measured * 100
    profile["fit_error_pct"] = round(float(np.median(errors)), 2)
    profile["fit_errors_pct"] = {h.name: round(float(e), 2) for h, e in zip(handles, errors, strict=True)}
    profile["calibration_s"] = round(time.perf_counter() - t0, 1)
    if out is not None:
        Path(out).write_text(json.dumps(profile, indent=2) + "\n")
    return profile
