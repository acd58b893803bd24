"""State that lasts and status that tells the truth: the Optimize form, the model, the sweep and the selection
survive page changes and reloads (the URL); uploads are kept by content hash; each page shows the loaded
model's results only; failed variants are counted with their reasons."""

from __future__ import annotations

import bundled
import pytest
from app_helpers import app, charts, clean, qp, quick_sweep, tiny_ref, with_model

from optim import api


@pytest.fixture(autouse=True)
def store_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPTIM_DATA_DIR", str(tmp_path_factory.getbasetemp() / "app_state_store"))


def _set_form(at) -> None:  # noqa: ANN001 - AppTest
    at.radio(key="ratio_mode").set_value("Range (sweep)").run()
    at.multiselect(key="bits").set_value([16, 4])
    at.number_input(key="ratio_steps").set_value(4)
    at.selectbox(key="target").set_value("rpi4")
    at.number_input(key="eval_limit").set_value(100)
    at.run()


def _form(at) -> tuple:  # noqa: ANN001
    return (at.radio(key="ratio_mode").value, at.multiselect(key="bits").value, at.number_input(key="ratio_steps").value,
            at.selectbox(key="target").value, at.number_input(key="eval_limit").value)


def test_optimize_settings_survive_a_page_change_and_a_reload(tiny_cnn, tiny_images) -> None:
    ref = tiny_ref(tiny_cnn, tiny_images)
    at = with_model(ref).run()
    at.switch_page("app_pages/optimize.py").run()
    _set_form(at)
    clean(at)
    want = ("Range (sweep)", [16, 4], 4, "rpi4", 100)
    assert _form(at) == want
    at.switch_page("app_pages/pareto.py").run()
    at.switch_page("app_pages/optimize.py").run()
    assert _form(at) == want  # a page change keeps the form
    url = {k: qp(at, k) for k in at.query_params}
    fresh = app(**url).run()  # a reload (or a shared link): a new session with the same URL
    fresh.switch_page("app_pages/optimize.py").run()
    clean(fresh)
    assert _form(fresh) == want
    assert qp(fresh, "model") == ref


def test_home_baseline_is_measured_on_the_evaluation_size_the_sweep_uses(tiny_cnn, tiny_images) -> None:
    at = with_model(tiny_ref(tiny_cnn, tiny_images), opt="eval_limit.100").run()
    clean(at)
    assert any("on 100 of 200 test samples: the evaluation set sweeps use" in c.value for c in at.caption)


def test_a_model_change_drops_the_previous_models_sweep(tiny_cnn, tiny_images) -> None:
    ref = tiny_ref(tiny_cnn, tiny_images)
    sid = quick_sweep(ref)
    at = with_model(ref, sweep=sid).run()
    at.switch_page("app_pages/optimize.py").run()
    assert any(": 2 ok" in s.value for s in at.success)  # 'Sweep finished' (its job is known) or 'Stored sweep'
    samples = bundled.sample_names()
    at.switch_page("app_pages/home.py").run()
    at.button(key=f"use_{samples[0]}").click().run()
    clean(at)
    assert qp(at, "sweep") is None and qp(at, "model") == f"sample:{samples[0]}"
    at.switch_page("app_pages/optimize.py").run()
    clean(at)
    assert not any(": 2 ok" in s.value for s in at.success)  # not the previous model's results
    at.switch_page("app_pages/pareto.py").run()
    assert any("No sweep for this model yet" in i.value for i in at.info)


def test_a_sweep_of_another_model_is_not_shown_under_the_loaded_model(tiny_cnn, tiny_images) -> None:
    samples = bundled.sample_names()
    sid = quick_sweep(tiny_ref(tiny_cnn, tiny_images))
    at = app(model=f"sample:{samples[0]}", sweep=sid).run()
    at.switch_page("app_pages/pareto.py").run()
    clean(at)
    assert any("was run on" in i.value for i in at.info) and not at.get("plotly_chart")
    at.button(key="adopt_sweep_model").click().run()  # offered: load that sweep's model instead
    clean(at)
    assert qp(at, "model").startswith("upload:") and charts(at)


def test_an_upload_survives_a_reload_and_forget_deletes_it(tiny_cnn) -> None:
    at = app().run()
    at.file_uploader(key="upload_model").set_value(("kept.onnx", tiny_cnn.model_bytes, "application/octet-stream"))
    at.run()
    at.button(key="load_upload").click().run()
    clean(at)
    ref = qp(at, "model")
    entry_id = ref.split(":", 1)[1]
    assert api.upload_library().get(entry_id) is not None
    fresh = app(model=ref).run()  # a reload: the upload comes back from the data dir, not the old session
    clean(fresh)
    assert any("kept.onnx" in s.value for s in fresh.subheader)
    fresh.button(key="forget_upload").click().run()
    clean(fresh)
    assert api.upload_library().get(entry_id) is None
    assert qp(fresh, "model") != ref and any("Forgot kept.onnx" in s.value for s in fresh.success)
    gone = app(model=ref).run()  # the old link now says what happened instead of failing
    assert not gone.exception
    assert any("no longer stored" in w.value for w in gone.warning)


