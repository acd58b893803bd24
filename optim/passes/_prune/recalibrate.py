"""Per-channel statistics recalibration after structured pruning (no gradients, one forward pass).

Why: removing channels shifts the distribution every later layer sees; with BatchNorm still present
the usual fix is to re-estimate its running statistics (STACK_NOTES: 10 % → 96 % accuracy), but
exported graphs fold BatchNorm into the conv weights, so there are no statistics to reset. The
equivalent done here: for every conv/linear layer whose weights the pruning changed, make each kept
output channel's mean and standard deviation on the calibration data match those of the same channel
in the unpruned model — ``y' = (y − μ_s)·σ_t/σ_s + μ_t``, folded into the layer's weight and bias.

Layers are corrected in execution order inside one forward pass (a forward hook corrects a layer and
returns its corrected output), so each layer is calibrated on inputs that already went through the
corrected layers before it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

_LAYERS = (nn.modules.conv._ConvNd, nn.Linear)


def _channel_stats(y: torch.Tensor, is_conv: bool) -> tuple[torch.Tensor, torch.Tensor]:
    dims = [d for d in range(y.dim()) if d != (1 if is_conv else y.dim() - 1)]
    if y.numel() // max(1, y.shape[1 if is_conv else -1]) < 2:
        return y.mean(dims), torch.ones_like(y.mean(dims))
    return y.mean(dims), y.std(dims)


def _teacher_stats(teacher: nn.Module, names: Sequence[str], x: Sequence[torch.Tensor]
                   ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    stats: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    mods = dict(teacher.named_modules())
    hooks = []
    for name in names:
        def hook(m: nn.Module, _inp: object, out: torch.Tensor, name: str = name) -> None:
            stats[name] = _channel_stats(out, isinstance(m, nn.modules.conv._ConvNd))
        hooks.append(mods[name].register_forward_hook(hook))
    try:
        with torch.no_grad():
            teacher(*x)
    finally:
        for h in hooks:
            h.remove()
    return stats


def _correct(layer: nn.Module, y: torch.Tensor, mu_t: torch.Tensor, sd_t: torch.Tensor) -> torch.Tensor:
    is_conv = isinstance(layer, nn.modules.conv._ConvNd)
    mu_s, sd_s = _channel_stats(y, is_conv)
    scale = torch.where(sd_s > 1e-6, sd_t / sd_s.clamp_min(1e-6), torch.ones_like(sd_s))
    shift = mu_t - mu_s * scale
    w = layer.weight.data
    layer.weight.data = w * scale.reshape(-1, *([1] * (w.dim() - 1)))
    if layer.bias is None:
        layer.bias = nn.Parameter(torch.zeros(w.shape[0], dtype=w.dtype))
    layer.bias.data = layer.bias.data * scale + shift
    view = [1] * y.dim()
    view[1 if is_conv else -1] = -1
    return y * scale.reshape(view) + shift.reshape(view)


def recalibrate(student: nn.Module, teacher: nn.Module, kept: dict[str, torch.Tensor | None],
                x: Sequence[torch.Tensor]) -> int:
    """Match per-channel output statistics of ``student``'s layers in ``kept`` to ``teacher``'s.

    ``kept`` maps a module name to the indices (into the teacher layer's outputs) of the channels
    the student kept, or ``None`` when its outputs were not pruned (only its inputs). Returns the
    number of layers corrected. Modifies ``student`` in place.
    """
    t_stats = _teacher_stats(teacher, list(kept), x)
    mods = dict(student.named_modules())
    hooks = []
    done: list[str] = []
    for name, idx in kept.items():
        if name not in t_stats or not isinstance(mods.get(name), _LAYERS):
            continue
        mu_t, sd_t = t_stats[name]
        if idx is not None:
            mu_t, sd_t = mu_t[idx], sd_t[idx]

        def hook(m: nn.Module, _inp: object, out: torch.Tensor, mu: torch.Tensor = mu_t,
                 sd: torch.Tensor = sd_t, name: str = name) -> torch.Tensor:
            done.append(name)
            return _correct(m, out, mu, sd)

        hooks.append(mods[name].register_forward_hook(hook))
    try:
        with torch.no_grad():
            student(*x)
    finally:
        for h in hooks:
            h.remove()
    return len(done)


RECAL_MACS = 64e9  # recalibration compute (teacher + student forward): a 224² ResNet-50 gets 15 samples
RECAL_MIN = 8


def recal_samples(x: list[torch.Tensor], macs: int) -> list[torch.Tensor]:
    """The first samples of ``x`` recalibration runs on: as many as fit :data:`RECAL_MACS` at ``macs`` per sample
    (at least :data:`RECAL_MIN`). Per-channel means and deviations need few samples — each holds H×W positions
    or tokens per channel — and the two torch forwards of all 33 capped ResNet-50 samples were a third of its
    sweep."""
    keep = int(max(RECAL_MIN, RECAL_MACS // max(macs, 1)))
    return [t[:keep] for t in x]
