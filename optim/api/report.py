"""The offline HTML report, as the Export page asks for it."""

from __future__ import annotations

from optim.present.report import build_report

__all__ = ["report_html"]


def report_html(sweep_id: str, variant_id: str | None, device_id: str | None = None,
                model_label: str = "") -> str:
    """A self-contained HTML report of one sweep (plotly.js inline: opens offline). "Recommended" in it is the
    engine's recommendation on ``device_id``'s latency; ``variant_id`` (the user's selection) is shown apart."""
    return build_report(sweep_id, variant_id, device_id=device_id, model_label=model_label)
