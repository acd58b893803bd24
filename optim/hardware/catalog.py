"""Target-device catalog: sourced specs and published validation points from ``devices.toml``.

No maintained library ships a catalog of edge/data-centre accelerators with per-number provenance, so
the catalog is our own data file; this module loads it and checks its schema (every number needs a
source and a tag; every validation point a source). The live entries for the machine we run on (host,
host_measured, cuda_measured) are added by :mod:`optim.hardware.targets`.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import tomllib

from optim.hardware.device import (
    FLAGS,
    MODES,
    OPTIONAL_SPECS,
    PRECISIONS,
    REQUIRED_SPECS,
    TAGS,
    UNITS,
    CatalogError,
    Device,
    PrecisionSupport,
    Spec,
    ValidationPoint,
)

CATALOG_PATH = Path(__file__).resolve().parent / "devices.toml"

def _parse_spec(dev_id: str, key: str, raw: Any) -> Spec:
    if not isinstance(raw, dict):
        raise CatalogError(f"{dev_id}.{key}: write it as {{value, unit, tag, source}}, got {raw!r}.")
    missing = [k for k in ("value", "unit", "tag", "source") if k not in raw]
    if missing:
        raise CatalogError(f"{dev_id}.{key}: missing {', '.join(missing)} — every number needs its source.")
    if not isinstance(raw["value"], int | float) or raw["value"] < 0:
        raise CatalogError(f"{dev_id}.{key}: value must be a non-negative number, got {raw['value']!r}.")
    if raw["unit"] not in UNITS:
        raise CatalogError(f"{dev_id}.{key}: unknown unit {raw['unit']!r}; use one of {sorted(UNITS)}.")
    if raw["tag"] not in TAGS:
        raise CatalogError(f"{dev_id}.{key}: tag {raw['tag']!r} must be one of {TAGS}.")
    if not str(raw["source"]).strip():
        raise CatalogError(f"{dev_id}.{key}: empty source — say where the number comes from.")
    return Spec(float(raw["value"]), raw["unit"], raw["tag"], str(raw["source"]))


def _parse_precision(dev_id: str, prec: str, raw: Any, specs: dict[str, Spec]) -> PrecisionSupport:
    key = f"precision_{prec}"
    if not isinstance(raw, dict) or raw.get("mode") not in MODES:
        raise CatalogError(f"{dev_id}.{key}: needs mode in {MODES}.")
    if not str(raw.get("source", "")).strip() or raw.get("tag") not in TAGS:
        raise CatalogError(f"{dev_id}.{key}: needs a source and a tag in {TAGS}.")
    mode = raw["mode"]
    target = raw.get("via") if mode == "emulated" else raw.get("to") if mode == "convert" else None
    if mode in ("emulated", "convert"):
        if target not in PRECISIONS or f"peak_{target}" not in specs:
            raise CatalogError(f"{dev_id}.{key}: {mode} needs a target precision with a peak, got {target!r}.")
    if mode == "native" and f"peak_{prec}" not in specs:
        raise CatalogError(f"{dev_id}.{key}: native precision needs peak_{prec}.")
    return PrecisionSupport(prec, mode, target, raw["tag"], str(raw["source"]))


def parse_device(raw: dict[str, Any]) -> Device:
    """Validate one catalog entry (a dict as read from TOML) and build the Device."""
    dev_id = str(raw.get("id", "")).strip()
    if not dev_id:
        raise CatalogError("A catalog entry has no id.")
    for k in ("name", "kind", "runtime"):
        if not raw.get(k):
            raise CatalogError(f"{dev_id}: missing {k}.")
    specs: dict[str, Spec] = {}
    for key, val in raw.items():
        if key.startswith("peak_") or key in REQUIRED_SPECS or key in OPTIONAL_SPECS:
            specs[key] = _parse_spec(dev_id, key, val)
    missing = [k for k in REQUIRED_SPECS if k not in specs]
    if missing:
        raise CatalogError(f"{dev_id}: missing {', '.join(missing)}.")
    bad_peaks = [k for k in specs if k.startswith("peak_") and k[5:] not in PRECISIONS]
    if bad_peaks:
        raise CatalogError(f"{dev_id}: unknown precision in {bad_peaks}; use {PRECISIONS}.")
    precisions = {}
    for prec in PRECISIONS:
        if f"precision_{prec}" not in raw:
            raise CatalogError(f"{dev_id}: missing precision_{prec} (native/emulated/convert/unsupported).")
        precisions[prec] = _parse_precision(dev_id, prec, raw[f"precision_{prec}"], specs)
    flags = {k: bool(raw.get(k, False)) for k in FLAGS}
    points = tuple(_parse_validation(dev_id, i, v) for i, v in enumerate(raw.get("validation", [])))
    known = set(FLAGS) | {"id", "name", "kind", "runtime", "validation", *REQUIRED_SPECS, *OPTIONAL_SPECS}
    unknown = [k for k in raw if k not in known and not k.startswith(("peak_", "precision_"))]
    if unknown:
        raise CatalogError(f"{dev_id}: unknown fields {unknown}.")
    basis = (f"{len(points)} published batch-1 latencies ({'; '.join(p.label for p in points)})" if points
             else "no published validation point")
    return Device(dev_id, raw["name"], raw["kind"], raw["runtime"], specs, precisions, flags, validation=points,
                  residuals_pct=tuple(p.residual_pct for p in points), residual_basis=basis)


def _parse_validation(dev_id: str, i: int, raw: Any) -> ValidationPoint:
    where = f"{dev_id}.validation[{i}]"
    keys = ("label", "model", "bits", "published_ms", "estimated_ms", "source")
    if not isinstance(raw, dict) or any(k not in raw for k in keys):
        raise CatalogError(f"{where}: needs {', '.join(keys)}.")
    for k in ("published_ms", "estimated_ms"):
        if not isinstance(raw[k], int | float) or raw[k] <= 0:
            raise CatalogError(f"{where}.{k}: must be a positive number of milliseconds, got {raw[k]!r}.")
    if not str(raw["source"]).strip():
        raise CatalogError(f"{where}: empty source — say where the published latency comes from.")
    return ValidationPoint(str(raw["label"]), str(raw["model"]), int(raw["bits"]), float(raw["published_ms"]),
                           float(raw["estimated_ms"]), str(raw["source"]))


def load_catalog(path: Path = CATALOG_PATH) -> list[Device]:
    """Parse and validate a catalog TOML file."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise CatalogError(f"Cannot read the device catalog {path}: {err}") from err
    devices = [parse_device(d) for d in data.get("device", [])]
    ids = [d.id for d in devices]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise CatalogError(f"Duplicate device ids in {path}: {dupes}.")
    return devices


@lru_cache(maxsize=1)
def static_catalog() -> tuple[Device, ...]:
    """The parsed ``devices.toml`` (read once per process)."""
    return tuple(load_catalog())
