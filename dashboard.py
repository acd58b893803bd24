"""UI plumbing shared by app.py and pages/*: page setup, the loaded model, the sweep id, error guard.

Streamlit-side only (imports ``optim.api``, never the engine). Caches sit here, in one place:
``st.cache_resource`` for loaded samples (shared by sessions, never mutated), ``st.cache_data`` for
DataFrames keyed on content hashes. Uploads live in this session's state only, keyed by content hash.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import streamlit as st

from optim import api

PAGES = {
    "home": "app.py",
    "optimize": "pages/1_Optimize.py",
    "pareto": "pages/2_Pareto.py",
    "layers": "pages/3_Layers.py",
    "export": "pages/4_Export.py",
    "learn": "pages/5_Learn.py",
}
LEGEND = ("**Measured** = run here with ONNX Runtime (1 thread) · **estimated** = hardware model of the "
          "chosen target · **simulated** = precision the runtime cannot execute (fake-quantised weights, "
          "packed size); open markers.")


NAV = (("home", "Home", ":material/home:"), ("optimize", "Optimize", ":material/tune:"),
       ("pareto", "Pareto", ":material/scatter_plot:"), ("layers", "Layers", ":material/layers:"),
       ("export", "Export", ":material/download:"), ("learn", "Learn", ":material/school:"))


def setup(title: str) -> None:
    """Page config, sidebar navigation and URL state shared by every page (first call of each page)."""
    st.set_page_config(page_title=f"{title} · Compression Explorer", page_icon=":material/compress:",
                       layout="wide")
    sid = st.query_params.get("sweep")
    if sid and sid != st.session_state.get("sweep_id"):
        st.session_state["sweep_id"] = sid
    elif not sid and st.session_state.get("sweep_id"):
        st.query_params["sweep"] = st.session_state["sweep_id"]  # keep the URL shareable on every page
    with st.sidebar:
        for key, name, icon in NAV:
            st.page_link(PAGES[key], label=name, icon=icon)
        st.divider()
        label = st.session_state.get("model_label") or default_sample()
        st.caption(f"Model: **{label or 'none'}**")
        if st.session_state.get("sweep_id"):
            st.caption(f"Sweep: `{st.session_state['sweep_id']}`")
        st.caption(LEGEND)


@contextmanager
def guard(what: str = "That") -> Iterator[None]:
    """User errors → st.error with the engine's advice; anything else → short message + details."""
    try:
        yield
    except api.OptimError as err:
        st.error(str(err))
    except Exception as err:  # noqa: BLE001 - the page must never show a raw traceback
        if type(err).__module__.startswith("streamlit."):
            raise  # Streamlit's own control flow (e.g. a fragment that already showed its error)
        st.error(f"{what} failed unexpectedly ({type(err).__name__}). Try again, or report it with the details.")
        with st.expander("Details for a bug report"):
            st.code(where("".join(traceback.format_exception(err))), language="text")


def where(trace: str) -> str:
    """The error line and the innermost frame of a traceback: enough for a report, not a wall of code."""
    lines = [ln for ln in trace.strip().splitlines() if ln.strip()]
    frames = [ln.strip() for ln in lines if ln.strip().startswith("File ")]
    return "\n".join(([f"at {frames[-1]}"] if frames else []) + lines[-1:])


@st.cache_resource(show_spinner="Loading the sample model…")
def _sample(name: str) -> api.Loaded:
    return api.load_sample(name)


@st.cache_data(show_spinner=False)
def samples() -> list[dict[str, Any]]:
    return api.list_samples()


def default_sample() -> str | None:
    names = [s["name"] for s in samples()]
    return api.DEMO_SAMPLE if api.DEMO_SAMPLE in names else (names[0] if names else None)


def select_sample(name: str) -> None:
    st.session_state["model_src"] = ("sample", name)
    st.session_state["model_label"] = name


