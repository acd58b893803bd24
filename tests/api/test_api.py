"""optim.api and the views it serves: flags, constraints, background sweeps, layer view, report."""

from __future__ import annotations

import os
import re
import time

import numpy as np
import pandas as pd
import pytest

from optim import api
from optim.errors import OptimError
from optim.io.data import Dataset


def _row(vid: str, **kw: object) -> dict:
    base = dict(variant_id=vid, label=vid, status="ok", error=None, prune_kind="none", prune_ratio=0.0, bits=32,
                opt_level="all", executable=True, top1=0.95, top1_lo=0.93, top1_hi=0.97, agreement=1.0,
                latency_ms=1.0, size_bytes=4_000_000, effective_size_bytes=4_000_000, artifact_path=None)
    return base | kw


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory):
    old = os.environ.get("OPTIM_DATA_DIR")
    os.environ["OPTIM_DATA_DIR"] = str(tmp_path_factory.mktemp("store"))
    yield os.environ["OPTIM_DATA_DIR"]
    if old is None:
        os.environ.pop("OPTIM_DATA_DIR", None)
    else:
        os.environ["OPTIM_DATA_DIR"] = old


@pytest.fixture(scope="module")
def loaded(tiny_cnn, tiny_images) -> api.Loaded:
    x, y = tiny_images
    ds = Dataset(x=x, y=y, name="tiny")
    return api.Loaded(handle=tiny_cnn, test=ds, calib=ds.subset(32), origin="upload", label="tiny_cnn")


@pytest.fixture(scope="module")
def sweep_id(loaded: api.Loaded, store_dir: str) -> str:
    req = api.SweepRequest(ratios=(0.0, 0.5), bits=(32, 8, 4), prune_kinds=("unstructured",), eval_limit=60,
                           latency_budget_s=0.05)
    job = api.start_sweep(loaded, req)
    assert job.wait(120), "tiny sweep did not finish in 120 s"
    assert job.state == "done", job.error
    return job.sweep_id


def test_add_flags_marks_simulated_and_not_significant() -> None:
    df = pd.DataFrame([_row("base"), _row("q4", bits=4, executable=False, top1=0.94, top1_lo=0.92, top1_hi=0.96,
                                          effective_size_bytes=500_000)])
    out = api.add_flags(df).set_index("variant_id")
    assert "simulated" in out.loc["q4", "flags"]
    assert "difference not significant" in out.loc["q4", "flags"]
    assert out.loc["base", "flags"] == ""
    assert out.loc["q4", "size_mb"] == pytest.approx(0.5)
    assert out.loc["q4", "metric"] == pytest.approx(94.0)


def test_add_flags_explains_slower_variant_when_int8_or_unstructured() -> None:
    df = pd.DataFrame([_row("base"), _row("int8", bits=8, latency_ms=2.0, top1=0.80, top1_lo=0.78, top1_hi=0.82),
                       _row("un", prune_kind="unstructured", prune_ratio=0.5, latency_ms=1.3)])
    out = api.add_flags(df, vnni=False).set_index("variant_id")
    assert "slower than baseline — INT8 kernels without VNNI" in out.loc["int8", "flags"]
    assert "not significant" not in out.loc["int8", "flags"]
    assert "unstructured sparsity" in out.loc["un", "flags"]


def test_add_flags_reports_failure_reason_when_variant_failed() -> None:
    df = pd.DataFrame([_row("base"), _row("bad", status="failed", error="Unsupported op Foo", top1=None)])
    out = api.add_flags(df).set_index("variant_id")
    assert out.loc["bad", "flags"] == "failed: Unsupported op Foo"


def test_apply_constraints_returns_best_feasible_variant() -> None:
    df = api.add_flags(pd.DataFrame([_row("a", latency_ms=1.0, top1=0.95), _row("b", latency_ms=0.5, top1=0.90),
                                     _row("c", latency_ms=0.4, top1=0.70)]))
    df["target_ms"] = df["latency_ms"]
    out, best = api.apply_constraints(df, max_ms=0.6, min_metric=80)
    assert best["variant_id"] == "b"
    assert out.set_index("variant_id")["feasible"].to_dict() == {"a": False, "b": True, "c": False}
    _, none = api.apply_constraints(df, max_ms=0.1)
    assert none is None


