"""The classic efficient-inference case study, measured on the user's own model.

Rows: baseline; structured pruning (no fine-tune); pruning + distillation; a smaller student
(uniformly width-reduced copy trained from the teacher); INT8 static quantization; everything
combined (prune → distil → INT8). Every row is built by the real passes and measured here:
accuracy with its 95 % interval, parameters, MACs, bytes, batch-1 latency with one thread.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from optim.graph.summary import summarize
from optim.handle import ModelHandle
from optim.io.data import Dataset
from optim.measure.model import measure_model
from optim.passes import PassContext, get_pass


@dataclass(frozen=True)
class CaseStudyConfig:
    prune_ratio: float = 0.5
    student_width: float = 0.5  # fraction of channels the smaller student keeps
    distill_epochs: int = 3
    distill_budget_s: float = 60.0
    latency_budget_s: float = 1.0
    eval_limit: int = 0  # 0 = whole test split


def _measure(handle: ModelHandle, test: Dataset, ref_logits: Any, budget_s: float) -> dict[str, Any]:
    m = measure_model(handle, test, ref_logits, budget_s=budget_s)
    ev, lat = m.evaluation, m.latency
    s = summarize(handle)
    row: dict[str, Any] = {"params": s.params, "macs": s.macs,
                           "size_bytes": int(handle.meta.get("effective_size_bytes", handle.size_bytes)),
                           "latency_ms": lat.median_ms, "latency_p90_ms": lat.p90_ms}
    if ev.accuracy is not None:
        row.update(top1=ev.accuracy.top1 * 100, top1_lo=ev.accuracy.top1_lo * 100,
                   top1_hi=ev.accuracy.top1_hi * 100)
    if ev.fidelity is not None:
        row["agreement"] = ev.fidelity.top1_agreement * 100
    return {"row": row, "logits": ev.logits}


def _pct_change(new: float, old: float) -> float:
    return (new - old) / old * 100 if old else 0.0


def run_casestudy(handle: ModelHandle, test: Dataset, train: Dataset, config: CaseStudyConfig | None = None,
                  progress: Callable[[float, str], None] | None = None) -> pd.DataFrame:
    """Build and measure every row; returns one row per technique with deltas against the baseline."""
    cfg = config or CaseStudyConfig()
    if cfg.eval_limit and len(test) > cfg.eval_limit:
        test = test.subset(cfg.eval_limit)
    say = progress or (lambda f, m: None)
    ctx = PassContext(calib=train, train=train, teacher=handle)
    prune, distill, quant = get_pass("prune_structured"), get_pass("distill"), get_pass("quantize")
    dcfg = distill.config_cls(epochs=cfg.distill_epochs, budget_s=cfg.distill_budget_s)
    qcfg = quant.config_cls(mode="int8_static")

    say(0.0, "measuring the baseline")
    base = _measure(handle, test, None, cfg.latency_budget_s)
    ref = base["logits"]
    variants: list[tuple[str, str, Callable[[], ModelHandle]]] = []
    pruned: dict[str, ModelHandle] = {}

    def pruned_model() -> ModelHandle:
        if "p" not in pruned:
            pruned["p"] = prune.run(handle, prune.config_cls(ratio=cfg.prune_ratio), ctx)
        return pruned["p"]

    def distilled() -> ModelHandle:
        if "d" not in pruned:
            pruned["d"] = distill.run(pruned_model(), dcfg, ctx)
        return pruned["d"]

    def student() -> ModelHandle:
        small = prune.run(handle, prune.config_cls(ratio=1 - cfg.student_width, importance="random"), ctx)
        return distill.run(small, dcfg, ctx)

    variants = [
        ("pruning", f"structured pruning {cfg.prune_ratio:.0%}, no fine-tune", pruned_model),
        ("pruning + distillation", f"pruned {cfg.prune_ratio:.0%}, distilled from the original", distilled),
        ("smaller student", f"width ×{cfg.student_width:g} (random init of kept channels), distilled",
         student),
        ("quantization", "INT8 static (calibrated on the training split)", lambda: quant.run(handle, qcfg, ctx)),
        ("combined", "pruned + distilled + INT8 static", lambda: quant.run(distilled(), qcfg, ctx)),
    ]
    rows = [{"technique": "baseline", "what": "FP32 original", **base["row"]}]
    for i, (name, what, build) in enumerate(variants):
        say((i + 0.5) / (len(variants) + 1), f"building: {name}")
        try:
            m = _measure(build(), test, ref, cfg.latency_budget_s)
            rows.append({"technique": name, "what": what, **m["row"]})
        except Exception as err:  # noqa: BLE001 - a failed row is data, the study goes on
            rows.append({"technique": name, "what": what, "error": f"{type(err).__name__}: {err}"})
    say(1.0, "done")
    return _with_deltas(pd.DataFrame(rows))


def _with_deltas(df: pd.DataFrame) -> pd.DataFrame:
    base = df.iloc[0]
    for col, out in (("params", "params_%"), ("macs", "macs_%"), ("size_bytes", "memory_%"),
                     ("latency_ms", "latency_%")):
        df[out] = [_pct_change(v, base[col]) if pd.notna(v) else None for v in df[col]]
    if "top1" in df:
        df["top1_delta"] = df["top1"] - base["top1"]
        half = (df["top1_hi"] - df["top1_lo"]) / 2 + (base["top1_hi"] - base["top1_lo"]) / 2
        df["significant"] = (df["top1_delta"].abs() > half) | (df.index == 0)
    return df


def _cell(r: dict[str, Any], pct_key: str, absolute: str) -> str:
    """Baseline shows the absolute value; other rows the % change against it."""
    return absolute if r["technique"] == "baseline" else f"{r[pct_key]:+.0f}%"


def format_table(df: pd.DataFrame) -> str:
    """The case study as a plain-text table (what the CLI prints)."""
    lines = [f"{'technique':<24}{'params':>9}{'MACs':>9}{'memory':>9}{'latency':>10}{'top-1 % (95% CI)':>24}"
             f"{'Δ acc':>9}"]
    for r in df.to_dict("records"):
        if isinstance(r.get("error"), str):
            lines.append(f"{r['technique']:<24}failed: {r['error']}")
            continue
        acc = f"{r['top1']:.2f} [{r['top1_lo']:.2f}, {r['top1_hi']:.2f}]" if pd.notna(r.get("top1")) else "–"
        delta = "" if r["technique"] == "baseline" else f"{r.get('top1_delta', 0):+.2f}"
        if delta and not r.get("significant", True):
            delta += "*"
        lines.append(f"{r['technique']:<24}{_cell(r, 'params_%', _si(r['params'])):>9}"
                     f"{_cell(r, 'macs_%', _si(r['macs'])):>9}{_cell(r, 'memory_%', _si(r['size_bytes']) + 'B'):>9}"
                     f"{_cell(r, 'latency_%', format(r['latency_ms'], '.2f') + 'ms'):>10}{acc:>24}{delta:>9}")
    lines.append("* accuracy change within the 95 % intervals (not significant). Latency: batch 1, one thread, "
                 "ONNX Runtime on this CPU.")
    return "\n".join(lines)


def _si(v: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= div:
            return f"{v / div:.2f}{unit}"
    return f"{v:.0f}"
