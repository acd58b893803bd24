"""The dashboard's only door into the engine: small typed functions returning plain values/DataFrames.

Pages (``app.py``, ``pages/*.py``) import this module and nothing else from ``optim``. Everything here
is a thin wrapper over the engine modules (model_io, samples, data, summary, measure, sweep, store,
pareto, hardware, passes); engine imports happen inside functions so the dashboard still starts (and
says what is missing) while a module is unavailable. Nothing here imports streamlit.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd

from optim.errors import ConfigError, OptimError  # noqa: F401  (pages catch OptimError)
from optim.handle import ModelHandle
from optim.jobs import client as jobrun
from optim.jobs import codec, default_limits
from optim.present.charts import (  # noqa: F401  (re-exported for the pages)
    BIT_COLORS,
    KIND_SYMBOLS,
    layer_bars,
    op_histogram_chart,
    pareto_2d,
    pareto_3d,
    quant_error_chart,
    roofline_chart,
    sensitivity_heatmap,
)
from optim.present.learn import prune_demo, quant_demo, sensitivity_table, weight_layers  # noqa: F401
from optim.present.views import (  # noqa: F401
    METRIC_LABELS,
    add_flags,
    apply_constraints,
    baseline_row,
    flags_on_target,
    fmt_ms,
    graph_diff,
    int8_note,
    ms_decimals,
    recommend,
    summary_facts,
)
from optim.sweep.jobs import SweepJob, get_job, job_for_sweep, start_job  # noqa: F401
from optim.sweep.node import hardware_label, hardware_note  # noqa: F401  (hardware_note: for the pages)

DEMO_SAMPLE = "resnet_digits"
MEASURED_DEVICE = "this-cpu"


@dataclass(frozen=True, eq=False)
class Loaded:
    """A model ready for the dashboard: the handle plus its evaluation and calibration data."""

    handle: ModelHandle
    test: Any  # optim.io.data.Dataset (may carry y=None: fidelity only)
    calib: Any  # optim.io.data.Dataset or None
    origin: str  # "sample" or "upload"
    label: str
    train: Any = None  # a training split separate from ``test`` (samples): feeds distillation

    @property
    def key(self) -> str:
        return f"{self.handle.content_hash}:{getattr(self.test, 'content_hash', 'none')}"

    @property
    def has_labels(self) -> bool:
        return self.test is not None and getattr(self.test, "y", None) is not None


# --- models and data ------------------------------------------------------------------------------
def list_samples() -> list[dict[str, Any]]:
    """Bundled samples as dicts (name, description, arch, dataset, fp32_top1, n_test); [] if none built."""
    from optim.io import samples as samples

    try:
        infos = samples.list_samples()
    except OptimError:
        return []
    out = []
    for info in infos:
        d = dataclasses.asdict(info) if dataclasses.is_dataclass(info) else dict(vars(info))
        out.append(d)
    return out


def load_sample(name: str, calib_n: int = 256) -> Loaded:
    from optim.io import samples as samples

    handle, test, train = samples.load_sample(name)
    calib = train.subset(min(calib_n, len(train))) if train is not None and len(train) else None
    return Loaded(handle=handle, test=test, calib=calib, origin="sample", label=name, train=train)


def parse_shapes(text: str) -> dict[str, tuple[int, ...]]:
    """``"input=1,3,224,224; mask=1,128"`` → dict; empty text → {}."""
    from optim.io import load as model_io

    out: dict[str, tuple[int, ...]] = {}
    for part in [p.strip() for p in text.replace("\n", ";").split(";") if p.strip()]:
        name, shape = model_io.parse_input_shape(part)
        out[name] = tuple(shape)
    return out


def load_upload(data: bytes, filename: str, shapes_text: str = "", n_synthetic: int = 128) -> Loaded:
    """Load an uploaded model in a worker process (limits; TorchScript/.pt2 converted in the sandbox); without
    evaluation data the test set is synthetic (fidelity only)."""
    shapes = parse_shapes(shapes_text) or None
    res = jobrun.run("load_model", f"loading {filename[:80]}", {"filename": filename, "input_shapes": shapes,
                                                                "n_synthetic": n_synthetic}, {"data": data})
    handle = codec.handle_from(res.blobs, res.value["handle"])
    handle = handle if handle.name.startswith("upload:") else dataclasses.replace(handle, name=f"upload:{filename}")
    test = codec.dataset_from(res.value.get("synthetic"), res.blobs, "synthetic")
    return Loaded(handle=handle, test=test, calib=test, origin="upload", label=filename)


def synthetic_dataset(handle: ModelHandle, n: int) -> Any:
    """Synthesised inputs (no labels) so an upload without data can still be compared by fidelity; None when
    an input cannot be synthesised (the page then asks for data)."""
    from optim.io.model_data import synthetic_dataset as synth

    try:
        return synth(handle, n)
    except OptimError:
        return None


def attach_data(loaded: Loaded, data: bytes, filename: str) -> Loaded:
    """Evaluation data for an uploaded model, read and checked in a worker; raises ShapeMismatchError /
    DataFormatError with advice."""
    res = jobrun.run("load_data", f"reading {filename[:80]}", {"filename": filename}, {"data": data},
                     handle=loaded.handle)
    ds = codec.dataset_from(res.value["data"], res.blobs, "data")
    calib = ds.subset(min(256, len(ds)))
    return Loaded(handle=loaded.handle, test=ds, calib=calib, origin=loaded.origin, label=loaded.label)


# --- summary and baseline -------------------------------------------------------------------------
def summarize(loaded: Loaded) -> dict[str, Any]:
    """{"facts": dict of headline numbers, "ops": DataFrame(op_type, count), "layers": DataFrame} (worker)."""
    out = jobrun.run("summarize", f"summarising {loaded.label[:80]}", handle=loaded.handle).value
    ops = pd.DataFrame(out["ops"], columns=["op_type", "count"])
    return {"facts": out["facts"], "ops": ops, "layers": codec.frame_from(out["layers"])}


def baseline(loaded: Loaded, eval_limit: int | None = 300, budget_s: float = 0.25) -> dict[str, Any]:
    """Measured baseline (worker): accuracy ± 95 % interval (or None without labels) and batch-1 latency."""
    test = loaded.test if loaded.has_labels else None
    return dict(jobrun.run("baseline", f"measuring {loaded.label[:80]}", {"eval_limit": eval_limit,
                                                                          "budget_s": budget_s},
                           handle=loaded.handle, datasets={"test": test}).value)


# --- knobs ----------------------------------------------------------------------------------------
def pass_available(name: str) -> bool:
    from optim.passes.base import list_passes

    return any(p.name == name for p in list_passes())


def distill_supported() -> bool:
    """True when a distill pass is registered *and* the sweep can schedule it."""
    from optim.sweep import run as sweep

    return pass_available("distill") and "distill" in {f.name for f in dataclasses.fields(sweep.SweepConfig)}


def pass_choices(name: str, field_name: str) -> list[Any]:
    """The ``choices`` metadata of a pass config field ([] when the pass or field is missing)."""
    from optim.passes.base import get_pass

    try:
        spec = get_pass(name)
    except ConfigError:
        return []
    for f in spec.fields():
        if f.name == field_name:
            return list(f.metadata.get("choices", []))
    return []


def list_devices() -> pd.DataFrame:
    """Target hardware catalog (id, name, kind, …) with 'this CPU (measured)' first."""
    rows: list[dict[str, Any]] = [{"id": MEASURED_DEVICE, "name": "This CPU (measured)", "kind": "measured"}]
    try:
        from optim.hardware import targets as catalog

        for d in catalog.list_devices():
            if d.id == "host_measured":  # the sweep already measures this CPU
                continue
            row = dataclasses.asdict(d) if dataclasses.is_dataclass(d) else dict(vars(d))
            rows.append({"id": row.get("id"), "name": row.get("name", row.get("id")),
                         "kind": row.get("kind", "estimated")} | {k: v for k, v in row.items()
                                                                     if isinstance(v, (int, float, str))})
    except OptimError:
        pass
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class SweepRequest:
    """What the Optimize page asks for; turned into ``optim.sweep.run.SweepConfig``."""

    ratios: tuple[float, ...] = (0.0,)
    bits: tuple[int, ...] = (32,)
    prune_kinds: tuple[str, ...] = ("structured",)
    importance: str = "l2"
    opt_levels: tuple[str, ...] = ("all",)
    target_device: str | None = None
    eval_limit: int | None = 300
    latency_budget_s: float = 0.3
    distill: bool = False
    distill_budget_s: float = 30.0
    auto_bits: bool = False
    run_on: str = ""  # "" = default ($OPTIM_RAY_ADDRESS or this machine), "local", or a Ray address: run_on_choices()

    @property
    def n_variants(self) -> int:
        """What the sweep will build: the engine's own grid (it always adds the FP32 baseline)."""
        try:
            return len(sweep_config(self).variants())
        except ConfigError:
            pass
        pruned = len([r for r in self.ratios if r > 0]) * len(self.prune_kinds) * (2 if self.distill else 1)
        return ((1 + pruned) * len(self.bits) + int(self.auto_bits)) * len(self.opt_levels)


