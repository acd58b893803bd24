"""The ui/ package's plain parts: settings in the URL, the error guard; and the uploads folder behind it."""

from __future__ import annotations

import sys
import time
import traceback
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from optim import api  # noqa: E402
from optim.errors import FileTooLargeError, OptimError  # noqa: E402
from optim.io.uploads import UploadLibrary  # noqa: E402
from ui import guard  # noqa: E402
from ui.settings import DEMO, OptimizeSettings  # noqa: E402


def test_settings_round_trip_through_the_url_value() -> None:
    s = OptimizeSettings(ratio_mode="range", ratio_lo=0.1, ratio_hi=0.7, steps=4, kinds=("unstructured", "auto"),
                         bits=(16, 4), target="rpi4", auto_bits=True, eval_limit=150, lat_budget=0.5)
    assert OptimizeSettings.decode(s.encode()) == s
    assert OptimizeSettings().encode() == ""  # the defaults leave the URL alone


def test_settings_decode_ignores_broken_parts_of_a_hand_edited_link() -> None:
    s = OptimizeSettings.decode("steps.99~bits.8_7_x~nonsense~ratio_one.abc~kinds.auto_rm")
    assert s.steps == 8 and s.bits == OptimizeSettings().bits and s.ratio_one == 0.3 and s.kinds == ("auto",)


def test_demo_settings_ask_for_the_engine_demo_sweep() -> None:
    req, demo = DEMO.request(), api.demo_request()
    assert (req.ratios, req.bits, req.prune_kinds, req.eval_limit) == (demo.ratios, demo.bits, demo.prune_kinds,
                                                                       demo.eval_limit)


def test_guard_lets_streamlit_control_flow_through() -> None:
    from streamlit.errors import FragmentHandledException

    with pytest.raises(FragmentHandledException), guard.guard("x"):
        raise FragmentHandledException(ValueError("shown by the fragment already"))


def test_guard_where_shows_short_error_and_location_not_a_traceback() -> None:
    try:
        {}["missing"]
    except KeyError as err:
        text = guard.where("".join(traceback.format_exception(err)))
    assert "Traceback" not in text and text.count("\n") == 1
    assert "test_ui.py" in text and text.endswith("KeyError: 'missing'")


def test_upload_library_keeps_uploads_by_content_and_forgets_on_request(tmp_path: Path) -> None:
    lib = UploadLibrary(tmp_path, quota=10_000)
    a = lib.put(b"model-a", "a.onnx", b"data", "d.npz", "input=1,3")
    assert lib.put(b"model-a", "renamed.onnx", b"data", "d.npz", "input=1,3").id == a.id  # same bytes: one entry
    entry, model, data = lib.read(a.id)
    assert (entry.model_name, model, data, entry.shapes) == ("a.onnx", b"model-a", b"data", "input=1,3")
    assert lib.put(b"model-a", "a.onnx").id != a.id  # without the data it is another upload
    assert lib.forget(a.id) and lib.get(a.id) is None
    with pytest.raises(OptimError, match="upload the model again"):
        lib.read(a.id)


def test_upload_library_drops_least_recently_used_to_stay_within_quota(tmp_path: Path) -> None:
    lib = UploadLibrary(tmp_path, quota=2_500)
    old = lib.put(b"o" * 1000, "old.onnx")
    time.sleep(0.02)
    used = lib.put(b"u" * 1000, "used.onnx")
    time.sleep(0.02)
    lib.get(old.id)  # opened again: now the most recent
    lib.put(b"n" * 1000, "new.onnx")
    assert {e.model_name for e in lib.entries()} == {"old.onnx", "new.onnx"} and lib.get(used.id) is None
    assert lib.usage() <= 2_500
    with pytest.raises(FileTooLargeError, match="OPTIM_UPLOAD_QUOTA_MB"):
        lib.put(b"x" * 3000, "huge.onnx")


def test_upload_library_refuses_ids_that_are_not_hashes(tmp_path: Path) -> None:
    with pytest.raises(OptimError):
        UploadLibrary(tmp_path).read("../../etc")
