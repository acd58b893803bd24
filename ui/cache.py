"""Every Streamlit cache of the dashboard, each keyed on plain values (strings, numbers, tuples).

Models are named by reference (``sample:<name>`` / ``upload:<id>``), so a cached summary or baseline is
keyed on the reference, never on an object excluded from the key. ``st.cache_resource`` holds what is
shared and never mutated (loaded models, the store); ``st.cache_data`` holds DataFrames and dicts.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from optim import api


@st.cache_resource(show_spinner=False)
def store(data_dir: str) -> Any:
    """The results store of a data directory, opened (schema + migrations) once per process."""
    return api.open_store(data_dir)


def the_store() -> Any:
    return store(api.data_dir())


@st.cache_data(show_spinner=False, ttl=60)
def samples() -> list[dict[str, Any]]:
    return api.list_samples()


@st.cache_resource(show_spinner="Loading the model…", max_entries=8)
def _model(data_dir: str, ref: str) -> api.Loaded:
    return api.open_model(ref)


def model(ref: str) -> api.Loaded:
    """The model a reference names, loaded once per process and data directory (uploads live in the latter)."""
    return _model(api.data_dir(), ref)


def forget_model(ref: str) -> None:
    """Drop a model from the caches (after 'forget this upload')."""
    _model.clear(api.data_dir(), ref)
    summary.clear(ref)


@st.cache_data(show_spinner="Summarising the model…", max_entries=16)
def summary(ref: str) -> dict[str, Any]:
    return api.summarize(model(ref))


@st.cache_data(show_spinner="Measuring the baseline (accuracy and latency)…", max_entries=16)
def baseline(ref: str, eval_limit: int) -> dict[str, Any]:
    return api.baseline(model(ref), eval_limit=eval_limit)


@st.cache_data(show_spinner="Timing one run of the model…", max_entries=16)
def sensitivity_estimate_s(ref: str) -> float:
    return api.sensitivity_estimate_s(model(ref))


@st.cache_data(show_spinner=False, max_entries=64)
def _variants(sweep_id: str, device: str | None, version: tuple[int, str]) -> Any:
    return api.variants(sweep_id, device)


def variants(sweep_id: str, device: str | None = None) -> Any:
    """A sweep's variants, cached until the store says the sweep changed (new rows or status)."""
    return _variants(sweep_id, device, api.sweep_version(sweep_id)).copy()


@st.cache_data(show_spinner=False, ttl=300)
def devices() -> Any:
    return api.list_devices()
