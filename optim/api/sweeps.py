"""Knobs and sweeps for the Optimize page: which passes and choices exist, the target devices, the sweep
request, and starting a sweep as a background job."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pandas as pd

from optim.analysis.targets import MEASURED_DEVICE, is_measured
from optim.api.models import Loaded, for_distillation
from optim.api.store import open_store
from optim.errors import ConfigError
from optim.hardware import targets as hardware
from optim.jobs import client as jobrun
from optim.jobs import default_limits
from optim.passes.base import get_pass, list_passes
from optim.sweep import run as sweep
from optim.sweep.jobs import SweepJob, job_for_sweep, start_job
from optim.sweep.ray_executor import default_run_on, run_on_label

__all__ = ["MEASURED_DEVICE", "SweepRequest", "demo_request", "distill_split", "distill_supported", "list_devices",
           "pass_available", "pass_choices", "run_on_choices", "start_sweep", "sweep_config"]


def pass_available(name: str) -> bool:
    return any(p.name == name for p in list_passes())


def distill_supported() -> bool:
    """True when the distill pass is registered (the sweep schedules it with ``SweepRequest.distill``)."""
    return pass_available("distill")


def pass_choices(name: str, field_name: str) -> list[Any]:
    """The ``choices`` metadata of a pass config field ([] when the pass or field is missing)."""
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
    for d in hardware.list_devices():
        if d.id == "host_measured":  # the sweep already measures this CPU
            continue
        rows.append({"id": d.id, "name": d.name, "kind": d.kind, "runtime": d.runtime})
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
    distill_seed: int = 0  # seeds the distillation/held-out split of uploaded data (optim.io.splits)
    auto_bits: bool = False
    run_on: str = ""  # "" = default ($OPTIM_RAY_ADDRESS or this machine), "local", or a Ray address: run_on_choices()

    @property
    def n_variants(self) -> int:
        """What the sweep will build: the engine's own grid (it always adds the FP32 baseline); 0 when the
        request is invalid (starting it then says why)."""
        try:
            return len(sweep_config(self).variants())
        except ConfigError:
            return 0


def demo_request() -> SweepRequest:
    """The demo: 2 pruning ratios × 3 bit-widths (+ unpruned) on 200 test images: ~6–9 variants."""
    return SweepRequest(ratios=(0.0, 0.5), bits=(32, 8, 4), prune_kinds=("structured",),
                        eval_limit=200, latency_budget_s=0.2)


def sweep_config(req: SweepRequest) -> sweep.SweepConfig:
    return sweep.SweepConfig(
        ratios=tuple(req.ratios), bits=tuple(req.bits), prune_kinds=tuple(req.prune_kinds),
        opt_levels=tuple(req.opt_levels), importance=req.importance, eval_limit=req.eval_limit,
        latency_budget_s=req.latency_budget_s, target_device=None if is_measured(req.target_device) else
        req.target_device, distill=req.distill, distill_budget_s=req.distill_budget_s, auto_bits=req.auto_bits)


def start_sweep(loaded: Loaded, req: SweepRequest) -> SweepJob:
    """Start a background sweep; poll ``job.snapshot()``; ``job.cancel()`` stops it between variants."""
    if loaded.test is None:
        raise ConfigError("This model has no evaluation data and several inputs: upload evaluation data first.")
    config = sweep_config(req)
    if req.distill:  # evaluation on rows the student never saw: a separate training split, or a seeded split
        loaded = for_distillation(loaded, req.distill_seed)

    store_path = str(open_store().path)
    limits = default_limits("sweep").scaled(max(1.0, len(config.variants()) / 10))

    def work(progress: Any, cancel: Any) -> str:  # runs in a server thread that only waits on the worker
        res = jobrun.run("sweep", f"sweep of {loaded.label[:80]}", {"config": config.to_dict(), "store": store_path,
                                                                    "run_on": req.run_on},
                         handle=loaded.handle, datasets={"test": loaded.test, "calib": loaded.calib,
                                                         "train": loaded.train},
                         limits=limits, progress=lambda d: progress(SimpleNamespace(**d)), cancel=cancel)
        return str(res.value["sweep_id"])

    sid = sweep.sweep_id_for(loaded.handle, loaded.test, loaded.calib, config, loaded.train)
    running = job_for_sweep(sid)
    if running is not None and running.state == "running":
        return running  # the same sweep is already running (another tab): follow it
    grid = {v.key for v in config.variants()}
    reused = len(grid & open_store().finished_keys(sid))  # counted from the start: "6 reused from the store"
    return start_job(work, label=f"{loaded.label}: {len(grid)} variants", total=len(grid), sweep_id=sid,
                     reused=reused)


def distill_split(loaded: Loaded, seed: int = 0) -> str:
    """The sentence stating what a distillation sweep of ``loaded`` distils on and holds out ("N for
    distillation, M held out, seed S: ..."); raises ConfigError (one sentence) when there is not enough data."""
    return for_distillation(loaded, seed).split


def run_on_choices() -> list[tuple[str, str]]:
    """(value for ``SweepRequest.run_on``, label) pairs for the "Run on" setting, the default first: this
    machine, and the Ray cluster named by ``$OPTIM_RAY_ADDRESS`` when it is set."""
    choices = [("local", run_on_label("local"))]
    if default_run_on() != "local":
        choices.insert(0, (default_run_on(), run_on_label(default_run_on())))
    return choices
