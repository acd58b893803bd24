"""Shared AppTest helpers: a model saved as an upload, quick stored sweeps, chart decoding, error checks."""

from __future__ import annotations

import base64
import io
import json
import time
from pathlib import Path

import numpy as np
from streamlit.testing.v1 import AppTest

from optim import api

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "app_pages").glob("*.py"))


def app(**query: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=90)
    for k, v in query.items():
        at.query_params[k] = v
    return at


def npz(x: np.ndarray, y: np.ndarray | None = None) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **({"x": x} | ({"y": y} if y is not None else {})))
    return buf.getvalue()


def tiny_ref(tiny_cnn, tiny_images, labelled: bool = True) -> str:
    """The tiny CNN and its images stored as an upload (as the Home page stores one): ``upload:<id>``."""
    x, y = tiny_images
    return api.save_upload(tiny_cnn.model_bytes, "tiny_cnn.onnx", npz(x, y if labelled else None), "tiny.npz")


def with_model(ref: str, **query: str) -> AppTest:
    return app(model=ref, **query)


def clean(at: AppTest) -> None:
    """No exception and no error box on the page (an error box is a failure, not only an exception)."""
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def decode(arr: object) -> np.ndarray:
    if isinstance(arr, dict) and "bdata" in arr:
        return np.frombuffer(base64.b64decode(arr["bdata"]), dtype=np.dtype(arr["dtype"]))
    return np.asarray(arr)


def charts(at: AppTest) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def chart_points(at: AppTest, index: int = 0) -> int:
    spec = charts(at)[index]
    return sum(len(decode(t["customdata"])) for t in spec["data"] if t.get("customdata") is not None)


def wait_for_job(at: AppTest, timeout: float = 120) -> None:
    job = api.get_job(at.session_state["job_id"])
    assert job is not None
    assert job.wait(timeout), "sweep did not finish"
    deadline = time.time() + timeout
    while time.time() < deadline and job.state == "running":
        time.sleep(0.2)
    at.run()


def quick_sweep(ref: str, **kw: object) -> str:
    """Baseline + INT8 of the model ``ref`` names (stored: a second call returns at once)."""
    req = api.SweepRequest(**({"ratios": (0.0,), "bits": (32, 8), "eval_limit": 40, "latency_budget_s": 0.05} | kw))
    job = api.start_sweep(api.open_model(ref), req)
    assert job.wait(120) and job.state == "done", job.error
    return job.sweep_id


def inject(monkeypatch, loaded: api.Loaded) -> str:  # noqa: ANN001 - pytest MonkeyPatch
    """A model reference the app opens as ``loaded`` (for models no upload can produce, e.g. without data)."""
    import uuid

    ref = f"upload:{uuid.uuid4().hex[:24]}"
    real = api.open_model
    monkeypatch.setattr(api, "open_model", lambda r: loaded if r == ref else real(r))
    return ref


def qp(at: AppTest, key: str) -> str | None:
    """A query parameter of the app's URL as one string (AppTest holds a str or a one-item list)."""
    v = at.query_params.get(key)
    return v[0] if isinstance(v, list) else v
