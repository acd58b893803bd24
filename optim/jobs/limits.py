"""Per-job resource limits: address space, CPU time, wall time (plain data, applied with ``setrlimit``).

Defaults (DESIGN.md "Where work runs"): address space is a fraction of this machine's RAM
(``OPTIM_JOB_MEMORY_FRACTION``, default 0.5, or an absolute ``OPTIM_JOB_MEMORY_MB``); wall time comes
from the job kind (a model load is cut off at 60 s) and can be scaled with ``OPTIM_JOB_TIME_SCALE``;
CPU time is the wall time times the cores a job may use. ``OPTIM_JOB_LIMITS=off`` switches limits
off (the CLI's ``--no-limits``: a user's own trusted file).
"""

from __future__ import annotations

import os
import resource
from dataclasses import asdict, dataclass, replace
from typing import Any

_MB = 2**20
MIN_ADDRESS_SPACE = 1536 * _MB  # python + numpy + onnxruntime + torch map ~0.7 GB before any work
# wall-time seconds by job kind; anything not listed gets DEFAULT_WALL_S
WALL_S = {"load_model": 60.0, "convert_torch": 60.0, "load_data": 60.0, "summarize": 60.0,
          "baseline": 180.0, "sensitivity": 900.0, "sweep": 3600.0, "echo": 30.0}
DEFAULT_WALL_S = 300.0


def total_ram_bytes() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 8 * 1024 * _MB


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, "") or default)
    except ValueError:
        return default


def limits_enabled() -> bool:
    return os.environ.get("OPTIM_JOB_LIMITS", "on").strip().lower() not in ("off", "0", "no", "false")


@dataclass(frozen=True)
class Limits:
    """What one job may use; ``None`` means unlimited. Plain data: travels with the job spec."""

    address_space_bytes: int | None
    cpu_s: float | None
    wall_s: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Limits:
        d = d or {}
        return cls(address_space_bytes=d.get("address_space_bytes"), cpu_s=d.get("cpu_s"), wall_s=d.get("wall_s"))

    def scaled(self, factor: float) -> Limits:
        """Wall and CPU time times ``factor`` (a sweep of 20 variants gets more than one of 2)."""
        return replace(self, wall_s=None if self.wall_s is None else self.wall_s * factor,
                       cpu_s=None if self.cpu_s is None else self.cpu_s * factor)

    def describe(self) -> str:
        parts = []
        if self.address_space_bytes:
            parts.append(f"{self.address_space_bytes / 2**30:.1f} GiB memory")
        if self.wall_s:
            parts.append(f"{self.wall_s:.0f} s wall time")
        if self.cpu_s:
            parts.append(f"{self.cpu_s:.0f} s CPU time")
        return ", ".join(parts) or "no limits"


UNLIMITED = Limits(None, None, None)


def default_limits(kind: str) -> Limits:
    """The limits a job of ``kind`` runs under on this machine (environment overrides applied)."""
    if not limits_enabled():
        return UNLIMITED
    mem_mb = _env_float("OPTIM_JOB_MEMORY_MB", 0.0)
    mem = int(mem_mb * _MB) if mem_mb > 0 else int(total_ram_bytes() * _env_float("OPTIM_JOB_MEMORY_FRACTION", 0.5))
    wall = WALL_S.get(kind, DEFAULT_WALL_S) * _env_float("OPTIM_JOB_TIME_SCALE", 1.0)
    cores = max(1, min(os.cpu_count() or 1, 4))
    return Limits(address_space_bytes=max(mem, MIN_ADDRESS_SPACE), cpu_s=wall * cores, wall_s=wall)


def apply_rlimits(limits: Limits, cpu_used_s: float = 0.0) -> None:
    """Set this process's soft RLIMIT_AS / RLIMIT_CPU to ``limits`` (hard limits stay, so a warm worker
    can apply the next job's limits). ``cpu_used_s``: CPU this process has already spent."""
    _set(resource.RLIMIT_AS, limits.address_space_bytes)
    _set(resource.RLIMIT_CPU, None if limits.cpu_s is None else int(cpu_used_s + limits.cpu_s) + 1)


def _set(which: int, value: int | None) -> None:
    soft, hard = resource.getrlimit(which)
    want = resource.RLIM_INFINITY if value is None else int(value)
    if hard != resource.RLIM_INFINITY and (want == resource.RLIM_INFINITY or want > hard):
        want = hard
    if want != soft:
        resource.setrlimit(which, (want, hard))
