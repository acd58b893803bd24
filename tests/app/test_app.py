"""AppTest over app.py and every page: no exception and no error box; sweep → Pareto → Layers → Export;
uploads; status; labels. State that lasts (URL, uploads) is in tests/app/test_app_state.py."""

from __future__ import annotations

import time

import bundled
import pytest
from app_helpers import (
    PAGES,
    ROOT,
    app,
    chart_points,
    charts,
    clean,
    inject,
    npz,
    qp,
    quick_sweep,
    tiny_ref,
    wait_for_job,
    with_model,
)

from optim import api


@pytest.fixture(autouse=True)
def store_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPTIM_DATA_DIR", str(tmp_path_factory.getbasetemp() / "app_store"))


def test_home_renders_with_the_demo_button() -> None:
    at = app().run()
    clean(at)
    assert "Model Compression Trade-off Explorer" in at.title[0].value
    assert at.button(key="demo")


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_cleanly_with_the_default_model(page: str) -> None:
    at = app().run()
    at.switch_page(page).run()
    clean(at)


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_cleanly_with_an_uploaded_model(page: str, tiny_cnn, tiny_images) -> None:
    at = with_model(tiny_ref(tiny_cnn, tiny_images)).run()
    at.switch_page(page).run()
    clean(at)


@pytest.mark.parametrize(("name", "data", "expected"), [
    ("model.onnx", b"definitely not onnx", "not a valid ONNX"),
    ("model.pt", b"\x80\x02cos\nsystem\n.", "never unpickle"),
])
def test_bad_upload_shows_its_specific_error_and_is_not_kept(name: str, data: bytes, expected: str) -> None:
    at = app().run()
    at.file_uploader(key="upload_model").set_value((name, data, "application/octet-stream"))
    at.run()
    at.button(key="load_upload").click().run()
    assert not at.exception
    assert any(expected in e.value for e in at.error), [e.value for e in at.error]
    assert not [e for e in api.saved_uploads() if e.model_name == name]


def test_upload_without_data_is_summarised_in_agreement_mode_and_named_in_sidebar(tiny_cnn) -> None:
    at = app().run()
    at.file_uploader(key="upload_model").set_value(("tiny.onnx", tiny_cnn.model_bytes, "application/octet-stream"))
    at.run()
    at.button(key="load_upload").click().run()
    clean(at)
    assert qp(at, "model").startswith("upload:")
    assert any("tiny.onnx" in c.value for c in at.sidebar.caption)  # the sidebar names the upload at once
    assert any(m.label == "Parameters" for m in at.metric)
    assert any(m.label == "Baseline accuracy" and m.value == "n/a" for m in at.metric)
    assert any("Loaded tiny.onnx" in s.value for s in at.success)


def test_upload_with_mismatched_data_shows_shape_error(tiny_cnn) -> None:
    import numpy as np

    at = app().run()
    at.file_uploader(key="upload_model").set_value(("tiny.onnx", tiny_cnn.model_bytes, "application/octet-stream"))
    at.file_uploader(key="upload_data").set_value(
        ("data.npz", npz(np.zeros((8, 3, 20, 20), np.float32), np.zeros(8, np.int64)), "application/octet-stream"))
    at.run()
    at.button(key="load_upload").click().run()
    assert not at.exception
    assert at.error and "16" in at.error[0].value and "20" in at.error[0].value, [e.value for e in at.error]


def test_sample_card_says_loaded_for_the_default_model() -> None:
    at = app().run()
    clean(at)
    bundled.sample_names()
    name = api.DEMO_SAMPLE if any(s["name"] == api.DEMO_SAMPLE for s in api.list_samples()) else \
        api.list_samples()[0]["name"]
    card = at.button(key=f"use_{name}")
    assert card.label == "✓ Loaded" and card.disabled


