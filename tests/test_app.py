"""AppTest over app.py and every page: no exception; sweep → Pareto → Layers flow; upload errors."""

from __future__ import annotations

import base64
import io
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from optim import api
from optim.io.data import Dataset

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "pages").glob("*.py"))


@pytest.fixture(autouse=True)
def store_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPTIM_DATA_DIR", str(tmp_path_factory.getbasetemp() / "app_store"))


def _app() -> AppTest:
    return AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)


def _tiny(tiny_cnn, tiny_images) -> api.Loaded:
    x, y = tiny_images
    ds = Dataset(x=x, y=y, name="tiny")
    return api.Loaded(handle=tiny_cnn, test=ds, calib=ds.subset(32), origin="upload", label="tiny_cnn")


def _with_model(loaded: api.Loaded) -> AppTest:
    at = _app()
    at.session_state["uploads"] = {loaded.key: loaded}
    at.session_state["model_src"] = ("upload", loaded.key)
    at.session_state["model_label"] = loaded.label
    return at


def _decode(arr: object) -> np.ndarray:
    if isinstance(arr, dict) and "bdata" in arr:
        return np.frombuffer(base64.b64decode(arr["bdata"]), dtype=np.dtype(arr["dtype"]))
    return np.asarray(arr)


def _chart_points(at: AppTest, index: int = 0) -> int:
    spec = json.loads(at.get("plotly_chart")[index].proto.spec)
    return sum(len(_decode(t["customdata"])) for t in spec["data"] if t.get("customdata") is not None)


def _wait_for_job(at: AppTest, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    job = api.get_job(at.session_state["job_id"])
    assert job is not None
    assert job.wait(timeout), "sweep did not finish"
    while time.time() < deadline and job.state == "running":
        time.sleep(0.2)
    at.run()


def test_home_renders_without_exception() -> None:
    at = _app().run()
    assert not at.exception
    assert "Model Compression Trade-off Explorer" in at.title[0].value
    assert at.button(key="demo")


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_without_exception_when_nothing_loaded(page: str) -> None:
    at = _app().run()
    at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_without_exception_with_uploaded_model(page: str, tiny_cnn, tiny_images) -> None:
    at = _with_model(_tiny(tiny_cnn, tiny_images)).run()
    at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]


@pytest.mark.parametrize(("name", "data", "expected"), [
    ("model.onnx", b"definitely not onnx", "not a valid ONNX"),
    ("model.pt", b"\x80\x02cos\nsystem\n.", "never unpickle"),
])
def test_bad_upload_shows_its_specific_error(name: str, data: bytes, expected: str) -> None:
    at = _app().run()
    at.file_uploader(key="upload_model").set_value((name, data, "application/octet-stream"))
    at.run()
    at.button(key="load_upload").click().run()
    assert not at.exception
    assert any(expected in e.value for e in at.error), [e.value for e in at.error]


def test_upload_model_without_data_is_summarised_in_agreement_mode(tiny_cnn) -> None:
    at = _app().run()
    at.file_uploader(key="upload_model").set_value(("tiny.onnx", tiny_cnn.model_bytes, "application/octet-stream"))
    at.run()
    at.button(key="load_upload").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.session_state["model_label"] == "tiny.onnx"
    assert any(m.label == "Parameters" for m in at.metric)
    assert any(m.label == "Baseline accuracy" and m.value == "n/a" for m in at.metric)


def test_upload_with_mismatched_data_shows_shape_error(tiny_cnn) -> None:
    buf = io.BytesIO()
    np.savez(buf, x=np.zeros((8, 3, 20, 20), np.float32), y=np.zeros(8, np.int64))
    at = _app().run()
    at.file_uploader(key="upload_model").set_value(("tiny.onnx", tiny_cnn.model_bytes, "application/octet-stream"))
    at.file_uploader(key="upload_data").set_value(("data.npz", buf.getvalue(), "application/octet-stream"))
    at.run()
    at.button(key="load_upload").click().run()
    assert not at.exception
    assert at.error and "16" in at.error[0].value and "20" in at.error[0].value, [e.value for e in at.error]