def test_graph_diff_lists_lost_gained_and_op_changes() -> None:
    d = api.graph_diff([("c1", "Conv"), ("r1", "Relu")], [("c1", "Conv"), ("q", "QuantizeLinear")])
    assert d["lost"]["node"].tolist() == ["r1"]
    assert d["gained"]["node"].tolist() == ["q"]
    assert dict(zip(d["ops"]["op_type"], d["ops"]["change"], strict=True)) == {"QuantizeLinear": 1, "Relu": -1}


def test_quant_demo_levels_shrink_with_bits(tiny_cnn) -> None:
    layer = api.weight_layers(tiny_cnn)["node"].iloc[0]
    q8, q4 = api.quant_demo(tiny_cnn, layer, 8), api.quant_demo(tiny_cnn, layer, 4)
    assert q4["levels"] <= 16 < q8["levels"] <= 256
    assert q8["sqnr_db"] > q4["sqnr_db"]


def test_prune_demo_drops_lowest_norm_channels(tiny_cnn) -> None:
    layer = api.weight_layers(tiny_cnn)["node"].iloc[0]
    p = api.prune_demo(tiny_cnn, layer, 0.5)
    norms = p["channel_norms"]
    assert len(p["dropped_channels"]) == len(norms) // 2
    kept = np.setdiff1d(np.arange(len(norms)), p["dropped_channels"])
    assert norms[p["dropped_channels"]].max() <= norms[kept].min()
    assert p["kept_fraction"] == pytest.approx(0.5, abs=0.02)


def test_load_upload_raises_optim_error_when_bytes_are_not_a_model() -> None:
    with pytest.raises(OptimError):
        api.load_upload(b"this is not a model", "bad.onnx")


def test_start_sweep_stores_every_variant_with_flags(sweep_id: str) -> None:
    df = api.variants(sweep_id)
    assert len(df) == 6
    assert df["status"].eq("ok").all()
    assert df["pareto"].any()
    assert df.loc[df["bits"] == 4, "flags"].str.contains("simulated").all()
    assert (df["target_source"] == "measured").all()


def test_start_sweep_returns_running_job_when_same_sweep_already_runs(loaded: api.Loaded, store_dir: str) -> None:
    req = api.SweepRequest(ratios=(0.0, 0.3), bits=(32, 8), prune_kinds=("unstructured",), eval_limit=40,
                           latency_budget_s=0.05)
    first = api.start_sweep(loaded, req)
    second = api.start_sweep(loaded, req)
    assert first.wait(120)
    assert second.id == first.id or second.state == "done"


def test_job_cancel_stops_before_all_variants(loaded: api.Loaded, store_dir: str) -> None:
    req = api.SweepRequest(ratios=(0.0, 0.2, 0.4, 0.6), bits=(32, 16, 8), prune_kinds=("unstructured",),
                           eval_limit=40, latency_budget_s=0.2)
    job = api.start_sweep(loaded, req)
    deadline = time.time() + 60
    while job.done < 1 and time.time() < deadline and job.state == "running":
        time.sleep(0.05)
    job.cancel()
    assert job.wait(60)
    assert job.state == "cancelled"
    assert 0 < len(api.variants(job.sweep_id)) < job.total


def test_layer_view_compares_variant_with_baseline(sweep_id: str) -> None:
    df = api.variants(sweep_id)
    vid = df[(df["bits"] == 8) & (df["prune_ratio"] > 0)]["variant_id"].iloc[0]
    view = api.layer_view(sweep_id, vid)
    t = view["table"]
    assert {"node", "op_type", "base_ms", "ms", "macs", "params", "applied_ratio"} <= set(t.columns)
    assert t["ms"].notna().any() and t["base_ms"].notna().any()
    assert view["base"]["bits"] == 32