def test_sweep_flow_reaches_pareto_points_and_layers_table(tiny_cnn, tiny_images) -> None:
    at = with_model(tiny_ref(tiny_cnn, tiny_images)).run()
    at.switch_page("app_pages/optimize.py").run()
    at.multiselect(key="kinds").set_value(["unstructured"])
    at.multiselect(key="bits").set_value([32, 8])
    at.slider(key="ratio_one").set_value(0.5)
    at.number_input(key="eval_limit").set_value(50)
    at.slider(key="lat_budget").set_value(0.1)
    at.run()
    at.button(key="run_sweep").click().run()
    clean(at)
    wait_for_job(at)
    clean(at)
    sid = at.session_state["sweep_id"]
    n_ok = int(api.variants(sid)["status"].eq("ok").sum())
    assert n_ok == 4  # baseline, INT8, unstructured 50 % × (FP32, INT8)
    assert any(f"Sweep finished: {n_ok} ok" in s.value for s in at.success)

    at.switch_page("app_pages/pareto.py").run()
    clean(at)
    assert qp(at, "sweep") == sid  # the URL reopens this sweep after a reload
    assert chart_points(at, 0) == n_ok
    base = api.baseline_row(api.variants(sid))["variant_id"]
    target = [v for v in api.variants(sid)["variant_id"] if v != base][0]
    at.selectbox(key="pick_variant").set_value(target).run()
    assert qp(at, "variant") == target
    at.button(key="open_layers").click().run()
    clean(at)
    assert at.selectbox(key="layers_variant").value == target
    tables = [d.value for d in at.dataframe if {"node", "ms", "base_ms"} <= set(d.value.columns)]
    assert tables and len(tables[0]) > 0 and tables[0]["ms"].notna().any()

    at.switch_page("app_pages/layers.py")  # AppTest reruns the page it was last switched to
    at.selectbox(key="layers_device").set_value("rpi4").run()
    clean(at)
    assert at.selectbox(key="layers_variant").value == target
    tables = [d.value for d in at.dataframe if {"node", "est_ms"} <= set(d.value.columns)]
    assert tables[0]["est_ms"].notna().any()  # estimated per layer on the target
    assert any("Roofline" in c["layout"]["title"]["text"] for c in charts(at))


def test_cancel_button_stops_running_sweep_and_status_says_so(tiny_cnn, tiny_images) -> None:
    at = with_model(tiny_ref(tiny_cnn, tiny_images)).run()
    at.switch_page("app_pages/optimize.py").run()
    at.radio(key="ratio_mode").set_value("Range (sweep)").run()
    at.multiselect(key="kinds").set_value(["unstructured"])
    at.multiselect(key="bits").set_value([32, 16, 8])
    at.number_input(key="ratio_steps").set_value(4)
    at.slider(key="lat_budget").set_value(0.5)
    at.run()
    at.button(key="run_sweep").click().run()
    job = api.get_job(at.session_state["job_id"])
    assert job is not None and job.total >= 10
    status = at.status
    assert status and status[0].state == "running"  # never a success icon while it runs
    deadline = time.time() + 120
    while time.time() < deadline and not len(api.open_store().variants(job.sweep_id)) and job.state == "running":
        time.sleep(0.2)  # cancel once one variant is stored: the resumed run must find it
    at.run()
    cancel = [b for b in at.button if b.key and b.key.startswith("cancel_")]
    assert cancel, "a running sweep shows a cancel button"
    cancel[0].click().run()
    assert job.wait(60)
    assert job.state == "cancelled"
    at.run()
    clean(at)
    assert any("cancelled" in w.value and "resume" in w.value for w in at.warning)
    assert 0 < len(api.variants(job.sweep_id)) < job.total


def test_pareto_reopens_sweep_from_url_query(tiny_cnn, tiny_images) -> None:
    ref = tiny_ref(tiny_cnn, tiny_images)
    sid = quick_sweep(ref)
    at = app(sweep=sid).run()  # an old shared link: the sweep alone, the model found from it
    at.switch_page("app_pages/pareto.py").run()
    clean(at)
    assert qp(at, "model") == ref
    assert chart_points(at, 0) == 2


def test_pareto_warns_when_sweep_in_url_is_unknown() -> None:
    at = app(sweep="no-such-sweep").run()
    at.switch_page("app_pages/pareto.py").run()
    assert not at.exception
    assert any("no stored variants" in w.value for w in at.warning)


@pytest.mark.slow
@pytest.mark.parametrize("sample", ["resnet_digits", "mobilenetv2_digits", "vit_digits", "mlp_tabular"])
def test_model_pages_render_for_every_bundled_sample(sample: str) -> None:
    assert sample in bundled.sample_names()
    at = app().run()
    if at.button(key=f"use_{sample}").disabled:
        at.query_params["model"] = f"sample:{sample}"
    else:
        at.button(key=f"use_{sample}").click()
    at.run()
    clean(at)
    assert at.session_state["model_ref"] == f"sample:{sample}"
    for page in ("app_pages/optimize.py", "app_pages/learn.py"):
        at.switch_page(page).run()
        clean(at)


