"""Catalog schema: every number carries a source and a tag; this machine is always a target."""

from __future__ import annotations

import copy

import pytest
import tomllib

from optim.errors import HardwareError
from optim.hardware import device, targets
from optim.hardware.catalog import CATALOG_PATH, CatalogError, load_catalog, parse_device
from optim.hardware.model.host_device import host_device


@pytest.fixture()
def raw_t4() -> dict:
    data = tomllib.loads(CATALOG_PATH.read_text())
    return copy.deepcopy(next(d for d in data["device"] if d["id"] == "t4"))


def test_load_catalog_has_ten_devices_with_sourced_numbers() -> None:
    devices = load_catalog()
    assert len(devices) >= 10
    for dev in devices:
        table = dev.table()
        assert table["source"].str.strip().str.len().gt(0).all(), dev.id
        assert table["tag"].isin(device.TAGS).all(), dev.id
        assert {"bandwidth", "memory", "onchip", "power", "eff_compute", "overhead_us"} <= set(table["field"])


def test_parse_device_raises_when_number_lacks_source(raw_t4: dict) -> None:
    del raw_t4["bandwidth"]["source"]
    with pytest.raises(CatalogError, match="t4.bandwidth.*source"):
        parse_device(raw_t4)


def test_parse_device_raises_when_tag_unknown(raw_t4: dict) -> None:
    raw_t4["peak_int8"]["tag"] = "guessed"
    with pytest.raises(CatalogError, match="peak_int8"):
        parse_device(raw_t4)


def test_parse_device_raises_when_number_is_bare(raw_t4: dict) -> None:
    raw_t4["power"] = 70
    with pytest.raises(CatalogError, match="power"):
        parse_device(raw_t4)


def test_parse_device_raises_when_native_precision_has_no_peak(raw_t4: dict) -> None:
    del raw_t4["peak_int4"]
    with pytest.raises(CatalogError, match="precision_int4"):
        parse_device(raw_t4)


def test_parse_device_raises_when_emulated_target_has_no_peak(raw_t4: dict) -> None:
    raw_t4["precision_int4"] = {"mode": "emulated", "via": "int2", "tag": "assumed", "source": "x"}
    with pytest.raises(CatalogError, match="precision_int4"):
        parse_device(raw_t4)


def test_spec_si_converts_units() -> None:
    t4 = targets.get_device("t4")
    assert t4.peak("int8") == pytest.approx(130e12)
    assert t4.spec("bandwidth") == pytest.approx(320e9)
    assert t4.spec("overhead_us") == pytest.approx(5e-6)
    assert targets.get_device("stm32h743").spec("onchip") == 2**20


def test_get_device_raises_listing_ids_when_unknown() -> None:
    with pytest.raises(HardwareError, match="t4"):
        targets.get_device("no_such_device")


def test_list_devices_includes_this_machine_estimated_and_measured() -> None:
    ids = [d.id for d in targets.list_devices()]
    assert ids[:2] == ["host", "host_measured"]
    assert targets.get_device("host_measured").flag("measured")


def test_list_devices_includes_gpu_only_when_cuda_provider_present() -> None:
    ids = [d.id for d in targets.list_devices()]
    assert ("cuda_measured" in ids) == targets.cuda_available()


def test_host_device_uses_profile_factors_when_calibrated() -> None:
    profile = {"peak_fp32": {"value": 50.0, "unit": "GFLOPS", "tag": "measured", "source": "test"},
               "bandwidth": {"value": 20.0, "unit": "GB/s", "tag": "measured", "source": "test"},
               "classes": {"conv": {"eff_compute": 0.5, "eff_memory": 0.8, "overhead_us": 3.0}},
               "run_overhead_us": 12.0}
    dev = host_device(profile)
    assert dev.peak("fp32") == pytest.approx(50e9)
    assert dev.specs["bandwidth"].tag == "measured"
    assert dev.factors("conv").overhead_s == pytest.approx(3e-6)
    assert dev.factors("gemm").eff_compute == dev.spec("eff_compute")  # uncalibrated class: device default
    assert dev.specs["run_overhead_us"].tag == "fitted"


def test_host_device_falls_back_to_priors_when_uncalibrated() -> None:
    dev = host_device(None)
    assert dev.peak("fp32") > 0
    assert dev.class_factors == {}
    assert "uncalibrated" in dev.notes[0]


def test_host_device_warns_when_profile_comes_from_another_cpu() -> None:
    profile = {"classes": {}, "cpu_model": "Some Other CPU 9000", "calibration_models": ["m"]}
    assert "WARNING" in host_device(profile).notes[0]
