"""The tasks a worker runs, by kind: plain data in (JSON args, byte blobs), plain data out (:mod:`.codec`).

* ``load_model``: upload bytes → checked ONNX bytes + handle facts (TorchScript/.pt2 are converted in
  the sandbox, :mod:`optim.io.sandbox`), optionally with synthetic inputs; ``load_data``: evaluation data
  checked against the model;
* ``summarize``, ``baseline``: the Home page's summary and measured baseline;
* ``sweep``, ``sensitivity``: build/measure variants or perturbed layers, results to the store named in
  the args (the server only reads it);
* ``probe``: a self-test of the limits (sleep, spin, allocate, crash) for tests and operators.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from typing import Any

from optim.errors import OptimError
from optim.io import load as model_io
from optim.io import model_data
from optim.jobs import codec
from optim.jobs.registry import JobContext, task
from optim.jobs.spec import JobSpec

# Engine modules beyond loading are imported inside the tasks that need them: a worker that only loads
# uploads starts in ~1 s instead of paying for torch (sweeps, sensitivity).


@task("probe")
def probe(spec: JobSpec, ctx: JobContext) -> Any:
    """``mode``: echo | sleep | spin | alloc | crash | cwd | progress (what the limits tests need)."""
    mode = spec.args.get("mode", "echo")
    if mode == "sleep":
        time.sleep(float(spec.args.get("seconds", 3600)))
    elif mode == "spin":
        end = time.monotonic() + float(spec.args.get("seconds", 3600))
        while time.monotonic() < end:
            pass
    elif mode == "alloc":
        blocks = [bytearray(int(spec.args.get("bytes", 2**40)))]
        return {"allocated": len(blocks[0])}
    elif mode == "crash":
        os.kill(os.getpid(), signal.SIGSEGV)
    elif mode == "cwd":
        (ctx.scratch / "left-behind.txt").write_text("x")
        return {"cwd": os.getcwd(), "pid": os.getpid(), "listing": sorted(os.listdir("."))}
    elif mode == "progress":
        for i in range(int(spec.args.get("steps", 3))):
            ctx.progress({"done": i + 1})
            if ctx.cancelled():
                return {"cancelled_at": i + 1}
            time.sleep(float(spec.args.get("step_s", 0.05)))
        return {"cancelled_at": None}
    return {"args": spec.args, "pid": os.getpid()}, {k: v[::-1] for k, v in spec.blobs.items()}


# --- engine tasks --------------------------------------------------------------------------------
def _progress_dict(p: Any) -> dict[str, Any]:
    d = dataclasses.asdict(p) if dataclasses.is_dataclass(p) else dict(vars(p))
    return codec.plain(d)


@task("load_model")
def load_model(spec: JobSpec, ctx: JobContext) -> Any:
    """Upload bytes → checked ONNX bytes (+ ``n_synthetic`` synthetic inputs when asked, bounded)."""
    shapes = spec.args.get("input_shapes")
    handle = model_io.load(spec.blobs["data"], filename=str(spec.args.get("filename") or "model"),
                           input_shapes={k: tuple(v) for k, v in shapes.items()} if shapes else None)
    blobs = codec.handle_blobs(handle)
    facts: dict[str, Any] = {"handle": codec.handle_facts(handle), "synthetic": None}
    n = spec.args.get("n_synthetic")
    if n:
        try:
            ds = model_data.synthetic_dataset(handle, int(n))
        except OptimError as err:
            facts["synthetic_error"] = str(err)[:500]
        else:
            facts["synthetic"], more = codec.dataset_blobs(ds, "synthetic")
            blobs.update(more)
    return facts, blobs


@task("load_data")
def load_data(spec: JobSpec, ctx: JobContext) -> Any:
    handle = codec.handle_from(spec.blobs, spec.args.get("model"))
    a = spec.args
    ds = model_data.load_data_for(handle, spec.blobs["data"], str(a.get("filename") or "data"),
                                  label_column=a.get("label_column"), mean=a.get("mean"), std=a.get("std"))
    facts, blobs = codec.dataset_blobs(ds, "data")
    return {"data": facts}, blobs


@task("summarize")
def summarize(spec: JobSpec, ctx: JobContext) -> Any:
    from optim.graph import summary
    from optim.present import views

    s = summary.summarize(codec.handle_from(spec.blobs, spec.args.get("model")))
    ops = sorted(s.op_histogram.items(), key=lambda kv: -kv[1])
    return {"facts": codec.plain(views.summary_facts(s)), "ops": codec.plain(ops),
            "layers": codec.frame_plain(s.layers)}


@task("baseline")
def baseline(spec: JobSpec, ctx: JobContext) -> Any:
    """Accuracy ± 95 % interval on (a subset of) the test set when it has labels, and batch-1 latency
    (:func:`optim.measure.model.measure_model`, the one "measure one model")."""
    from optim.measure.model import measure_model

    handle = codec.handle_from(spec.blobs, spec.args.get("model"))
    test = codec.unpack_datasets(spec.args.get("datasets") or {}, spec.blobs).get("test")
    eval_limit = spec.args.get("eval_limit")
    if test is not None and test.y is None:
        test = None
    sub = test.subset(min(int(eval_limit), len(test))) if test is not None and eval_limit else test
    m = measure_model(handle, sub, budget_s=float(spec.args.get("budget_s", 0.25)), min_runs=10)
    out: dict[str, Any] = {"top1": None, "top1_lo": None, "top1_hi": None, "n": 0}
    acc = m.evaluation.accuracy if m.evaluation is not None else None
    if acc is not None:
        out.update(top1=acc.top1, top1_lo=acc.top1_lo, top1_hi=acc.top1_hi, n=acc.n)
    lat = m.latency
    out.update(latency_ms=lat.median_ms, latency_p90_ms=lat.p90_ms, runs=lat.runs, threads=lat.threads)
    return codec.plain(out)


def _sweep_executor(args: dict[str, Any]) -> Any:
    from optim.sweep.executors import LocalExecutor
    from optim.sweep.ray_executor import executor_for

    executor = executor_for(str(args.get("run_on") or ""))  # "": $OPTIM_RAY_ADDRESS, else this machine
    if isinstance(executor, LocalExecutor) and args.get("workers"):
        return LocalExecutor(int(args["workers"]))
    return executor


@task("sweep")
def sweep_job(spec: JobSpec, ctx: JobContext) -> Any:
    """Build, measure and store a sweep's variants (``optim.sweep.run.run_sweep``) into the given store."""
    from optim.sweep import run as sweep_run
    from optim.sweep.store import Store

    handle = codec.handle_from(spec.blobs, spec.args.get("model"))
    ds = codec.unpack_datasets(spec.args.get("datasets") or {}, spec.blobs)
    config = sweep_run.SweepConfig(**spec.args["config"])
    sid = sweep_run.run_sweep(handle, ds.get("test"), ds.get("calib"), config, Store(spec.args["store"]),
                              progress=lambda p: ctx.progress(_progress_dict(p)), cancel=ctx.cancelled,
                              train=ds.get("train"), executor=_sweep_executor(spec.args))
    return {"sweep_id": sid}