@pytest.mark.slow
def test_demo_on_resnet_sample_lands_on_pareto_with_points() -> None:

    assert api.DEMO_SAMPLE in bundled.sample_names()
    at = app().run()
    at.button(key="demo").click().run()
    clean(at)
    wait_for_job(at, timeout=180)
    at.switch_page("app_pages/pareto.py").run()
    clean(at)
    assert chart_points(at, 0) >= 5
    at.switch_page("app_pages/optimize.py").run()  # the form shows what the demo ran
    assert at.multiselect(key="bits").value == [32, 8, 4] and at.radio(key="ratio_mode").value == "Range (sweep)"


@pytest.mark.parametrize(("vnni", "expected"), [(True, "This CPU has VNNI"), (False, "This CPU has no VNNI"),
                                                (None, "could not be detected")])
def test_pareto_explains_int8_by_detected_vnni(vnni: bool | None, expected: str, tiny_cnn, tiny_images,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    ref = tiny_ref(tiny_cnn, tiny_images)
    sid = quick_sweep(ref)
    monkeypatch.setattr(api, "cpu_has_vnni", lambda: vnni)
    at = with_model(ref, sweep=sid).run()
    at.switch_page("app_pages/pareto.py").run()
    clean(at)
    notes = [c.value for c in at.caption if "VNNI" in c.value]
    assert len(notes) == 1 and expected in notes[0], notes


def test_streamlit_upload_limit_allows_engine_limit() -> None:
    import tomllib

    conf = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert conf["server"]["maxUploadSize"] >= 500  # model_io.load accepts up to 500 MB


def test_export_shows_selected_variant_numbers_and_builds_offline_report(tiny_cnn, tiny_images) -> None:
    ref = tiny_ref(tiny_cnn, tiny_images)
    sid = quick_sweep(ref)
    at = with_model(ref, sweep=sid).run()
    at.switch_page("app_pages/export.py").run()
    clean(at)
    assert any("ms measured on this CPU" in m.value and "MB" in m.value for m in at.markdown)
    onnx_btn = [b for b in at.get("download_button") if b.label.startswith("Download .onnx")]
    assert onnx_btn and "MB)" in onnx_btn[0].label
    at.button(key="build_report").click().run()
    clean(at)
    sid_, vid, html = at.session_state["report_html"]
    assert sid_ == sid and vid == at.selectbox(key="export_variant").value
    assert "Plotly.newPlot" in html and "<script src=" not in html.replace("'", '"')  # inline: opens offline
    assert any(b.label == "Download report.html" for b in at.get("download_button"))


def test_optimize_states_the_distillation_split_of_uploaded_data(tiny_cnn, tiny_images) -> None:
    at = with_model(tiny_ref(tiny_cnn, tiny_images)).run()
    at.switch_page("app_pages/optimize.py").run()
    clean(at)
    assert not at.toggle(key="distill").disabled
    at.toggle(key="distill").set_value(True).run()
    clean(at)
    assert any(c.value.startswith("Data: 140 for distillation, 60 held out, seed 0") for c in at.caption)
    at.number_input(key="distill_seed").set_value(5).run()
    assert any("60 held out, seed 5" in c.value for c in at.caption)
    no_data = with_model(api.save_upload(tiny_cnn.model_bytes, "tiny_cnn.onnx")).run()
    no_data.switch_page("app_pages/optimize.py").run()
    clean(no_data)
    assert no_data.toggle(key="distill").disabled  # synthesised inputs are no data to distil on
    labels = list(at.multiselect(key="bits").options)
    assert "FP32" in labels and "INT8" in labels  # bit-widths named, not bare numbers


def test_learn_names_precisions_and_counts_symmetric_levels(tiny_cnn, tiny_images) -> None:
    at = with_model(tiny_ref(tiny_cnn, tiny_images)).run()
    at.switch_page("app_pages/learn.py").run()
    clean(at)
    titles = [c["layout"]["title"]["text"] for c in charts(at)]
    assert any("after INT8" in t for t in titles), titles
    at.select_slider(key="learn_bits").set_value(2).run()
    clean(at)
    levels = int(next(m.value for m in at.metric if m.label == "Distinct values").replace(",", ""))
    assert levels <= 3  # −1, 0, +1 times the scale
    assert any("3 at INT2" in m.value for m in at.markdown)  # the text says so too (not 2^bits = 4)
    at.select_slider(key="learn_bits").set_value(16).run()
    assert any("after FP16" in c["layout"]["title"]["text"] for c in charts(at))


def test_pareto_names_the_recommended_variant_next_to_best(tiny_cnn, tiny_images) -> None:
    ref = tiny_ref(tiny_cnn, tiny_images)
    sid = quick_sweep(ref)
    at = with_model(ref, sweep=sid).run()
    at.switch_page("app_pages/pareto.py").run()
    clean(at)
    df = api.variants(sid)
    rec, (_, best) = api.recommend(df), api.apply_constraints(df)
    shown = [c.value for c in at.caption if c.value.startswith("Recommended overall")]
    assert len(shown) == int(rec["variant_id"] != best["variant_id"])
    if shown:
        assert rec["label"] in shown[0]


def test_run_sweep_button_counts_the_baseline_the_engine_adds(tiny_cnn, tiny_images) -> None:
    at = with_model(tiny_ref(tiny_cnn, tiny_images)).run()
    at.switch_page("app_pages/optimize.py").run()
    at.multiselect(key="bits").set_value([8])
    at.slider(key="ratio_one").set_value(0.5)
    at.run()
    clean(at)
    assert "(3 variants)" in at.button(key="run_sweep").label  # FP32 baseline + INT8 + INT8 pruned 50 %


def test_layers_page_explains_model_without_data(tiny_cnn, monkeypatch: pytest.MonkeyPatch) -> None:
    ref = inject(monkeypatch, api.Loaded(handle=tiny_cnn, test=None, calib=None, origin="upload", label="no data"))
    at = with_model(ref).run()
    at.switch_page("app_pages/layers.py").run()
    clean(at)


def test_pareto_chart_is_drawn_the_same_on_the_next_run(tiny_cnn, tiny_images) -> None:
    """The chart's widget identity includes its figure: if the figure drawn on a fresh page changed on the run
    that handles the first click (e.g. the default selection marked only afterwards), that click was lost."""
    ref = tiny_ref(tiny_cnn, tiny_images)
    sid = quick_sweep(ref)
    at = with_model(ref, sweep=sid).run()
    at.switch_page("app_pages/pareto.py").run()
    clean(at)
    first = at.get("plotly_chart")[0].proto
    at.run()
    again = at.get("plotly_chart")[0].proto
    assert first.id == again.id and first.spec == again.spec
    assert at.selectbox(key="pick_variant").value in api.variants(sid)["variant_id"].tolist()


def _upload(model: bytes, data: bytes | None):  # noqa: ANN202
    at = app().run()
    at.file_uploader(key="upload_model").set_value(("scalar.onnx", model, "application/octet-stream"))
    if data is not None:
        at.file_uploader(key="upload_data").set_value(("data.npz", data, "application/octet-stream"))
    at.run()
    at.button(key="load_upload").click().run()
    return at


@pytest.mark.slow
def test_home_states_a_synthesised_scalar_and_takes_it_from_the_npz(tiny_scalar) -> None:
    import io

    import numpy as np

    def npz_of(**arrays: np.ndarray) -> bytes:
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return buf.getvalue()

    x = np.random.default_rng(0).standard_normal((20, 4)).astype(np.float32)
    assert "0-d" in app().run().file_uploader(key="upload_data").label  # the upload says how to set a scalar
    stated = _upload(tiny_scalar.model_bytes, npz_of(x=x))
    clean(stated)
    assert any("'sr' = 16000 (a sample rate)" in c.value for c in stated.caption), [c.value for c in stated.caption]
    given = _upload(tiny_scalar.model_bytes, npz_of(x=x, sr=np.int64(8000)))
    clean(given)
    assert not any("synthesised" in c.value for c in given.caption)
    wrong = _upload(tiny_scalar.model_bytes, npz_of(x=x, sr=np.array([8000, 16000])))
    assert not wrong.exception
    msg = wrong.error[0].value if wrong.error else ""
    assert "'sr'" in msg and "a scalar (shape ())" in msg and "(2,)" in msg, [e.value for e in wrong.error]
