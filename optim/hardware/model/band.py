"""How sure an estimate is: an uncertainty band from the validation residuals of its device.

A residual is ``actual / estimated - 1`` for one validation case: a held-out model measured on this
CPU at calibration (the host), or a published batch-1 latency (catalog devices, ``devices.toml``). The
band multiplies the estimate by the spread of those residuals — their 10th-90th percentiles when
there are enough of them, their full range widened to at least -20 %/+25 % when there are a few — and
falls back to a x0.5-x2 prior for a device with none. A device whose published points sit more than
1.5x away from the estimate is called poorly validated in the note.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MANY = 5
FEW_FLOOR = (0.8, 1.25)
MANY_FLOOR = (0.95, 1.05)
PRIOR = (0.5, 2.0)
POOR = 1.5


@dataclass(frozen=True)
class Band:
    low_ms: float
    high_ms: float
    note: str
    poorly_validated: bool = False


def _pct(f: float) -> str:
    return f"{(f - 1) * 100:+.0f} %"


def residual_band(total_ms: float, residuals_pct: Sequence[float], basis: str) -> Band:
    """Band around ``total_ms`` from signed residuals in percent (see the module docstring)."""
    r = np.asarray([x for x in residuals_pct if np.isfinite(x)], dtype=float) / 100 + 1
    r = r[r > 0]
    if r.size == 0:
        lo, hi = PRIOR
        return Band(total_ms * lo, total_ms * hi,
                    f"{basis or 'no validation'}: band x{lo:g}-x{hi:g} is a prior, not a measured spread", False)
    if r.size >= MANY:
        lo = min(float(np.percentile(r, 10)), MANY_FLOOR[0])
        hi = max(float(np.percentile(r, 90)), MANY_FLOOR[1])
        how = "10th-90th percentile of"
    else:
        lo, hi = min(float(r.min()), FEW_FLOOR[0]), max(float(r.max()), FEW_FLOOR[1])
        how = "range (at least -20 %/+25 %) of"
    worst = float(np.exp(np.abs(np.log(r)).max()))
    poor = worst > POOR
    note = f"band {_pct(lo)} / {_pct(hi)}: {how} {basis}"
    if poor:
        note = (f"poorly validated: reality was up to {worst:.1f}x away from the estimate on this device's "
                f"validation points; {note}")
    return Band(total_ms * lo, total_ms * hi, note, poor)


def measured_band(median_ms: float, p90_ms: float, runs: int) -> Band:
    """A measured latency's band: median ± (p90 - median) over the timed runs."""
    half = max(p90_ms - median_ms, 0.0)
    return Band(max(median_ms - half, 0.0), median_ms + half,
                f"measured: median of {runs} runs, band ± (p90 - median) = ± {half:.3f} ms")
