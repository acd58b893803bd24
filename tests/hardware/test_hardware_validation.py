"""Validation helpers and the hardware CLI."""

from __future__ import annotations

import pytest

from optim.__main__ import main
from optim.hardware.calibration import validation
from optim.hardware.calibration.reference_models import reference_model


def test_error_summary_reports_distribution() -> None:
    s = validation.error_summary([-20.0, 10.0, 5.0, -5.0])
    assert s["n"] == 4
    assert s["median_abs_pct"] == pytest.approx(7.5)
    assert s["within_15_pct"] == pytest.approx(0.75)
    assert s["max_abs_pct"] == 20.0
    assert s["mean_signed_pct"] == pytest.approx(-2.5)


def test_published_table_gives_ratio_of_predicted_to_published() -> None:
    pts = [(d, p) for d, p in validation.published_points() if p.model == "ds_cnn"]
    table = validation.published_table(pts)
    assert len(table) == 1
    row = table.iloc[0]
    assert row["ratio"] == pytest.approx(row["predicted_ms"] / 16.8)
    assert row["precision_path"] == "INT8 native"


def test_reference_models_match_mlperf_tiny_mac_counts() -> None:
    from optim.graph.summary import summarize

    macs = {n: summarize(reference_model(n)).macs for n in ("resnet8", "ds_cnn", "mobilenet_v1_025")}
    assert macs["resnet8"] == pytest.approx(12.5e6, rel=0.02)
    assert macs["ds_cnn"] == pytest.approx(2.7e6, rel=0.05)
    assert macs["mobilenet_v1_025"] == pytest.approx(7.5e6, rel=0.02)


def test_cli_estimate_prints_device_and_fit(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hardware", "estimate", "ds_cnn", "--device", "stm32h7a3", "--bits", "8", "--layers", "3"]) == 0
    out = capsys.readouterr().out
    assert "STM32H7A3" in out and "INT8 native" in out and "fits: yes" in out


def test_cli_estimate_exits_2_for_unknown_device(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hardware", "estimate", "ds_cnn", "--device", "nope"]) == 2
    assert "Unknown device" in capsys.readouterr().err


def test_cli_show_lists_sources(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hardware", "show", "t4"]) == 0
    assert "NVIDIA T4 datasheet" in capsys.readouterr().out


@pytest.mark.slow
def test_recorded_estimates_of_published_points_match_the_estimator() -> None:
    """devices.toml keeps each published point's estimate (the band is built from it): it must be current."""
    table = validation.published_table()
    assert len(table) >= 10
    assert (table["predicted_ms"] / table["recorded_ms"]).between(0.98, 1.02).all(), table
