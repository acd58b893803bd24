"""Typed session-state keys and the URL that mirrors them.

What a user would lose on a reload lives in the URL too: the loaded model (``model=sample:<name>`` or
``model=upload:<id>``), the sweep (``sweep=``), the selected variant (``variant=``) and the Optimize
settings (``opt=``). :func:`sync_url` runs once per script run, before the page: a URL value that differs
from the session wins (a reload, a shared link), a session value missing from the URL is written back
(a page change clears the query string). Setters below change both at once.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from ui.settings import OptimizeSettings


class Key:
    """Session-state names (one place, so no page misspells one)."""

    MODEL = "model_ref"  # "sample:<name>" | "upload:<id>"
    SWEEP = "sweep_id"
    VARIANT = "selected_variant"
    SETTINGS = "opt_settings"  # OptimizeSettings
    JOB = "job_id"  # this session's last sweep job
    SENS_JOB = "sens_job_id"
    SEEN = "seen_jobs"  # job ids whose end already triggered a full rerun
    REPORT = "report_html"  # (sweep id, variant id, html)
    PAGE = "page_now"  # (previous page, this run's page): tells a page it was just entered


URL = {"model": Key.MODEL, "sweep": Key.SWEEP, "variant": Key.VARIANT}


def _get(name: str, default: Any = None) -> Any:
    return st.session_state.get(name, default)


def sync_url() -> None:
    """URL ⇄ session for the persistent keys (see module doc); call once per run before the page."""
    qp = st.query_params
    for param, key in URL.items():
        value = qp.get(param)
        if value and value != _get(key):
            st.session_state[key] = value
        elif not value and _get(key):
            qp[param] = _get(key)
    opt = qp.get("opt")
    if opt is not None and (_get(Key.SETTINGS) is None or opt != _get(Key.SETTINGS).encode()):
        st.session_state[Key.SETTINGS] = OptimizeSettings.decode(opt)
    elif opt is None and _get(Key.SETTINGS) is not None and _get(Key.SETTINGS).encode():
        qp["opt"] = _get(Key.SETTINGS).encode()


def note_page(title: str) -> None:
    """Record this run's page (app.py, before the page runs)."""
    now = st.session_state.get(Key.PAGE, (None, None))[1]
    st.session_state[Key.PAGE] = (now, title)


def just_entered() -> bool:
    """True on the first run of a page after another page (or a reload), not on its own reruns."""
    prev, now = st.session_state.get(Key.PAGE, (None, None))
    return prev != now


def _put(param: str, key: str, value: str | None) -> None:
    st.session_state[key] = value
    if value:
        st.query_params[param] = value
    elif param in st.query_params:
        del st.query_params[param]


def model_ref() -> str | None:
    return _get(Key.MODEL)


def set_model(ref: str | None) -> None:
    """Switch the model; the sweep, selection, job and report of another model are dropped with it."""
    if ref == model_ref():
        return
    _put("model", Key.MODEL, ref)
    for param, key in (("sweep", Key.SWEEP), ("variant", Key.VARIANT)):
        _put(param, key, None)
    for key in (Key.JOB, Key.REPORT, Key.SENS_JOB):
        st.session_state.pop(key, None)


def sweep_id() -> str | None:
    return _get(Key.SWEEP)


def set_sweep(sid: str | None) -> None:
    if sid != sweep_id():
        _put("variant", Key.VARIANT, None)
    _put("sweep", Key.SWEEP, sid)


def variant_id() -> str | None:
    return _get(Key.VARIANT)


def set_variant(vid: str | None) -> None:
    if vid != variant_id():
        _put("variant", Key.VARIANT, vid)


def settings() -> OptimizeSettings:
    return _get(Key.SETTINGS) or OptimizeSettings()


def set_settings(s: OptimizeSettings) -> None:
    st.session_state[Key.SETTINGS] = s
    text = s.encode()
    if text:
        st.query_params["opt"] = text
    elif "opt" in st.query_params:
        del st.query_params["opt"]


def job_id() -> str | None:
    return _get(Key.JOB)


def set_job(jid: str | None) -> None:
    st.session_state[Key.JOB] = jid


def first_end(job_id_: str) -> bool:
    """True the first time a run sees this job ended (that run reruns the page once to stop polling)."""
    seen = st.session_state.setdefault(Key.SEEN, set())
    if job_id_ in seen:
        return False
    seen.add(job_id_)
    return True