def test_sweep_flow_reaches_pareto_points_and_layers_table(tiny_cnn, tiny_images) -> None:
    at = _with_model(_tiny(tiny_cnn, tiny_images)).run()
    at.switch_page("pages/1_Optimize.py").run()
    at.multiselect(key="kinds").set_value(["unstructured"])
    at.multiselect(key="bits").set_value([32, 8])
    at.slider(key="ratio_one").set_value(0.5)
    at.number_input(key="eval_limit").set_value(50)
    at.slider(key="lat_budget").set_value(0.1)
    at.run()
    at.button(key="run_sweep").click().run()
    assert not at.exception, [e.value for e in at.exception]
    _wait_for_job(at)
    sid = at.session_state["sweep_id"]
    n_ok = int(api.variants(sid)["status"].eq("ok").sum())
    assert n_ok == 4  # baseline, INT8, unstructured 50 % × (FP32, INT8)

    at.switch_page("pages/2_Pareto.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.query_params["sweep"] in (sid, [sid])  # the URL reopens this sweep after a reload
    assert _chart_points(at, 0) == n_ok
    target = [v for v in api.variants(sid)["variant_id"] if v != api.baseline_row(api.variants(sid))["variant_id"]][0]
    at.selectbox(key="pick_variant").set_value(target).run()
    at.button(key="open_layers").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key="layers_variant").value == target
    tables = [d.value for d in at.dataframe if {"node", "ms", "base_ms"} <= set(d.value.columns)]
    assert tables and len(tables[0]) > 0
    assert tables[0]["ms"].notna().any()

    at.switch_page("pages/3_Layers.py")  # AppTest reruns the page it was last switched to
    at.selectbox(key="layers_device").set_value("rpi4").run()
    assert at.selectbox(key="layers_variant").value == target
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    tables = [d.value for d in at.dataframe if {"node", "est_ms"} <= set(d.value.columns)]
    assert tables[0]["est_ms"].notna().any()  # estimated per layer on the target
    assert any("Roofline" in json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart"))


def test_cancel_button_stops_running_sweep(tiny_cnn, tiny_images) -> None:
    at = _with_model(_tiny(tiny_cnn, tiny_images)).run()
    at.switch_page("pages/1_Optimize.py").run()
    at.radio(key="ratio_mode").set_value("Range (sweep)").run()
    at.multiselect(key="kinds").set_value(["unstructured"])
    at.multiselect(key="bits").set_value([32, 16, 8])
    at.number_input(key="ratio_steps").set_value(4)
    at.slider(key="lat_budget").set_value(0.5)
    at.run()
    at.button(key="run_sweep").click().run()
    job = api.get_job(at.session_state["job_id"])
    assert job is not None and job.total >= 10
    cancel = [b for b in at.button if b.key and b.key.startswith("cancel_")]
    assert cancel, "a running sweep shows a cancel button"
    deadline = time.monotonic() + 120  # the sweep runs in a worker process: cancel once a variant is stored
    while job.done < 1 and job.state == "running" and time.monotonic() < deadline:
        time.sleep(0.2)
    cancel[0].click().run()
    assert job.wait(60)
    assert job.state == "cancelled"
    at.run()
    assert any("cancelled" in w.value for w in at.warning)
    assert 0 < len(api.variants(job.sweep_id)) < job.total


def test_pareto_reopens_sweep_from_url_query(tiny_cnn, tiny_images) -> None:
    loaded = _tiny(tiny_cnn, tiny_images)
    job = api.start_sweep(loaded, api.SweepRequest(ratios=(0.0,), bits=(32, 8), eval_limit=40,
                                                    latency_budget_s=0.05))
    assert job.wait(120) and job.state == "done"
    at = _app()
    at.query_params["sweep"] = job.sweep_id
    at.run()
    at.switch_page("pages/2_Pareto.py").run()
    assert not at.exception
    assert _chart_points(at, 0) == 2


def test_pareto_warns_when_sweep_in_url_is_unknown() -> None:
    at = _app()
    at.query_params["sweep"] = "no-such-sweep"
    at.run()
    at.switch_page("pages/2_Pareto.py").run()
    assert not at.exception
    assert any("no stored variants" in w.value for w in at.warning)


@pytest.mark.slow
@pytest.mark.parametrize("sample", ["resnet_digits", "mobilenetv2_digits", "vit_digits", "mlp_tabular"])
def test_model_pages_render_for_every_bundled_sample(sample: str) -> None:
    if not any(s["name"] == sample for s in api.list_samples()):
        pytest.skip(f"sample {sample} not built")
    at = _app().run()
    at.button(key=f"use_{sample}").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.session_state["model_src"] == ("sample", sample)
    for page in ("pages/1_Optimize.py", "pages/5_Learn.py"):
        at.switch_page(page).run()
        assert not at.exception and not at.error, (page, [e.value for e in at.error])


@pytest.mark.slow
def test_demo_on_resnet_sample_lands_on_pareto_with_points() -> None:
    if not any(s["name"] == api.DEMO_SAMPLE for s in api.list_samples()):
        if os.environ.get("CI") == "true":
            pytest.fail("bundled sample resnet_digits missing in CI")
        pytest.skip("bundled samples not built yet")
    at = _app().run()
    at.button(key="demo").click().run()
    assert not at.exception, [e.value for e in at.exception]
    _wait_for_job(at, timeout=180)
    at.switch_page("pages/2_Pareto.py").run()
    assert not at.exception
    assert _chart_points(at, 0) >= 5


def _quick_sweep(tiny_cnn, tiny_images) -> str:
    """Baseline + INT8 on the tiny CNN (stored: a second call returns at once)."""
    job = api.start_sweep(_tiny(tiny_cnn, tiny_images), api.SweepRequest(ratios=(0.0,), bits=(32, 8), eval_limit=40,
                                                                          latency_budget_s=0.05))
    assert job.wait(120) and job.state == "done"
    return job.sweep_id


@pytest.mark.parametrize(("vnni", "expected"), [(True, "This CPU has VNNI"), (False, "This CPU has no VNNI"),
                                                (None, "could not be detected")])
def test_pareto_explains_int8_by_detected_vnni(vnni: bool | None, expected: str, tiny_cnn, tiny_images,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    sid = _quick_sweep(tiny_cnn, tiny_images)
    monkeypatch.setattr(api, "cpu_has_vnni", lambda: vnni)
    at = _app()
    at.query_params["sweep"] = sid
    at.run()
    at.switch_page("pages/2_Pareto.py").run()
    assert not at.exception, [e.value for e in at.exception]
    notes = [c.value for c in at.caption if "VNNI" in c.value]
    assert len(notes) == 1 and expected in notes[0], notes


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


@pytest.mark.parametrize(("values", "decimals"), [([0.07187, 0.17], 3), ([0.0085, 0.0109], 4), ([3.2, 9.9], 2),
                                                  ([12.0, 250.0], 0)])
def test_ms_decimals_keeps_three_significant_digits_of_largest(values: list[float], decimals: int) -> None:
    assert api.ms_decimals(values) == decimals
    assert api.fmt_ms(0.07187) == "0.0719 ms" and api.fmt_ms(172.4) == "172 ms"


def test_streamlit_upload_limit_allows_engine_limit() -> None:
    import tomllib

    conf = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert conf["server"]["maxUploadSize"] >= 500  # model_io.load accepts up to 500 MB


def test_guard_lets_streamlit_control_flow_through() -> None:
    import sys

    from streamlit.errors import FragmentHandledException

    sys.path.insert(0, str(ROOT))
    import dashboard

    with pytest.raises(FragmentHandledException), dashboard.guard("x"):
        raise FragmentHandledException(ValueError("shown by the fragment already"))


def test_export_shows_selected_variant_numbers(tiny_cnn, tiny_images) -> None:
    sid = _quick_sweep(tiny_cnn, tiny_images)
    at = _app()
    at.query_params["sweep"] = sid
    at.run()
    at.switch_page("pages/4_Export.py").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("ms measured on this CPU" in m.value and "MB" in m.value for m in at.markdown)


def test_flags_on_target_says_slowdown_was_measured_here_when_latency_is_estimated() -> None:
    import pandas as pd

    flags = pd.Series(["slower than baseline — x", "slower than baseline — y", ""])
    out = api.flags_on_target(flags, pd.Series([True, False, True]))
    assert out.tolist() == ["slower than baseline on this CPU (measured) — x", "slower than baseline — y", ""]


def test_optimize_disables_distillation_when_upload_has_no_training_split(tiny_cnn, tiny_images) -> None:
    at = _with_model(_tiny(tiny_cnn, tiny_images)).run()
    at.switch_page("pages/1_Optimize.py").run()
    assert not at.exception, [e.value for e in at.exception]
    if api.distill_supported():
        assert at.toggle(key="distill").disabled
    labels = [o for o in at.multiselect(key="bits").options]
    assert "FP32" in labels and "INT8" in labels  # bit-widths named, not bare numbers


def test_learn_names_precisions_in_slider_and_chart(tiny_cnn, tiny_images) -> None:
    at = _with_model(_tiny(tiny_cnn, tiny_images)).run()
    at.switch_page("pages/5_Learn.py").run()
    assert not at.exception, [e.value for e in at.exception]
    titles = [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")]
    assert any("after INT8" in t for t in titles), titles
    at.select_slider(key="learn_bits").set_value(16).run()
    titles = [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")]
    assert any("after FP16" in t for t in titles), titles


def test_guard_shows_short_error_and_location_not_a_traceback() -> None:
    import sys

    sys.path.insert(0, str(ROOT))
    import dashboard

    try:
        {}["missing"]
    except KeyError as err:
        import traceback

        text = dashboard.where("".join(traceback.format_exception(err)))
    assert "Traceback" not in text and text.count("\n") == 1
    assert "test_app.py" in text and text.endswith("KeyError: 'missing'")


def test_export_builds_offline_report_for_selected_variant(tiny_cnn, tiny_images) -> None:
    sid = _quick_sweep(tiny_cnn, tiny_images)
    at = _app()
    at.query_params["sweep"] = sid
    at.run()
    at.switch_page("pages/4_Export.py").run()
    at.button(key="build_report").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    sid_, vid, html = at.session_state["report_html"]
    assert sid_ == sid and vid == at.selectbox(key="export_variant").value
    assert "Plotly.newPlot" in html and "<script src=" not in html.replace("'", '"')  # inline: opens offline
    assert any(b.label == "Download report.html" for b in at.get("download_button"))


def test_pareto_names_the_recommended_variant_next_to_best(tiny_cnn, tiny_images) -> None:
    sid = _quick_sweep(tiny_cnn, tiny_images)
    at = _app()
    at.query_params["sweep"] = sid
    at.run()
    at.switch_page("pages/2_Pareto.py").run()
    assert not at.exception, [e.value for e in at.exception]
    df = api.variants(sid)
    rec, (_, best) = api.recommend(df), api.apply_constraints(df)
    shown = [c.value for c in at.caption if c.value.startswith("Recommended overall")]
    assert len(shown) == int(rec["variant_id"] != best["variant_id"])
    if shown:
        assert rec["label"] in shown[0]


def test_export_offers_onnx_with_its_size_and_csv_without_server_paths(tiny_cnn, tiny_images) -> None:
    sid = _quick_sweep(tiny_cnn, tiny_images)
    at = _app()
    at.query_params["sweep"] = sid
    at.run()
    at.switch_page("pages/4_Export.py").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    onnx_btn = [b for b in at.get("download_button") if b.label.startswith("Download .onnx")]
    assert onnx_btn and "MB)" in onnx_btn[0].label
    csv = api.results_csv(api.variants(sid)).decode()
    assert "artifact_path" not in csv.splitlines()[0] and "latency_ms" in csv.splitlines()[0]


def test_run_sweep_button_counts_the_baseline_the_engine_adds(tiny_cnn, tiny_images) -> None:
    at = _with_model(_tiny(tiny_cnn, tiny_images)).run()
    at.switch_page("pages/1_Optimize.py").run()
    at.multiselect(key="bits").set_value([8])
    at.slider(key="ratio_one").set_value(0.5)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    # FP32 baseline + INT8 unpruned + INT8 pruned 50 %
    assert "(3 variants)" in at.button(key="run_sweep").label
