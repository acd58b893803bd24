"""Host calibration profiles: one per CPU, cached in the data directory; the committed one a fallback.

A profile (JSON, written by :mod:`optim.hardware.calibration.calibrate`) holds this machine's measured
peak and bandwidth, the fitted factors per kernel class and the held-out residuals that give the host
estimate its uncertainty band. It is valid only for the CPU it was fitted on: it carries the
:func:`optim.hardware.host.fingerprint` and is stored as ``$OPTIM_DATA_DIR/hardware/host-<key>.json``.
:func:`select_profile` picks, in order, ``$OPTIM_HOST_PROFILE`` (an explicit file), this CPU's cached
profile, else the committed ``host_profile.json`` — labelled as fitted on another CPU, never passed off
as this one's.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optim.hardware import host
from optim.paths import data_dir

FALLBACK_PATH = Path(__file__).resolve().parent / "host_profile.json"
# Bump when the estimator's host model changes what a profile means: older cached profiles then refit.
MODEL_VERSION = 5


@dataclass(frozen=True)
class ProfileChoice:
    """The profile the host estimate uses and where it came from.

    ``source``: ``cached`` (fitted on this CPU), ``override`` (``$OPTIM_HOST_PROFILE``), ``fallback`` (the
    committed profile of another machine), ``none``. ``label`` says it in words for the page."""

    profile: dict[str, Any] | None
    source: str
    path: Path | None
    label: str

    @property
    def calibrated_here(self) -> bool:
        return self.source in ("cached", "override")


def profile_dir() -> Path:
    return data_dir() / "hardware"


def profile_path(key: str | None = None) -> Path:
    """Where this CPU's (or fingerprint ``key``'s) calibrated profile lives."""
    return profile_dir() / f"host-{key or host.host_key()}.json"


def read_profile(path: Path) -> dict[str, Any] | None:
    """A profile file as a dict, or None when absent, unreadable or not a JSON object."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_profile(profile: dict[str, Any], path: Path | None = None) -> Path:
    """Write atomically (temp file + rename) so a reader never sees half a profile."""
    path = Path(path) if path is not None else profile_path(profile.get("fingerprint_key"))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps(profile, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def matches(profile: dict[str, Any] | None, key: str | None = None) -> bool:
    """True when ``profile`` was fitted on this CPU (same fingerprint key) by the current host model."""
    return (profile is not None and profile.get("fingerprint_key") == (key or host.host_key())
            and profile.get("model_version") == MODEL_VERSION)


def cached_profile(key: str | None = None) -> dict[str, Any] | None:
    """This CPU's calibrated profile from the data dir, or None when it has none (or a stale one)."""
    key = key or host.host_key()
    profile = read_profile(profile_path(key))
    return profile if matches(profile, key) else None


def fallback_label(profile: dict[str, Any] | None) -> str:
    if profile is None:
        return "uncalibrated: no profile for this CPU yet, efficiencies are priors"
    return (f"not calibrated on this CPU yet: using the committed profile fitted on "
            f"'{profile.get('cpu_model', 'another CPU')}' ({profile.get('created', '?')})")


def profile_id(choice: ProfileChoice | None = None) -> str:
    """A short identity of the profile in use (source, file, fit time, fingerprint): it changes whenever a
    new calibration lands or another profile is picked, so caches of host estimates can key on it."""
    c = choice or select_profile()
    p = c.profile or {}
    return "|".join([c.source, str(c.path or ""), str(p.get("created", "")), str(p.get("fingerprint_key", "")),
                     str(p.get("model_version", ""))])


def select_profile() -> ProfileChoice:
    """The profile the host estimate should use now (see the module docstring for the order)."""
    override = os.environ.get("OPTIM_HOST_PROFILE")
    if override:
        prof = read_profile(Path(override))
        if prof is not None:
            return ProfileChoice(prof, "override", Path(override), f"profile from $OPTIM_HOST_PROFILE ({override})")
    key = host.host_key()
    prof = cached_profile(key)
    if prof is not None:
        return ProfileChoice(prof, "cached", profile_path(key),
                             f"calibrated on this CPU {prof.get('created', '?')}")
    fallback = read_profile(FALLBACK_PATH)
    if fallback is not None:
        return ProfileChoice(fallback, "fallback", FALLBACK_PATH, fallback_label(fallback))
    return ProfileChoice(None, "none", None, fallback_label(None))
