"""Per-CPU host profiles: the fingerprint keys them, another CPU's profile is never used as this one's."""

from __future__ import annotations

from pathlib import Path

import pytest

from optim.handle import ModelHandle
from optim.hardware import host, profiles
from optim.hardware.targets import estimate, get_device

FACTS = {"model": "Test CPU 1000", "flags": {"fpu", "sse4_1", "avx", "avx2", "fma"}, "cores": 4, "machine": "x86_64"}


def _profile(key: str) -> dict:
    return {"fingerprint_key": key, "model_version": profiles.MODEL_VERSION, "cpu_model": "Test CPU",
            "created": "2030-01-01T00:00:00Z", "classes": {}, "calibration_models": ["m"],
            "holdout": {"errors_pct": {"a": -5.0, "b": 3.0, "c": 8.0, "d": -2.0, "e": 1.0}}}


@pytest.fixture()
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("OPTIM_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("OPTIM_HOST_PROFILE", raising=False)
    return tmp_path


def test_fingerprint_key_changes_when_kernel_isa_flags_differ() -> None:
    avx512 = {**FACTS, "flags": FACTS["flags"] | {"avx512f", "avx512_vnni"}}
    assert host.host_key(host.fingerprint(FACTS, "1.0")) != host.host_key(host.fingerprint(avx512, "1.0"))
    assert "avx512_vnni" in host.fingerprint(avx512, "1.0")["isa"]


def test_fingerprint_key_changes_with_cores_model_and_runtime_version() -> None:
    base = host.host_key(host.fingerprint(FACTS, "1.0"))
    assert base != host.host_key(host.fingerprint({**FACTS, "cores": 8}, "1.0"))
    assert base != host.host_key(host.fingerprint({**FACTS, "model": "Other CPU"}, "1.0"))
    assert base != host.host_key(host.fingerprint(FACTS, "1.1"))


def test_fingerprint_key_ignores_flags_no_kernel_uses() -> None:
    noisy = {**FACTS, "flags": FACTS["flags"] | {"hypervisor", "pse", "rdrand"}}
    assert host.host_key(host.fingerprint(FACTS, "1.0")) == host.host_key(host.fingerprint(noisy, "1.0"))


def test_parse_cpuinfo_reads_model_and_flags() -> None:
    info = host.parse_cpuinfo("processor\t: 0\nmodel name\t: Xeon X\ncpu MHz\t\t: 2400.0\nflags\t\t: fpu avx2 fma\n"
                              "processor\t: 1\nmodel name\t: ignored\n")
    assert info == {"model": "Xeon X", "ghz": 2.4, "flags": frozenset({"fpu", "avx2", "fma"})}


def test_select_profile_ignores_profile_of_another_cpu_and_labels_fallback(data_dir: Path) -> None:
    other = _profile("0123456789abcdef")
    profiles.write_profile(other)  # stored under the other CPU's key
    profiles.write_profile(other, profiles.profile_path())  # and, mislabelled, under this CPU's name
    choice = profiles.select_profile()
    assert choice.source == "fallback" and not choice.calibrated_here
    assert choice.path == profiles.FALLBACK_PATH
    assert "not calibrated on this CPU" in choice.label
    dev = get_device("host")
    assert dev.notes[0] == choice.label
    assert dev.residuals_pct == ()  # another CPU's residuals say nothing about this one


def test_select_profile_uses_this_cpus_cached_profile(data_dir: Path) -> None:
    path = profiles.write_profile(_profile(host.host_key()))
    assert path.parent == data_dir / "hardware"
    choice = profiles.select_profile()
    assert (choice.source, choice.path) == ("cached", path)
    assert len(get_device("host").residuals_pct) == 5


def test_cached_profile_refits_when_host_model_version_changes(data_dir: Path) -> None:
    stale = {**_profile(host.host_key()), "model_version": profiles.MODEL_VERSION - 1}
    profiles.write_profile(stale)
    assert profiles.cached_profile() is None


def test_host_estimate_says_fallback_until_calibrated(data_dir: Path, tiny_cnn: ModelHandle) -> None:
    assert estimate(tiny_cnn, "host", auto_calibrate=False).calibration == "fallback"
    profiles.write_profile(_profile(host.host_key()))
    est = estimate(tiny_cnn, "host", auto_calibrate=False)
    assert est.calibration == "calibrated"
    assert "5 held-out models" in est.confidence_note


def test_read_profile_returns_none_when_file_is_not_a_json_object(tmp_path: Path) -> None:
    bad = tmp_path / "p.json"
    bad.write_text("[1, 2]")
    assert profiles.read_profile(bad) is None
    assert profiles.read_profile(tmp_path / "missing.json") is None