def select_upload(loaded: api.Loaded) -> None:
    uploads = st.session_state.setdefault("uploads", {})
    uploads[loaded.key] = loaded
    st.session_state["model_src"] = ("upload", loaded.key)
    st.session_state["model_label"] = loaded.label


def current_model() -> api.Loaded | None:
    """This session's model: an upload (kept in session state only) or a cached bundled sample."""
    src = st.session_state.get("model_src")
    if src is None:
        name = default_sample()
        if name is None:
            return None
        select_sample(name)
        src = ("sample", name)
    kind, key = src
    if kind == "upload":
        return st.session_state.get("uploads", {}).get(key)
    return _sample(key)


@st.cache_data(show_spinner="Summarising the model…", max_entries=16)
def summary(key: str, _loaded: api.Loaded) -> dict[str, Any]:
    return api.summarize(_loaded)


@st.cache_data(show_spinner="Measuring the baseline (accuracy and latency)…", max_entries=16)
def baseline(key: str, _loaded: api.Loaded) -> dict[str, Any]:
    return api.baseline(_loaded)


@st.cache_data(show_spinner=False, max_entries=64)
def _variants(sweep_id: str, device: str | None, version: tuple[int, str]) -> Any:
    return api.variants(sweep_id, device)


def variants(sweep_id: str, device: str | None = None) -> Any:
    """A sweep's variants, cached until the store says the sweep changed (new rows or status)."""
    return _variants(sweep_id, device, api.sweep_version(sweep_id)).copy()


def set_sweep(sweep_id: str | None) -> None:
    st.session_state["sweep_id"] = sweep_id
    if sweep_id:
        st.query_params["sweep"] = sweep_id


def current_sweep() -> str | None:
    return st.query_params.get("sweep") or st.session_state.get("sweep_id")


def current_job() -> api.SweepJob | None:
    job = api.get_job(st.session_state.get("job_id"))
    return job or api.job_for_sweep(current_sweep())


def start(loaded: api.Loaded, req: api.SweepRequest) -> api.SweepJob:
    job = api.start_sweep(loaded, req)
    st.session_state["job_id"] = job.id
    mine = st.session_state.setdefault("my_sweeps", [])
    if job.sweep_id:
        set_sweep(job.sweep_id)
        mine.append(job.sweep_id)
    return job


def job_panel(job: api.SweepJob, *, running: str, unit: str, cancel: tuple[str, str, str], failed: str,
              cancelled: str, key: str) -> dict[str, Any]:
    """Status of any background job: progress + ETA + cancel while it runs, the outcome after.

    ``running`` heads the status ("Sweep running"), ``unit`` names what is counted, ``cancel`` is
    (button label, help, toast), ``failed``/``cancelled`` are the messages after it ended; returns
    the job's snapshot."""
    s = job.snapshot()
    if s["state"] == "running":
        eta = f" · about {s['eta_s']:.0f} s left" if s["eta_s"] is not None else ""
        with st.status(f"{running}: {s['done']}/{s['total']} {unit}{eta}", expanded=True, state="running"):
            st.progress(min(max(s["fraction"], 0.0), 1.0), text=s["current"] or "starting…")
            if st.button(cancel[0], key=f"{key}_{s['id']}", help=cancel[1]):
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


def progress_panel(job: api.SweepJob) -> None:
    """Progress bar, ETA and a working cancel button for a background sweep (inside a fragment)."""
    s = job.snapshot()
    if s["sweep_id"] and s["sweep_id"] != st.session_state.get("sweep_id"):
        set_sweep(s["sweep_id"])
    job_panel(job, running="Sweep running", unit="variants", key="cancel",
              cancel=("Cancel sweep", "Stops after the current variant", "Cancelling after the current variant…"),
              failed="The sweep stopped",
              cancelled="Sweep cancelled after {done} variants; finished variants are kept.")


def variant_label(df: Any, vid: str) -> str:
    row = df[df["variant_id"] == vid]
    return str(row["label"].iloc[0]) if len(row) and row["label"].iloc[0] else vid
