"""Widgets more than one page draws: the current model and sweep, "load a model first", the device picker,
job status panels and polling."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st

from optim import api
from ui import cache, nav, state
from ui.guard import where


# --- the current model and sweep -------------------------------------------------------------------
def resolve_model() -> str | None:
    """The model reference of this run: the session's, else the model of the sweep in the URL (an old
    shared link), else the demo sample. Never drops the sweep it was resolved from."""
    ref = state.model_ref()
    if ref:
        return ref
    sid = state.sweep_id()
    ref = (api.model_ref_for_sweep(sid) if sid else None) or nav.default_model()
    if ref:
        st.session_state[state.Key.MODEL] = ref
        st.query_params["model"] = ref
    return ref


def current_model() -> api.Loaded | None:
    """The loaded model (cached per process), or None with a warning when its reference cannot be opened."""
    ref = state.model_ref() or resolve_model()
    if ref is None:
        return None
    try:
        return cache.model(ref)
    except api.OptimError as err:
        st.warning(str(err))
        return None


def model_label() -> str | None:
    """The loaded model's name for the sidebar (the upload's file name, the sample's name)."""
    ref = state.model_ref()
    if ref is None:
        return None
    try:
        return cache.model(ref).label
    except api.OptimError:
        return None


def need_model(why: str = "Load a model on the Home page first.") -> api.Loaded:
    """The loaded model, or a pointer to Home and the end of this page."""
    loaded = current_model()
    if loaded is None:
        st.info(why)
        st.page_link(nav.page("home"), label="Go to Home", icon=":material/home:")
        st.stop()
    return loaded


def current_sweep(loaded: api.Loaded | None) -> str | None:
    """The sweep to show: the session's, if it was run on the loaded model (pages show only its results)."""
    sid = state.sweep_id()
    if not sid:
        return None
    info = api.sweep_info(sid)
    if info is None or loaded is None or info.get("model_hash") == loaded.handle.content_hash:
        return sid
    st.info(f"Sweep `{sid}` was run on **{info.get('model_name')}**, not on the loaded model "
            f"**{loaded.label}**: its results are not shown here.")
    ref = api.model_ref_for_sweep(sid)
    if ref and st.button(f"Load {info.get('model_name')} and show that sweep", key="adopt_sweep_model"):
        st.session_state[state.Key.MODEL] = ref
        st.query_params["model"] = ref
        st.rerun()
    return None


def current_job(sid: str | None) -> api.SweepJob | None:
    """This session's job when it is the sweep's, else whichever job runs that sweep (another tab's)."""
    job = api.get_job(state.job_id())
    if job is not None and sid and job.sweep_id == sid:
        return job
    return api.job_for_sweep(sid)


def start(loaded: api.Loaded, req: api.SweepRequest) -> api.SweepJob:
    job = api.start_sweep(loaded, req)
    state.set_job(job.id)
    if job.sweep_id:
        state.set_sweep(job.sweep_id)
    return job


# --- small shared widgets ------------------------------------------------------------------------
def device_picker(label: str, key: str, default: str | None = None, *, catalog_only: bool = False,
                  help: str | None = None, reset: bool = False) -> str:
    """A target-hardware select box ('This CPU (measured)' first unless ``catalog_only``); ``reset`` shows
    ``default`` again (a form restored from its stored settings)."""
    devices = cache.devices()
    if catalog_only:
        devices = devices[devices["id"] != api.MEASURED_DEVICE]
    names = dict(zip(devices["id"], devices["name"], strict=False))
    ids = list(names)
    if not ids:
        st.info("No hardware catalog available.")
        return api.MEASURED_DEVICE
    if st.session_state.get(key) not in ids or reset:
        st.session_state[key] = default if default in ids else ids[0]
    chosen = st.selectbox(label, ids, format_func=lambda d: names.get(d, d), key=key, help=help)
    if chosen == "host" and (calibrating := api.host_estimate_status()):
        st.caption(f"⏳ {calibrating}: until it finishes, estimates for this machine use the generic CPU model")
    return chosen


def device_name(device_id: str) -> str:
    devices = cache.devices()
    return str(dict(zip(devices["id"], devices["name"], strict=False)).get(device_id, device_id))


def variant_label(df: Any, vid: str) -> str:
    row = df[df["variant_id"] == vid]
    return str(row["label"].iloc[0]) if len(row) and row["label"].iloc[0] else vid


def poll(fn: Callable[[], None], running: bool) -> None:
    """Run ``fn`` as a fragment that reruns every second while a job runs (only it, not the page)."""
    st.fragment(fn, run_every=1.0 if running else None)()


def rerun_once_when_ended(job: api.SweepJob | None) -> None:
    """After a job ends, rerun the whole page once (polling stops, the results below appear)."""
    if job is not None and job.state != "running" and state.first_end(job.id):
        st.rerun()


# --- job status ------------------------------------------------------------------------------------
def sweep_panel(job: api.SweepJob | None, sid: str | None, *, show_done: bool = True) -> dict[str, Any]:
    """A sweep's truthful status: counts from the store, reused results, ETA; failures one click away.

    A running box never shows a success icon (the status element is written without a ``with`` block,
    which would mark it complete)."""
    s = api.sweep_status(sid, job)
    if s["state"] == "running":
        box = st.status(s["headline"], expanded=True, state="running")
        box.progress(min(max(s["fraction"], 0.0), 1.0), text=s["detail"])
        if box.button("Cancel sweep", key=f"cancel_{job.id}", help="Stops after the current variant"):
            job.cancel()
            st.toast("Cancelling after the current variant…")
    elif show_done or s["kind"] != "success":
        getattr(st, {"success": "success", "warning": "warning", "error": "error"}[s["kind"]])(s["headline"])
        if job is not None and job.detail:
            with st.expander("Details for a bug report"):
                st.code(where(job.detail), language="text")
    if s["failed"]:
        with st.expander(f"Why {s['failed']} variant{'s' if s['failed'] != 1 else ''} failed"):
            for _, f in s["failures"].iterrows():
                st.markdown(f"**{f['variant']}**")
                st.code(f["reason"], language="text", wrap_lines=True)
    return s


def job_panel(job: api.SweepJob, *, running: str, unit: str, cancel: tuple[str, str, str], failed: str,
              cancelled: str, key: str) -> dict[str, Any]:
    """Status of any other background job (sensitivity): progress + cancel while it runs, the outcome after.

    ``running`` heads the status, ``unit`` names what is counted, ``cancel`` is (button label, help,
    toast), ``failed``/``cancelled`` are the messages after it ended; returns the job's snapshot."""
    s = job.snapshot()
    if s["state"] == "running":
        eta = api.live_eta(s) or s.get("eta_s")
        left = " · estimating the time left…" if eta is None else f" · about {eta:.0f} s left"
        box = st.status(f"{running}: {s['done']}/{s['total']} {unit}{left}", expanded=True, state="running")
        box.progress(min(max(s["fraction"], 0.0), 1.0), text=s["current"] or "starting…")
        if box.button(cancel[0], key=f"{key}_{s['id']}", help=cancel[1]):
            job.cancel()
            st.toast(cancel[2])
    elif s["state"] == "failed":
        st.error(f"{failed}: {s['error']}")
        if s.get("detail"):
            with st.expander("Details for a bug report"):
                st.code(where(s["detail"]), language="text")
    elif s["state"] == "cancelled":
        st.warning(cancelled.format(done=s["done"]))
    return s
