"""The Optimize form as one typed value: encoded in the URL (``?opt=…``) so a reload or a shared link
restores it, and turned into the engine's :class:`optim.api.SweepRequest`.

No streamlit here: plain values in, plain values out (tested directly).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from optim import api

KINDS = ("structured", "unstructured", "auto")
BITS = (32, 16, 8, 4)
_SEP, _KV, _LIST = "~", ".", "_"


@dataclass(frozen=True)
class OptimizeSettings:
    """Every knob of the Optimize page, with the defaults a newcomer sees."""

    ratio_mode: str = "one"  # "one" | "range"
    ratio_one: float = 0.3
    ratio_lo: float = 0.0
    ratio_hi: float = 0.6
    steps: int = 3
    kinds: tuple[str, ...] = ("structured",)
    importance: str = "l2"
    bits: tuple[int, ...] = (32, 8)
    target: str = api.MEASURED_DEVICE
    distill: bool = False
    distill_budget: float = 30.0
    distill_seed: int = 0  # seeds the split of uploaded data into distillation and held-out rows
    auto_bits: bool = False
    eval_limit: int = 300
    lat_budget: float = 0.3
    run_on: str = ""  # "" = the default (a configured Ray cluster, else this machine); see api.run_on_choices

    @property
    def ratios(self) -> tuple[float, ...]:
        if self.ratio_mode == "one":
            return (float(self.ratio_one),)
        return tuple(float(r) for r in np.round(np.linspace(self.ratio_lo, self.ratio_hi, int(self.steps)), 3))

    def request(self) -> api.SweepRequest:
        """The sweep these settings ask for (the engine adds the FP32 baseline)."""
        return api.SweepRequest(ratios=self.ratios, bits=tuple(sorted(self.bits, reverse=True)) or (32,),
                                prune_kinds=tuple(self.kinds) or ("structured",), importance=self.importance,
                                target_device=self.target, eval_limit=int(self.eval_limit),
                                latency_budget_s=float(self.lat_budget), distill=self.distill,
                                distill_budget_s=float(self.distill_budget), distill_seed=int(self.distill_seed),
                                auto_bits=self.auto_bits, run_on=self.run_on)

    def one_request(self) -> api.SweepRequest:
        """'Run one variant': the last ratio, the lowest bit-width, the first kind (plus the baseline)."""
        req = self.request()
        return dataclasses.replace(req, ratios=(req.ratios[-1],), bits=(req.bits[-1],),
                                   prune_kinds=(req.prune_kinds[0],), auto_bits=False)

    @classmethod
    def from_request(cls, req: api.SweepRequest) -> OptimizeSettings:
        """The form that asks for ``req`` (evenly spaced ratios become a range)."""
        r = tuple(req.ratios)
        spread = dict(ratio_mode="one", ratio_one=r[0]) if len(r) == 1 else dict(
            ratio_mode="range", ratio_lo=min(r), ratio_hi=max(r), steps=len(r))
        return cls(**spread, kinds=tuple(req.prune_kinds), importance=req.importance, bits=tuple(req.bits),
                   target=req.target_device or api.MEASURED_DEVICE, distill=req.distill,
                   distill_budget=req.distill_budget_s, distill_seed=req.distill_seed, auto_bits=req.auto_bits,
                   eval_limit=int(req.eval_limit or cls.eval_limit), lat_budget=req.latency_budget_s).clamped()

    def encode(self) -> str:
        """A short, readable URL value holding only what differs from the defaults (``""`` = defaults)."""
        default = OptimizeSettings()
        parts = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value != getattr(default, f.name):
                text = _LIST.join(str(v) for v in value) if isinstance(value, tuple) else str(int(value)) \
                    if isinstance(value, bool) else str(value)
                parts.append(f"{f.name}{_KV}{text}")
        return _SEP.join(parts)

    @classmethod
    def decode(cls, text: str | None) -> OptimizeSettings:
        """The settings of a URL value; unknown, malformed or out-of-range parts keep their defaults
        (a hand-edited link must never break the page)."""
        default = cls()
        values: dict[str, object] = {}
        types = {f.name: f for f in dataclasses.fields(cls)}
        for part in (text or "").split(_SEP):
            name, _, raw = part.partition(_KV)
            if name not in types:
                continue
            try:
                values[name] = _parse(getattr(default, name), raw)
            except ValueError:
                continue
        return cls(**values).clamped()

    def clamped(self) -> OptimizeSettings:
        """Values inside what the widgets offer."""
        lo, hi = sorted((_clip(self.ratio_lo, 0.0, 0.9), _clip(self.ratio_hi, 0.0, 0.9)))
        kinds = tuple(k for k in self.kinds if k in KINDS)
        bits = tuple(b for b in self.bits if b in BITS)
        return dataclasses.replace(
            self, ratio_mode=self.ratio_mode if self.ratio_mode in ("one", "range") else "one",
            ratio_one=_clip(self.ratio_one, 0.0, 0.9), ratio_lo=lo, ratio_hi=hi, steps=int(_clip(self.steps, 2, 8)),
            kinds=kinds, bits=bits, distill_budget=_clip(self.distill_budget, 5, 300),
            distill_seed=int(_clip(self.distill_seed, 0, 2**31 - 1)),
            eval_limit=int(_clip(self.eval_limit, 50, 100_000)), lat_budget=_clip(self.lat_budget, 0.1, 2.0))


def _clip(v: float, lo: float, hi: float) -> float:
    return float(min(max(v, lo), hi))


def _parse(like: object, raw: str) -> object:
    if isinstance(like, bool):
        if raw not in ("0", "1"):
            raise ValueError(raw)
        return raw == "1"
    if isinstance(like, tuple):
        items = [r for r in raw.split(_LIST) if r]
        kind = type(like[0]) if like else str
        return tuple(kind(r) for r in items)
    return type(like)(raw)


DEMO = OptimizeSettings.from_request(api.demo_request())