def demo_request() -> SweepRequest:
    """The demo: 2 pruning ratios × 3 bit-widths (+ unpruned) on 200 test images: ~6–9 variants."""
    return SweepRequest(ratios=(0.0, 0.5), bits=(32, 8, 4), prune_kinds=("structured",),
                        eval_limit=200, latency_budget_s=0.2)


def sweep_config(req: SweepRequest) -> Any:
    from optim.sweep import run as sweep

    names = {f.name for f in dataclasses.fields(sweep.SweepConfig)}
    target = req.target_device if req.target_device not in (None, MEASURED_DEVICE) else None
    values = dict(ratios=tuple(req.ratios), bits=tuple(req.bits), prune_kinds=tuple(req.prune_kinds),
                  opt_levels=tuple(req.opt_levels), importance=req.importance, eval_limit=req.eval_limit,
                  latency_budget_s=req.latency_budget_s, target_device=target,
                  distill=req.distill, distill_budget_s=req.distill_budget_s, auto_bits=req.auto_bits)
    if req.distill and "distill" not in names:
        raise ConfigError("Distillation is installed but the sweep cannot schedule it yet: switch it off to run.")
    return sweep.SweepConfig(**{k: v for k, v in values.items() if k in names})


def start_sweep(loaded: Loaded, req: SweepRequest) -> SweepJob:
    """Start a background sweep; poll ``job.snapshot()``; ``job.cancel()`` stops it between variants."""
    from optim.sweep import run as sweep
    from optim.sweep import store as store_mod

    if loaded.test is None:
        raise ConfigError("This model has no evaluation data and several inputs: upload evaluation data first.")
    config = sweep_config(req)
    if req.distill and loaded.train is None:
        raise ConfigError("Distillation needs training inputs kept apart from the evaluation data, so that "
                          "accuracy stays honest: use a bundled sample, or switch distillation off.")

    store_path = str(store_mod.Store().path)
    limits = default_limits("sweep").scaled(max(1.0, len(config.variants()) / 10))

    def work(progress: Any, cancel: Any) -> str:  # runs in a server thread that only waits on the worker
        res = jobrun.run("sweep", f"sweep of {loaded.label[:80]}", {"config": config.to_dict(), "store": store_path,
                                                                    "run_on": req.run_on},
                         handle=loaded.handle, datasets={"test": loaded.test, "calib": loaded.calib,
                                                         "train": loaded.train},
                         limits=limits, progress=lambda d: progress(SimpleNamespace(**d)), cancel=cancel)
        return str(res.value["sweep_id"])

    sid = sweep.sweep_id_for(loaded.handle, loaded.test, loaded.calib, config)
    running = job_for_sweep(sid)
    if running is not None and running.state == "running":
        return running  # the same sweep is already running (another tab): follow it
    return start_job(work, label=f"{loaded.label}: {len(config.variants())} variants",
                     total=len(config.variants()), sweep_id=sid)


