"""Present-layer helpers the pages and the report share: flags, labels, intervals, chart legends, status text."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from optim import api
from optim.present.status import live_eta, sweep_status


def test_api_cpu_has_vnni_matches_cpuinfo_flags() -> None:
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else None
    if flags is None:
        assert api.cpu_has_vnni() is None
    else:
        assert api.cpu_has_vnni() == any(f in flags.split() for f in ("avx512_vnni", "avx_vnni", "amx_int8"))


def test_add_flags_never_blames_missing_vnni_when_cpu_has_it() -> None:
    import pandas as pd

    rows = [dict(variant_id=v, label=v, status="ok", prune_kind="none", prune_ratio=0.0, bits=b, executable=True,
                 top1=0.9, top1_lo=0.85, top1_hi=0.95, latency_ms=ms, size_bytes=1e6) for v, b, ms in
            (("base", 32, 1.0), ("int8", 8, 2.0))]
    with_vnni = api.add_flags(pd.DataFrame(rows), vnni=True).set_index("variant_id").loc["int8", "flags"]
    without = api.add_flags(pd.DataFrame(rows), vnni=False).set_index("variant_id").loc["int8", "flags"]
    assert "slower than baseline" in with_vnni and "without VNNI" not in with_vnni and "has VNNI" in with_vnni
    assert "without VNNI" in without


def test_pareto_2d_gives_distilled_and_auto_mixed_their_own_legend_entries() -> None:
    import pandas as pd

    rows = [dict(variant_id=v, label=v, status="ok", prune_kind=k, prune_ratio=r, bits=b, executable=ex,
                 top1=0.9, top1_lo=0.85, top1_hi=0.95, latency_ms=1.0 + i, size_bytes=1e6, distilled=d)
            for i, (v, k, r, b, ex, d) in enumerate([
                ("base", "none", 0.0, 32, True, False), ("p", "structured", 0.5, 32, True, False),
                ("p_kd", "structured", 0.5, 32, True, True), ("auto", "none", 0.0, 0, False, False)])]
    df = api.add_flags(pd.DataFrame(rows))
    df["target_ms"], df["pareto"] = df["latency_ms"], True
    traces = {t.name: t for t in api.pareto_2d(df).data if t.customdata is not None}
    assert set(traces) == {"FP32 · none", "FP32 · structured", "FP32 · structured · distilled",
                           "auto mixed ≤INT4 · none"}
    assert list(traces["FP32 · structured · distilled"].marker.symbol) == ["square-dot"]
    assert list(traces["auto mixed ≤INT4 · none"].marker.symbol) == ["circle-open"]  # simulated
    hover = traces["FP32 · structured"].hovertext[0]
    assert "1.000 ms" not in hover and "2.00 ms" in hover  # ~3 significant digits with the unit


def test_a_long_flag_note_is_cut_to_a_few_lines_in_the_hover_box_and_kept_whole_in_the_table() -> None:
    import pandas as pd

    note = "; ".join(f"static QDQ U8S8 per-channel config {i} 0.{i}5x" for i in range(12))  # ~450 characters
    rows = [dict(variant_id="base", label="base", status="ok", prune_kind="none", prune_ratio=0.0, bits=32,
                 executable=True, top1=0.9, top1_lo=0.85, top1_hi=0.95, latency_ms=1.0, size_bytes=1e6)]
    df = api.add_flags(pd.DataFrame(rows))
    df["flags"], df["target_ms"], df["pareto"] = note, df["latency_ms"], True
    hover = next(t for t in api.pareto_2d(df).data if t.customdata is not None).hovertext[0]
    flag_lines = hover.split("⚑ ", 1)[1].split("<br>")
    assert len(flag_lines) <= 3 and all(len(ln) <= 70 for ln in flag_lines), flag_lines
    assert flag_lines[0].startswith("static QDQ U8S8") and "whole note in the table" in flag_lines[-1]
    assert df["flags"].iloc[0] == note


@pytest.mark.parametrize(("values", "decimals"), [([0.07187, 0.17], 3), ([0.0085, 0.0109], 4), ([3.2, 9.9], 2),
                                                  ([12.0, 250.0], 0)])
def test_ms_decimals_keeps_three_significant_digits_of_largest(values: list[float], decimals: int) -> None:
    assert api.ms_decimals(values) == decimals
    assert api.fmt_ms(0.07187) == "0.0719 ms" and api.fmt_ms(172.4) == "172 ms"


def test_flags_on_target_says_slowdown_was_measured_here_when_latency_is_estimated() -> None:
    import pandas as pd

    flags = pd.Series(["slower than baseline — x", "slower than baseline — y", ""])
    out = api.flags_on_target(flags, pd.Series([True, False, True]))
    assert out.tolist() == ["slower than baseline on this CPU (measured) — x", "slower than baseline — y", ""]


def _rows(**over: object) -> pd.DataFrame:
    rows = [dict(variant_id=v, label=v, status=s, error=e, prune_kind="none", prune_ratio=0.0, bits=b,
                 executable=True, top1=None, top1_lo=None, top1_hi=None, agreement=a, n_eval=200, latency_ms=1.0,
                 size_bytes=1e6) for v, s, e, b, a in (("base", "ok", None, 32, 1.0), ("int8", "ok", None, 8, 0.9),
                                                        ("int4", "failed", "build: " + "x" * 300, 4, None))]
    return pd.DataFrame(rows).assign(**over)


def test_add_flags_gives_agreement_its_own_wilson_interval_when_there_are_no_labels() -> None:
    df = api.add_flags(_rows()).set_index("variant_id")
    assert df["metric_name"].iloc[0] == "agreement with baseline"
    lo, hi = df.loc["int8", "metric_lo"], df.loc["int8", "metric_hi"]
    assert lo < df.loc["int8", "metric"] < hi  # not collapsed onto the value
    assert (hi - lo) == pytest.approx(8.2, abs=1.0)  # ≈ 2 × 1.96 × sqrt(.9 × .1 / 200) in points
    assert df.loc["base", "metric_hi"] == 100 and df.loc["base", "metric_lo"] < 100
    assert "Wilson" in api.interval_note("agreement with baseline")


def test_flags_on_target_accepts_an_empty_sweep() -> None:
    empty = api.add_flags(_rows().iloc[0:0])
    out = api.flags_on_target(pd.Series([], dtype=float), pd.Series([], dtype=bool))
    assert len(empty) == 0 and len(out) == 0


def test_variants_of_a_sweep_without_rows_on_a_catalog_target_is_empty_not_an_error(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("OPTIM_DATA_DIR", str(tmp_path))
    api.open_store().create_sweep("fresh", "h", "d", None, "m", {}, total=3)  # a sweep before its first variant
    assert api.variants("fresh", "rpi4").empty


def test_sweep_status_counts_failures_and_reused_and_never_reports_success_while_running() -> None:
    rows = _rows()
    snap = dict(state="running", total=6, done=3, reused=2, started=100.0, last_done_at=110.0, current="int4",
                error=None)
    s = sweep_status(snap, rows, now=112.0)
    assert s["kind"] == "running" and "2 ok, 1 failed" in s["headline"] and "2 reused from the store" in s["headline"]
    assert s["done"] == 3 and s["total"] == 6
    assert s["eta_s"] == pytest.approx(10.0 * 3 - 2.0)  # 10 s per computed variant × 3 left − 2 s already spent
    done = sweep_status(snap | {"state": "done", "done": 3}, rows, now=120.0)
    assert done["kind"] == "warning" and done["headline"].startswith("Sweep finished: 2 ok, 1 failed")
    assert done["failures"]["reason"].iloc[0].endswith("x" * 300)  # the full reason, not cut
    clean = sweep_status(snap | {"state": "done"}, rows[rows["status"].eq("ok")], now=120.0)
    assert clean["kind"] == "success" and clean["failed"] == 0


def test_live_eta_counts_down_between_variants_and_waits_for_a_first_measurement() -> None:
    snap = dict(total=10, done=4, reused=2, started=0.0, last_done_at=20.0)
    assert live_eta(snap, 21.0) > live_eta(snap, 25.0) > 0  # moves every poll, not only when a variant ends
    assert live_eta(snap | {"done": 2}, 21.0) is None  # only reused so far: nothing measured yet


def test_fidelity_gives_cosine_a_bootstrap_interval_around_its_mean() -> None:
    import numpy as np

    from optim.measure.core import fidelity

    rng = np.random.default_rng(0)
    ref = rng.standard_normal((300, 10))
    f = fidelity(ref, ref + rng.standard_normal((300, 10)) * 0.5)
    assert f.cosine_lo < f.cosine < f.cosine_hi and f.cosine_hi - f.cosine_lo < 0.05
    same = fidelity(ref, ref)
    assert same.cosine_lo == pytest.approx(1.0) and same.cosine_hi == pytest.approx(1.0)


def test_every_2d_chart_grows_its_margins_to_fit_labels_and_3d_keeps_titles_inside() -> None:
    from optim.present import charts

    rows = _rows(top1=0.9, top1_lo=0.85, top1_hi=0.95)
    df = api.add_flags(rows).assign(target_ms=1.0, pareto=True)
    layers = pd.DataFrame({"node": ["/a/very/long/layer/name/Conv_0"], "ms": [0.2], "base_ms": [0.3]})
    figs = [charts.pareto_2d(df), charts.layer_bars(layers, {"ms": "variant", "base_ms": "baseline"}, "ms", "t"),
            charts.op_histogram_chart(pd.DataFrame({"op_type": ["Conv"], "count": [3]}))]
    for fig in figs:
        assert fig.layout.xaxis.automargin and fig.layout.yaxis.automargin, fig.layout.title.text
    scene = charts.pareto_3d(df).layout.scene
    assert scene.camera.eye.x > 1.25 and scene.domain.x[0] > 0  # further than plotly's default eye