@task("sensitivity")
def sensitivity_job(spec: JobSpec, ctx: JobContext) -> Any:
    """Every weight layer perturbed alone at each setting; the table goes to the store."""
    from optim.analysis.sensitivity import analyze
    from optim.sweep.store import Store

    handle = codec.handle_from(spec.blobs, spec.args.get("model"))
    data = codec.unpack_datasets(spec.args.get("datasets") or {}, spec.blobs)["data"]
    settings = spec.args["settings"]
    store, t0, total = Store(spec.args["store"]), time.time(), int(spec.args.get("total", 1))
    if store.sensitivity(handle.content_hash, data.content_hash, settings) is not None:
        return {"stored": True}

    def report(fraction: float, current: str) -> None:
        eta = (time.time() - t0) * (1 - fraction) / fraction if fraction > 0 else None
        ctx.progress({"fraction": fraction, "done": round(fraction * total), "total": total, "current": current,
                      "eta_s": eta})

    df = analyze(handle, data.x, data.y, prune_levels=tuple(settings["prune_levels"]),
                 quant_bits=tuple(settings["quant_bits"]), progress=report, should_cancel=ctx.cancelled,
                 feeds=data.feeds, constants=data.constants)
    store.put_model(handle)
    store.put_dataset(data)
    store.put_sensitivity(handle.content_hash, data.content_hash, settings, df)
    return {"stored": True}


@task("predict")
def predict_job(spec: JobSpec, ctx: JobContext) -> Any:
    """Logits for ``x`` (and how long the run took, session included: the sensitivity estimate times it)."""
    from optim.measure import core as measure

    handle = codec.handle_from(spec.blobs, spec.args.get("model"))
    x = codec.array_from(spec.blobs["x"])
    t0 = time.perf_counter()
    logits = measure.predict(handle.model, x, threads=int(spec.args.get("threads", 1)))
    return {"seconds": time.perf_counter() - t0}, {"logits": codec.array_bytes(logits)}


@task("fusion")
def fusion_job(spec: JobSpec, ctx: JobContext) -> Any:
    """Graph nodes vs the kernels ONNX Runtime runs after its optimisations (model written to the scratch dir)."""
    from optim.present import variant_view

    path = ctx.scratch / "model.onnx"
    path.write_bytes(spec.blobs["model"])
    return {"table": codec.frame_plain(variant_view.runtime_fusion(str(path)))}