def run_on_choices() -> list[tuple[str, str]]:
    """(value for ``SweepRequest.run_on``, label) pairs for the "Run on" setting, the default first: this
    machine, and the Ray cluster named by ``$OPTIM_RAY_ADDRESS`` when it is set."""
    from optim.sweep.ray_executor import default_run_on, run_on_label

    choices = [("local", run_on_label("local"))]
    if default_run_on() != "local":
        choices.insert(0, (default_run_on(), run_on_label(default_run_on())))
    return choices


# --- results --------------------------------------------------------------------------------------
def _store() -> Any:
    from optim.sweep import store as store_mod

    return store_mod.Store()


def sweep_info(sweep_id: str) -> dict[str, Any] | None:
    """The sweep's stored row (model_name, config, status, total, …) or None."""
    return _store().sweep(sweep_id)


def sweep_version(sweep_id: str) -> tuple[int, str]:
    """(stored variant count, sweep status): changes whenever the sweep's results change."""
    st = _store()
    info = st.sweep(sweep_id) or {}
    return len(st.finished_keys(sweep_id)), str(info.get("status", "unknown"))


def sweep_exists(sweep_id: str) -> bool:
    try:
        return len(_store().variants(sweep_id)) > 0
    except (OptimError, KeyError):
        return False


def variants(sweep_id: str, device_id: str | None = None) -> pd.DataFrame:
    """Variants of a sweep with UI columns: pct accuracy, MB, flags, Pareto membership, target latency."""
    df = _store().variants(sweep_id)
    df = add_flags(df, vnni=cpu_has_vnni())
    df["target_ms"], df["target_source"] = df["latency_ms"], "measured"
    if device_id and device_id != MEASURED_DEVICE:
        est = pd.Series([_estimate_ms(a, device_id) for a in df["artifact_path"]], index=df.index, dtype=float)
        has = est.notna()
        df.loc[has, "target_ms"] = est[has]
        df.loc[has, "target_source"] = "estimated"
        df["flags"] = flags_on_target(df["flags"], has)
    df["pareto"] = _pareto(df)
    df["hardware"] = [hardware_label(j) for j in df["node_json"]] if "node_json" in df.columns else None
    return df