def test_layer_view_raises_when_variant_not_in_sweep(sweep_id: str) -> None:
    with pytest.raises(OptimError, match="not part of sweep"):
        api.layer_view(sweep_id, "nope")


def test_report_html_embeds_plotly_and_needs_no_network(sweep_id: str) -> None:
    html = api.report_html(sweep_id, None, model_label="tiny_cnn")
    assert html.startswith("<!DOCTYPE html>")
    assert "Compression report: tiny_cnn" in html
    assert re.search(r"<script[^>]*\ssrc=", html) is None  # no external script: opens offline
    assert "Plotly.newPlot" in html and len(html) > 1_000_000  # plotly.js inline
    assert "Recommended variant" in html and "simulated" in html


def test_report_opens_with_a_summary_naming_the_engine_recommendation(sweep_id: str) -> None:
    import html as html_lib

    page = api.report_html(sweep_id, None, model_label="tiny_cnn")
    summary = page[page.index("<h2>In short</h2>"):page.index("<h2>The model</h2>")]
    assert summary and page.index("<h2>In short</h2>") < page.index("<h2>Recommended variant</h2>")
    df = api.variants(sweep_id)
    assert f"built and measured {len(df)} variants" in summary
    rec = api.recommend(df)
    if rec["bits"] == 32 and not rec["prune_ratio"]:  # the engine keeps the baseline
        assert "keeping the baseline" in summary
    else:
        assert html_lib.escape(str(rec["label"])) in summary and "× the baseline" in summary


def test_pareto_2d_has_one_point_per_ok_variant(sweep_id: str) -> None:
    df = api.variants(sweep_id)
    fig = api.pareto_2d(df)
    points = sum(len(t.customdata) for t in fig.data if t.customdata is not None)
    assert points == int(df["status"].eq("ok").sum())
    assert fig.layout.xaxis.title.text.startswith("Latency (ms")
    assert fig.layout.yaxis.title.text == "Accuracy (top-1, %)"


def test_soft_labels_sum_to_one_and_flatten_with_temperature(loaded: api.Loaded) -> None:
    soft = api.soft_labels(loaded, 3, (1.0, 4.0))
    assert len(soft) == 10
    assert soft["T = 1"].sum() == pytest.approx(1.0) and soft["T = 4"].sum() == pytest.approx(1.0)
    assert soft["T = 4"].max() <= soft["T = 1"].max()
    assert soft["true_label"].sum() == 1


def test_fusion_of_counts_every_graph_node(loaded: api.Loaded) -> None:
    table = api.fusion_of(loaded)
    assert table["graph nodes"].sum() == len(loaded.handle.model.graph.node)
    assert table["runtime kernels"].sum() > 0


def test_recommend_prefers_fast_front_variant_not_significantly_worse() -> None:
    df = api.add_flags(pd.DataFrame([_row("base", latency_ms=1.0), _row("fast", bits=8, latency_ms=0.5, top1=0.94,
                                                                        top1_lo=0.92, top1_hi=0.96),
                                     _row("fastest_bad", bits=4, latency_ms=0.3, top1=0.5, top1_lo=0.45,
                                          top1_hi=0.55)]))
    df["target_ms"] = df["latency_ms"]
    df["pareto"] = True
    assert api.recommend(df)["variant_id"] == "fast"
    df.loc[df["variant_id"] == "fast", "simulated"] = True
    assert api.recommend(df)["variant_id"] == "base"  # simulated variants are not recommended


def test_front_2d_keeps_only_non_dominated_points_of_the_view() -> None:
    from optim.present.charts import front_2d

    rows = [dict(target_ms=1.0, metric=90.0), dict(target_ms=2.0, metric=95.0), dict(target_ms=3.0, metric=94.0),
            dict(target_ms=0.5, metric=80.0), dict(target_ms=2.0, metric=93.0)]
    front = front_2d(rows, "target_ms", "metric")
    assert [(r["target_ms"], r["metric"]) for r in front] == [(0.5, 80.0), (1.0, 90.0), (2.0, 95.0)]
    naive = [a for a in rows if not any(b["target_ms"] <= a["target_ms"] and b["metric"] >= a["metric"]
                                        and b != a for b in rows)]
    assert sorted(map(id, naive)) == sorted(map(id, front))


