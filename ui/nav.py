"""The page registry and the router: one ``st.Page`` per task, in the order a newcomer walks them."""

from __future__ import annotations

import streamlit as st

from optim import api
from ui import cache, state

PAGES = {  # key → (file, title, icon)
    "home": ("app_pages/home.py", "Home", ":material/home:"),
    "optimize": ("app_pages/optimize.py", "Optimize", ":material/tune:"),
    "pareto": ("app_pages/pareto.py", "Pareto", ":material/scatter_plot:"),
    "layers": ("app_pages/layers.py", "Layers", ":material/layers:"),
    "export": ("app_pages/export.py", "Export", ":material/download:"),
    "learn": ("app_pages/learn.py", "Learn", ":material/school:"),
}
LEGEND = ("**Measured** = run here with ONNX Runtime (1 thread) · **estimated** = hardware model of the "
          "chosen target · **simulated** = precision the runtime cannot execute (fake-quantised weights, "
          "packed size); open markers.")


def page(key: str) -> str:
    """The file of a page, for ``st.page_link`` / ``st.switch_page``."""
    return PAGES[key][0]


def router() -> st.navigation:
    """Build the navigation (sidebar) and return the page to run."""
    pages = [st.Page(f, title=t, icon=i, default=(k == "home")) for k, (f, t, i) in PAGES.items()]
    return st.navigation(pages, position="sidebar")


def sidebar(model_label: str | None) -> None:
    """What is loaded, which sweep, and the legend every page's numbers follow."""
    with st.sidebar:
        st.caption(f"Model: **{model_label or 'none'}**")
        if state.sweep_id():
            st.caption(f"Sweep: `{state.sweep_id()}`")
        if calibrating := api.host_estimate_status():
            st.caption(f"⏳ This machine's {calibrating}")
        st.caption(LEGEND)


def default_model() -> str | None:
    names = [s["name"] for s in cache.samples()]
    name = api.DEMO_SAMPLE if api.DEMO_SAMPLE in names else (names[0] if names else None)
    return f"sample:{name}" if name else None
