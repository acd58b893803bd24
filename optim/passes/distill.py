"""Knowledge distillation: fine-tune a compressed student against the original (teacher) model.

Loss: ``α·CE(labels) + (1 − α)·T²·KL(teacher_T ‖ student_T)``; with no labels (or ``use_labels=False``)
it is pure soft-target distillation, which needs only inputs. The teacher is any ONNX model: its
logits are computed once with ONNX Runtime, so it never has to convert to torch. The student is
converted with our ONNX → torch converter, trained with AdamW and a cosine schedule within an epoch
and/or seconds budget, stopped early on a held-out split (KL to the teacher), and exported back to
ONNX with the input's batch convention. Named multi-input data (token ids, attention masks, type ids:
:mod:`optim.io.named_inputs`) reaches teacher and student alike; only inputs the data lacks are synthesised.

``qat_bits`` turns the fine-tune into short quantization-aware training: every conv/linear weight is
fake-quantised (symmetric, per output channel — the same quantiser as the ``quantize`` pass's
simulated modes) in the forward pass with a straight-through estimator, and the exported weights
are the quantised values, so a following ``quantize`` pass at that bit-width loses nothing more.

Own module because no maintained library does distillation over ONNX graphs; the loop is ~100 lines.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from optim.errors import ConfigError, ShapeMismatchError
from optim.handle import ModelHandle
from optim.io.named_inputs import input_arrays
from optim.io.shapes import input_specs
from optim.passes._prune.onnx2torch import example_inputs, to_torch
from optim.passes.base import PassContext, check_range, register

_WEIGHT_LAYERS = (nn.modules.conv._ConvNd, nn.Linear)


@dataclass(frozen=True)
class DistillConfig:
    epochs: int = field(default=3, metadata={"help": "Passes over the training split (upper bound).",
                                             "min": 1, "max": 50})
    budget_s: float = field(default=0.0, metadata={
        "help": "Stop after this many seconds of training (0 = no time limit).", "min": 0.0, "max": 3600.0})
    alpha: float = field(default=0.5, metadata={
        "help": "Weight of the cross-entropy on true labels; the rest goes to matching the teacher. "
                "Ignored (0) when there are no labels.", "min": 0.0, "max": 1.0})
    temperature: float = field(default=4.0, metadata={
        "help": "Softens both output distributions so the student learns the teacher's 'dark knowledge'.",
        "min": 1.0, "max": 20.0})
    use_labels: bool = field(default=True, metadata={"help": "Use the training labels when they exist."})
    lr: float = field(default=1e-3, metadata={"help": "AdamW learning rate (cosine-annealed).",
                                              "min": 1e-6, "max": 1e-1})
    batch_size: int = field(default=64, metadata={"help": "Mini-batch size.", "min": 4, "max": 1024})
    val_fraction: float = field(default=0.1, metadata={
        "help": "Held-out share of the training split used for early stopping.", "min": 0.05, "max": 0.5})
    patience: int = field(default=2, metadata={"help": "Epochs without improvement before stopping.",
                                               "min": 1, "max": 20})
    qat_bits: int = field(default=0, metadata={
        "help": "Quantization-aware fine-tune: fake-quantise weights to this many bits (0 = off).",
        "choices": [0, 2, 3, 4, 5, 6, 7, 8]})
    max_train_samples: int = field(default=8192, metadata={
        "help": "Use at most this many training samples.", "min": 64, "max": 1_000_000})
    seed: int = field(default=0, metadata={"help": "Seed for shuffling and the split.", "min": 0,
                                           "max": 2**31 - 1})

    def __post_init__(self) -> None:
        check_range("epochs", self.epochs, 1, 50)
        check_range("budget_s", self.budget_s, 0.0, 3600.0)
        check_range("alpha", self.alpha, 0.0, 1.0)
        check_range("temperature", self.temperature, 1.0, 20.0)
        check_range("lr", self.lr, 1e-6, 1e-1)
        check_range("batch_size", self.batch_size, 4, 1024)
        check_range("val_fraction", self.val_fraction, 0.05, 0.5)
        check_range("patience", self.patience, 1, 20)
        if self.qat_bits not in (0, 2, 3, 4, 5, 6, 7, 8):
            raise ConfigError(f"qat_bits must be 0 (off) or between 2 and 8, got {self.qat_bits}.")
        check_range("max_train_samples", self.max_train_samples, 64, 1_000_000)


class FakeQuantSTE(nn.Module):
    """Weight parametrization: symmetric per-output-channel fake quantisation, straight-through grads."""

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.qmax = float(2 ** (bits - 1) - 1)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        axes = tuple(range(1, w.dim()))
        amax = w.detach().abs().amax(dim=axes, keepdim=True) if axes else w.detach().abs().max()
        scale = torch.where(amax > 0, amax / self.qmax, torch.ones_like(amax))
        q = torch.clamp(torch.round(w / scale), -self.qmax, self.qmax) * scale
        return w + (q - w).detach()


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor | None, alpha: float,
                 temperature: float) -> torch.Tensor:
    """``α·CE(labels) + (1 − α)·T²·KL(teacher_T ‖ student_T)``; pure KL when ``labels`` is None."""
    t = temperature
    kl = F.kl_div(F.log_softmax(student / t, dim=-1), F.log_softmax(teacher / t, dim=-1),
                  reduction="batchmean", log_target=True) * t * t
    if labels is None or alpha == 0:
        return kl
    return alpha * F.cross_entropy(student, labels) + (1 - alpha) * kl


Rows = dict[str, torch.Tensor]  # per-sample inputs by model input name, the same rows each


def _take(rows: Rows, idx: Any) -> Rows:
    return {k: v[idx] for k, v in rows.items()}


def _n(rows: Rows) -> int:
    return len(next(iter(rows.values())))


def _teacher_logits(ctx: PassContext, arrays: dict[str, np.ndarray], first: str,
                    constants: dict[str, np.ndarray]) -> np.ndarray:  # fmt: skip
    """The teacher's first output on every given input (``first``'s array as ``x``, the others as feeds, values of
    inputs without a sample axis whole in every call)."""
    from optim.measure.core import predict

    feeds = {k: v for k, v in arrays.items() if k != first} or None
    return np.asarray(predict(ctx.teacher, arrays[first], batch_size=128, threads=2, feeds=feeds,
                              constants=constants or None), dtype=np.float32)  # fmt: skip


def _forward(module: nn.Module, rows: Rows) -> torch.Tensor:
    """The student's first output (N × values) on ``rows`` (every input the data gives, by name); inputs the data
    lacks (masks, type ids, states) are synthesised as for the teacher (:func:`optim.measure.core.predict`)."""
    rows = {**getattr(module, "constant_inputs", {}), **rows}  # a 0-d sample rate from the data: every call
    names = list(getattr(module, "input_names", None) or rows)
    missing = [k for k in names if k not in rows]
    synth: dict[str, torch.Tensor] = {}
    if missing:
        model = module.source_model
        synth = dict(zip([s.name for s in input_specs(model)], example_inputs(model, batch=_n(rows)), strict=False))
    out = module(*[rows[k] if k in rows else synth[k] for k in names])
    out = out[0] if isinstance(out, tuple | list) else out
    return out.reshape(out.shape[0], -1)


def _val_kl(module: nn.Module, x: Rows, t: torch.Tensor, temperature: float) -> tuple[float, float]:
    """(KL to the teacher, top-1 agreement with the teacher) on the held-out split."""
    module.eval()
    kls, agree = [], 0
    with torch.no_grad():
        for i in range(0, len(t), 256):
            s = _forward(module, _take(x, slice(i, i + 256)))
            kls.append(float(distill_loss(s, t[i:i + 256], None, 0.0, temperature)) * len(s))
            agree += int((s.argmax(-1) == t[i:i + 256].argmax(-1)).sum())
    return sum(kls) / len(t), agree / len(t)


def _as_torch(a: np.ndarray) -> torch.Tensor:
    """float32 for float inputs, int64 for token ids / integer masks (bools stay bool)."""
    dtype = np.float32 if a.dtype.kind == "f" else (np.int64 if a.dtype.kind in "iu" else a.dtype)
    return torch.from_numpy(np.ascontiguousarray(a, dtype=dtype))


def _prepare(handle: ModelHandle, cfg: DistillConfig, ctx: PassContext) -> dict[str, Any]:
    if ctx.train is None or len(ctx.train) == 0:
        raise ConfigError("Distillation needs training inputs (the sample's training split or an uploaded "
                          "data set); labels are optional.")
    if ctx.teacher is None:
        raise ConfigError("Distillation needs the original model as teacher; pass it in the context.")
    data = ctx.train if len(ctx.train) <= cfg.max_train_samples else ctx.train.subset(cfg.max_train_samples,
                                                                                       cfg.seed)
    arrays = input_arrays(handle.model, data)  # named multi-input data: every input it gives, same rows
    first = next(iter(arrays))
    rows = {k: _as_torch(v) for k, v in arrays.items()}
    consts = dict(getattr(data, "constants", None) or {})
    teacher = _teacher_logits(ctx, {k: v.numpy() for k, v in rows.items()}, first, consts).reshape(len(data), -1)
    labels = None
    if cfg.use_labels and data.y is not None and cfg.alpha > 0:
        labels = torch.from_numpy(np.asarray(data.y, dtype=np.int64))
    rng = np.random.default_rng(cfg.seed)
    order = torch.from_numpy(rng.permutation(len(data)))
    n_val = max(1, int(round(len(data) * cfg.val_fraction)))
    val, tr = order[:n_val], order[n_val:]
    tt = torch.from_numpy(teacher)
    return {"x": _take(rows, tr), "t": tt[tr], "y": None if labels is None else labels[tr], "xv": _take(rows, val),
            "tv": tt[val], "inputs": list(rows), "constants": {k: torch.from_numpy(np.array(v)) for k, v in consts.items()}}


def _add_qat(module: nn.Module, bits: int) -> list[nn.Module]:
    layers = [m for m in module.modules() if isinstance(m, _WEIGHT_LAYERS)]
    for m in layers:
        parametrize.register_parametrization(m, "weight", FakeQuantSTE(bits))
    return layers


def train_student(module: nn.Module, cfg: DistillConfig, d: dict[str, Any], ctx: PassContext) -> dict[str, Any]:
    """Train ``module`` in place on prepared data; restores the best epoch. Returns run details."""
    torch.manual_seed(cfg.seed)
    steps_per_epoch = max(1, (len(d["t"]) + cfg.batch_size - 1) // cfg.batch_size)
    opt = torch.optim.AdamW(module.parameters(), lr=cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs * steps_per_epoch)
    kl0, agree0 = _val_kl(module, d["xv"], d["tv"], cfg.temperature)
    best = (kl0, copy.deepcopy(module.state_dict()), agree0)
    start, history, stale, stopped = time.monotonic(), [], 0, "epochs"
    for epoch in range(cfg.epochs):
        module.train()
        perm = torch.randperm(len(d["t"]))
        for step in range(steps_per_epoch):
            ctx.check_cancel()
            idx = perm[step * cfg.batch_size:(step + 1) * cfg.batch_size]
            labels = None if d["y"] is None else d["y"][idx]
            loss = distill_loss(_forward(module, _take(d["x"], idx)), d["t"][idx], labels, cfg.alpha, cfg.temperature)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            done = (epoch * steps_per_epoch + step + 1) / (cfg.epochs * steps_per_epoch)
            if step % 10 == 0:
                ctx.report(0.05 + 0.85 * done, f"distilling: epoch {epoch + 1}/{cfg.epochs}, loss {loss.item():.3f}")
            if cfg.budget_s and time.monotonic() - start > cfg.budget_s:
                stopped = "time budget"
                break
        kl, agree = _val_kl(module, d["xv"], d["tv"], cfg.temperature)
        history.append({"epoch": epoch + 1, "val_kl": kl, "val_agreement": agree})
        if kl < best[0]:
            best, stale = (kl, copy.deepcopy(module.state_dict()), agree), 0
        else:
            stale += 1
        if stopped == "time budget":
            break
        if stale >= cfg.patience:
            stopped = "early stopping"
            break
    module.load_state_dict(best[1])
    module.eval()
    return {"epochs_run": len(history), "stopped_by": stopped, "history": history, "val_kl_before": kl0,
            "val_agreement_before": agree0, "val_kl_after": best[0], "val_agreement_after": best[2],
            "seconds": round(time.monotonic() - start, 2)}


@register("distill", DistillConfig, "Knowledge distillation",
          "Fine-tunes the compressed model to mimic the original one (soft targets, optionally true labels); "
          "recovers much of the accuracy pruning or low-bit quantization cost. Needs training inputs only.")
def run(handle: ModelHandle, config: DistillConfig, ctx: PassContext | None = None) -> ModelHandle:
    from optim.passes.prune_structured import export_like

    ctx = ctx or PassContext()
    ctx.report(0.0, "computing teacher outputs")
    d = _prepare(handle, config, ctx)
    module = to_torch(handle.model)
    module.source_model = handle.model  # _forward synthesises its further inputs (masks, type ids) from it
    module.constant_inputs = d["constants"]  # and feeds these whole (inputs without a sample axis)
    with torch.no_grad():
        out = _forward(module.eval(), _take(d["xv"], slice(0, 2)))
    if out.shape[1] != d["tv"].shape[1]:
        raise ShapeMismatchError(f"The student outputs {out.shape[1]} values per sample but the teacher "
                                 f"{d['tv'].shape[1]}; distil only variants of the same model.")
    qat_layers = _add_qat(module, config.qat_bits) if config.qat_bits else []
    details = train_student(module, config, d, ctx)
    for m in qat_layers:  # bake the quantised weights in
        parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
    details.update(labels_used=d["y"] is not None, alpha=config.alpha if d["y"] is not None else 0.0,
                   temperature=config.temperature, qat_bits=config.qat_bits, train_samples=len(d["t"]),
                   inputs_from_data=[*d["inputs"], *d["constants"]])
    ctx.check_cancel()
    ctx.report(0.95, "exporting to ONNX")
    proto, _ = export_like(handle, module)
    ctx.report(1.0, "done")
    what = f"QAT {config.qat_bits}-bit" if config.qat_bits else "distill"
    step = f"{what}(epochs={details['epochs_run']}, T={config.temperature}, labels={details['labels_used']})"
    return handle.derive(proto, step, distilled=True, distillation=details)
