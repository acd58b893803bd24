"""optim.analysis.select: one implementation of baseline, metric interval, front, constraints, recommendation,
and the CLI, the api (every target device) and the HTML report naming the same recommended variant."""

from __future__ import annotations

import contextlib
import html
import io
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from optim import api
from optim.__main__ import main
from optim.analysis import select
from optim.measure.core import wilson_interval


def _row(vid: str, **kw: object) -> dict:
    base = dict(variant_id=vid, label=vid, status="ok", error=None, prune_kind="none", prune_ratio=0.0, bits=32,
                opt_level="all", executable=True, top1=0.95, top1_lo=0.93, top1_hi=0.97, agreement=1.0,
                n_eval=400, latency_ms=1.0, size_bytes=4_000_000, effective_size_bytes=4_000_000,
                artifact_path=None)
    return base | kw


def _prepared(*rows: dict, estimated: list[float | None] | None = None) -> pd.DataFrame:
    df = pd.DataFrame(list(rows))
    est = None if estimated is None else pd.Series(estimated, index=df.index, dtype=float)
    return select.prepare(df, est)


def test_baseline_row_is_the_finished_unpruned_fp32_variant_at_level_all() -> None:
    df = _prepared(_row("q8", bits=8), _row("base_disable", opt_level="disable"), _row("base"),
                   _row("pruned", prune_kind="structured", prune_ratio=0.5))
    assert select.baseline_row(df)["variant_id"] == "base"
    assert select.baseline_row(_prepared(_row("base", status="failed"), _row("q8", bits=8))) is None


def test_with_metric_uses_agreement_with_its_wilson_interval_when_there_are_no_labels() -> None:
    df = _prepared(_row("base", top1=None, top1_lo=None, top1_hi=None, agreement=1.0, n_eval=200),
                   _row("q8", bits=8, top1=None, top1_lo=None, top1_hi=None, agreement=0.9, n_eval=200))
    lo, hi = wilson_interval(180, 200)
    q8 = df.set_index("variant_id").loc["q8"]
    assert df["metric_name"].iloc[0] == select.AGREEMENT
    assert q8["metric"] == pytest.approx(90.0)
    assert (q8["metric_lo"], q8["metric_hi"]) == pytest.approx((100 * lo, 100 * hi))


def test_vs_baseline_is_below_only_outside_the_baselines_interval() -> None:
    df = _prepared(_row("base"), _row("same", bits=8, top1=0.931), _row("below", bits=4, top1=0.92),
                   _row("above", bits=16, top1=0.98))
    assert df.set_index("variant_id")["vs_baseline"].to_dict() == {"base": "same", "same": "same", "below": "below",
                                                                   "above": "above"}


def test_recommend_takes_fastest_executable_front_variant_not_significantly_below() -> None:
    df = _prepared(_row("base"), _row("fast", bits=8, latency_ms=0.5, top1=0.935, effective_size_bytes=1_000_000),
                   _row("fastest_bad", bits=4, latency_ms=0.3, top1=0.5, effective_size_bytes=500_000),
                   _row("sim", bits=3, executable=False, latency_ms=0.2, top1=0.95, effective_size_bytes=400_000))
    assert select.recommend(df)["variant_id"] == "fast"
    worse = _prepared(_row("base"), _row("bad", bits=4, latency_ms=0.3, top1=0.5))
    assert select.recommend(worse)["variant_id"] == "base"  # never a variant significantly below


def test_recommend_ranks_on_the_target_latency_not_the_measured_one() -> None:
    rows = (_row("base"), _row("q8", bits=8, latency_ms=2.0, top1=0.94, effective_size_bytes=1_000_000),
            _row("fp16", bits=16, latency_ms=0.9, top1=0.95, effective_size_bytes=2_000_000))
    assert select.recommend(_prepared(*rows))["variant_id"] == "fp16"
    assert select.recommend(_prepared(*rows, estimated=[1.0, 0.1, 0.5]))["variant_id"] == "q8"


def test_recommend_is_none_without_a_finished_baseline() -> None:
    assert select.recommend(_prepared(_row("base", status="failed"), _row("q8", bits=8))) is None