def test_start_sweep_refuses_distillation_on_synthesised_inputs(loaded: api.Loaded) -> None:
    synthetic = api.Loaded(handle=loaded.handle, test=api.synthetic_dataset(loaded.handle, 200), calib=None,
                           origin="upload", label="no data")
    req = api.SweepRequest(ratios=(0.0, 0.5), bits=(32,), distill=True)
    with pytest.raises(OptimError, match="data of your own"):
        api.start_sweep(synthetic, req)
    small = api.Loaded(handle=loaded.handle, test=loaded.test.subset(50), calib=None, origin="upload", label="50")
    with pytest.raises(OptimError, match="at least 96 samples"):
        api.start_sweep(small, req)


@pytest.mark.slow
def test_upload_sweep_with_distillation_evaluates_a_distilled_variant_on_held_out_rows(
        loaded: api.Loaded, store_dir: str) -> None:
    req = api.SweepRequest(ratios=(0.0, 0.5), bits=(32,), prune_kinds=("structured",), distill=True,
                           distill_budget_s=5, distill_seed=4, latency_budget_s=0.02)
    assert loaded.train is None and loaded.origin == "upload"
    split = api.distill_split(loaded, 4)
    assert split.startswith("140 for distillation, 60 held out, seed 4")
    job = api.start_sweep(loaded, req)
    assert job.wait(300), "distillation sweep did not finish"
    assert job.state == "done", job.error
    df = api.variants(job.sweep_id).set_index("variant_key")
    kd = df.loc["structured:0.5:32:all:kd"]
    assert kd["status"] == "ok", kd["error"]
    assert kd["distilled"] == 1 and int(kd["n_eval"]) == 60  # judged on the 60 held-out rows only
    assert '"train_samples": 126' in kd["meta_json"]  # 140 minus the pass's own early-stopping tenth
    assert api.start_sweep(loaded, req).sweep_id == job.sweep_id  # the same seed: the same split, reused


def test_sweep_request_counts_distilled_and_auto_variants() -> None:
    req = api.SweepRequest(ratios=(0.0, 0.25, 0.5), bits=(32, 8), prune_kinds=("structured",), distill=True,
                           auto_bits=True)
    assert req.n_variants == len(api.sweep_config(req).variants()) == (1 + 4) * 2 + 1


def test_roofline_points_stay_under_the_effective_roof_of_their_class(loaded: api.Loaded) -> None:
    from optim.hardware.model.roofline import roof_curve
    from optim.hardware.targets import get_device

    rl = api.roofline_of(loaded, "host")
    assert {"intensity", "effective_gops"} <= set(rl["effective"].columns)
    device = get_device("host")
    points = rl["points"][rl["points"]["intensity"] > 0]
    assert len(points)
    for cls, pts in points.groupby("op_class"):
        roof = roof_curve(device, "fp32", op_class=str(cls))
        limit = np.interp(np.log(pts["intensity"]), np.log(roof["intensity"]), roof["effective_gops"])
        assert (pts["gflops"].to_numpy() <= limit * 1.02).all(), cls
    fig = api.roofline_chart(rl["points"], rl["peak_gflops"], rl["bw_gbs"], rl["device"], rl["effective"])
    assert any("effective roof" in (t.name or "") for t in fig.data)


def test_layer_bars_skip_layers_with_nothing_to_draw() -> None:
    df = pd.DataFrame({"node": ["conv", "fused_relu", "add"], "ms": [0.2, np.nan, 0.0], "base_ms": [0.3, 0.0, 0.1]})
    fig = api.layer_bars(df, {"ms": "variant (measured)", "base_ms": "baseline (measured)"}, "time (ms)", "t")
    assert set(fig.data[0].y) == {"conv", "add"}


def test_api_exports_callables_and_values_not_its_submodules() -> None:
    import types

    assert not [n for n in api.__all__ if isinstance(getattr(api, n), types.ModuleType)]
    assert all(hasattr(api, n) for n in api.__all__)