def _stored_sweep(ref: str, rows: list[tuple[str, str, str | None]]) -> str:
    """A sweep written straight into the store for the model ``ref`` names: (label, status, error) rows."""
    loaded = api.open_model(ref)
    store = api.open_store()
    sid = f"fake{abs(hash(tuple(rows))) % 10**12:012d}"
    store.create_sweep(sid, loaded.handle.content_hash, loaded.test.content_hash, None, loaded.label, {}, len(rows))
    for i, (label, status, error) in enumerate(rows):
        ok = status == "ok"
        store.put_variant(dict(variant_id=f"{sid}_{i}", sweep_id=sid, variant_key=label, seq=i, label=label,
                               status=status, error=error, prune_kind="none", prune_ratio=0.0, bits=32 if i == 0 else 8,
                               executable=True, top1=0.5 if ok else None, top1_lo=0.4 if ok else None,
                               top1_hi=0.6 if ok else None, n_eval=100, latency_ms=1.0 if ok else None,
                               size_bytes=1000, effective_size_bytes=1000))
    store.finish_sweep(sid, "done")
    return sid


def test_status_counts_failed_variants_and_gives_their_full_reasons(tiny_cnn, tiny_images) -> None:
    ref = tiny_ref(tiny_cnn, tiny_images)
    reason = "build: INT4 conv is not supported here; " + "details " * 40 + "END"
    sid = _stored_sweep(ref, [("dense · FP32", "ok", None), ("dense · INT4", "failed", reason)])
    at = with_model(ref, sweep=sid).run()
    at.switch_page("app_pages/optimize.py").run()
    assert not at.exception
    assert any("1 ok, 1 failed" in w.value for w in at.warning)
    assert not any("Sweep finished" in s.value for s in at.success)  # no green box over a failure
    assert any(c.value == reason for c in at.code)  # the reason in full, one click away
    at.switch_page("app_pages/pareto.py").run()
    assert any("1 ok, 1 failed" in w.value for w in at.warning) and any(c.value == reason for c in at.code)


def test_a_sweep_with_no_variants_yet_on_a_catalog_target_shows_no_error(tiny_cnn, tiny_images) -> None:
    """The 'Reading results failed unexpectedly (AttributeError … .str accessor …)' box of an upload sweep's
    first seconds: a sweep registered in the store before its first variant, latency on a catalog device."""
    ref = tiny_ref(tiny_cnn, tiny_images)
    loaded = api.open_model(ref)
    api.open_store().create_sweep("starting", loaded.handle.content_hash, loaded.test.content_hash, None,
                                  loaded.label, {}, total=4)
    at = with_model(ref, sweep="starting", opt="target.rpi4").run()
    at.switch_page("app_pages/optimize.py").run()
    clean(at)
    at.switch_page("app_pages/pareto.py").run()
    assert not at.exception and not [e for e in at.error if "unexpectedly" in e.value]


def test_agreement_is_labelled_as_agreement_with_its_own_interval(tiny_cnn, tiny_images) -> None:
    ref = tiny_ref(tiny_cnn, tiny_images, labelled=False)
    sid = quick_sweep(ref)
    at = with_model(ref, sweep=sid).run()
    at.switch_page("app_pages/pareto.py").run()
    clean(at)
    spec = charts(at)[0]
    assert spec["layout"]["yaxis"]["title"]["text"] == "Agreement with baseline (%)"
    assert at.slider(key="min_acc").label == "Min agreement with baseline (%)"
    df = api.variants(sid)
    assert (df["metric_hi"] > df["metric_lo"]).all()  # an interval, not collapsed onto the value
    assert (df["cosine_lo"] <= df["cosine"]).all() and (df["cosine"] <= df["cosine_hi"]).all()  # bootstrap


def test_pages_say_when_this_machines_estimate_is_still_calibrating(tiny_cnn, tiny_images,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api, "host_estimate_status", lambda: "estimate calibrating… 40 % (kernels)")
    at = with_model(tiny_ref(tiny_cnn, tiny_images), opt="target.host").run()
    clean(at)
    assert any("estimate calibrating… 40 %" in c.value for c in at.sidebar.caption)
    at.switch_page("app_pages/optimize.py").run()
    clean(at)
    assert at.selectbox(key="target").value == "host"
    assert any("until it finishes" in c.value for c in at.caption)
    monkeypatch.setattr(api, "host_estimate_status", lambda: None)
    at.run()
    assert not any("calibrating" in c.value for c in [*at.caption, *at.sidebar.caption])


def test_layers_names_agreement_as_agreement_for_unlabelled_data(tiny_cnn, tiny_images) -> None:
    ref = tiny_ref(tiny_cnn, tiny_images, labelled=False)
    sid = quick_sweep(ref)
    at = with_model(ref, sweep=sid).run()
    at.switch_page("app_pages/layers.py").run()
    clean(at)
    labels = [m.label for m in at.metric]
    assert "Agreement with baseline (measured)" in labels and not any("Accuracy" in lb for lb in labels)