def test_apply_constraints_marks_feasible_rows_and_picks_the_most_accurate() -> None:
    df = _prepared(_row("a", top1=0.95), _row("b", bits=8, latency_ms=0.5, top1=0.90),
                   _row("c", bits=4, latency_ms=0.4, top1=0.70), _row("d", bits=2, status="failed", top1=None))
    out, best = select.apply_constraints(df, max_ms=0.6, min_metric=80)
    assert best["variant_id"] == "b"
    assert out.set_index("variant_id")["feasible"].to_dict() == {"a": False, "b": True, "c": False, "d": False}
    assert select.apply_constraints(df, max_ms=0.1)[1] is None


def test_front_2d_matches_a_naive_dominance_check() -> None:
    rng = np.random.default_rng(3)
    df = pd.DataFrame({"target_ms": rng.uniform(0, 5, 40).round(1), "metric": rng.uniform(50, 100, 40).round(0),
                       "status": ["ok"] * 38 + ["failed"] * 2})
    front = select.front_2d(df, "target_ms", "metric")
    ok = df[df["status"] == "ok"]
    naive = [i for i, a in ok.iterrows() if not any(
        b["target_ms"] <= a["target_ms"] and b["metric"] >= a["metric"]
        and (b["target_ms"] < a["target_ms"] or b["metric"] > a["metric"]) for _, b in ok.iterrows())]
    assert sorted(front.index) == sorted(naive)
    assert front["target_ms"].is_monotonic_increasing


# --- one stored sweep, every surface ---------------------------------------------------------------
SAMPLE = "mlp_tabular"


@pytest.fixture(scope="module")
def stored_sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """A CLI sweep of a bundled sample: 75 % structured pruning without fine-tuning is the fastest on most
    targets but far less accurate, so accuracy-ranked and latency-ranked choices differ."""
    store = tmp_path_factory.mktemp("select") / "store"
    out = _cli(store, None)
    sid = re.search(r"^sweep (\w+):", out, re.M).group(1)
    return sid, store


def _cli(store: Path, target: str | None) -> str:
    argv = ["sweep", SAMPLE, "--ratios", "0,0.75", "--bits", "32,8,3", "--kinds", "structured", "--budget", "0.05",
            "--eval-limit", "200", "--store", str(store)]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(io.StringIO()):
        assert main(argv + (["--target", target] if target else [])) == 0
    return buf.getvalue()


def _cli_recommended(out: str) -> str:
    return re.search(r"^recommended: (.+?) \(", out, re.M).group(1)


def _report_recommended(page: str) -> str:
    return html.unescape(re.search(r"<h2>Recommended variant</h2>.*?<div class=box><b>(.+?)</b>", page, re.S).group(1))


@pytest.mark.slow
def test_cli_api_and_report_name_the_same_recommended_variant_on_every_target(
    stored_sweep: tuple[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    sid, store = stored_sweep
    monkeypatch.setenv("OPTIM_DATA_DIR", str(store))
    differing = []
    for device in api.list_devices()["id"]:
        df = api.variants(sid, device)
        rec = api.recommend(df)
        base = api.baseline_row(df)
        assert rec is not None and rec["metric"] >= base["metric_lo"], device
        assert not rec["simulated"] and rec["status"] == "ok"
        runnable = df[df["status"].eq("ok") & ~df["simulated"]]
        fastest = runnable.sort_values("target_ms").iloc[0]
        if fastest["metric"] < base["metric_lo"]:
            differing.append(device)
        target = None if device == api.MEASURED_DEVICE else device
        assert _cli_recommended(_cli(store, target)) == rec["label"], device
        other = df[df["variant_id"] != rec["variant_id"]].iloc[0]["variant_id"]  # a user selection that differs
        page = api.report_html(sid, other, device_id=device)
        assert _report_recommended(page) == rec["label"], device
        assert "<h2>Your selection</h2>" in page
    catalog = [d for d in differing if d != api.MEASURED_DEVICE]
    assert catalog, "no catalog target where the fastest variant is significantly less accurate"
