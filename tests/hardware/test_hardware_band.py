"""Every estimate carries an uncertainty band from its device's validation residuals."""

from __future__ import annotations

import pytest

from optim.handle import ModelHandle
from optim.hardware.model.band import measured_band, residual_band
from optim.hardware.targets import estimate, list_devices


def test_every_device_estimate_has_a_band_around_it_and_a_note(tiny_cnn: ModelHandle) -> None:
    for dev in list_devices():
        e = estimate(tiny_cnn, dev.id, auto_calibrate=False)
        assert 0 < e.band_low_ms <= e.total_ms <= e.band_high_ms, dev.id
        assert e.confidence_note, dev.id


def test_ane_estimate_is_flagged_poorly_validated(tiny_cnn: ModelHandle) -> None:
    e = estimate(tiny_cnn, "apple_a17_ane")
    assert e.poorly_validated and e.confidence_note.startswith("poorly validated")
    stm = estimate(tiny_cnn, "stm32h7a3")
    assert not stm.poorly_validated and "3 published" in stm.confidence_note


def test_residual_band_spans_few_points_with_a_floor() -> None:
    b = residual_band(10.0, [-10.0, 40.0], "2 points")
    assert b.low_ms == pytest.approx(8.0)  # -10 % widened to the -20 % floor
    assert b.high_ms == pytest.approx(14.0)
    assert not b.poorly_validated


def test_residual_band_uses_percentiles_when_many_residuals() -> None:
    res = [-30.0] + [0.0] * 18 + [30.0]
    b = residual_band(1.0, res, "20 models")
    assert 0.7 < b.low_ms < 1.0 and 1.0 < b.high_ms < 1.3
    assert "10th-90th percentile" in b.note


def test_residual_band_is_a_wide_prior_without_residuals() -> None:
    b = residual_band(2.0, [], "no published validation point")
    assert (b.low_ms, b.high_ms) == (1.0, 4.0)
    assert "prior" in b.note


def test_residual_band_flags_device_whose_points_are_far_off() -> None:
    b = residual_band(1.0, [-80.0, -60.0], "ANE")
    assert b.poorly_validated and b.low_ms == pytest.approx(0.2)


def test_measured_band_is_median_plus_minus_p90_spread() -> None:
    b = measured_band(2.0, 2.5, 40)
    assert (b.low_ms, b.high_ms) == (1.5, 2.5)