def _pareto(df: pd.DataFrame) -> pd.Series:
    from optim.analysis import pareto as pareto

    objectives = {"metric": "max", "target_ms": "min", "effective_size_bytes": "min"}
    # measured latencies from different hardware (a cluster sweep) never share a front: one per node_hw
    measured = "target_source" not in df.columns or bool((df["target_source"] == "measured").any())
    return pareto.pareto_mask(df, objectives, by="node_hw" if measured else None).astype(bool)


@lru_cache(maxsize=4096)
def _estimate_ms(artifact: Any, device_id: str) -> float | None:
    if not isinstance(artifact, str) or not Path(artifact).exists():
        return None
    try:
        return float(estimate_layers(artifact, device_id)["total_ms"])
    except OptimError:
        return None


@lru_cache(maxsize=256)
def estimate_layers(artifact: str, device_id: str) -> dict[str, Any]:
    """Hardware estimate of one ONNX artifact on a catalog device: total_ms, layers, notes."""
    import onnx

    from optim.hardware import targets as estimator

    handle = ModelHandle(model=onnx.load(artifact), name=Path(artifact).stem)
    e = estimator.estimate(handle, device_id, batch=1)
    return {"total_ms": e.total_ms, "layers": e.layers, "fits": e.fits, "notes": list(e.notes or []),
            "precision_path": e.precision_path, "fit_notes": e.fit_notes}


def variant_layers(variant_id: str) -> pd.DataFrame:
    """Per-node profile (measured ms) + summary columns of one variant, from the store."""
    return _store().layers(variant_id).copy()


def artifact_bytes(path: str | None) -> bytes:
    if not path or not Path(path).exists():
        raise OptimError("This variant has no ONNX artifact (it failed or was simulated only). Pick another.")
    return Path(path).read_bytes()


def results_csv(df: pd.DataFrame) -> bytes:
    """Every measured column plus flags; server-side paths and raw metadata stay out of a shared file."""
    return df.drop(columns=["artifact_path", "meta_json"], errors="ignore").to_csv(index=False).encode()


def cpu_has_vnni() -> bool | None:
    """Whether this CPU has 8-bit dot-product instructions (VNNI / AMX); None when it cannot be told."""
    from optim.passes._quant.core import cpu_has_vnni as detect

    return detect()
