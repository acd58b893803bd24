"""The error guard every page section runs under: a user error shows the engine's advice, a bug shows
a short message and the failing line, never a traceback."""

from __future__ import annotations

import traceback
from collections.abc import Iterator
from contextlib import contextmanager

import streamlit as st

from optim import api


@contextmanager
def guard(what: str = "That") -> Iterator[None]:
    """User errors → st.error with the engine's advice; anything else → short message + details."""
    try:
        yield
    except api.OptimError as err:
        st.error(str(err))
    except Exception as err:  # noqa: BLE001 - the page must never show a raw traceback
        if type(err).__module__.startswith("streamlit."):
            raise  # Streamlit's own control flow (rerun, stop, a fragment that already showed its error)
        st.error(f"{what} failed unexpectedly ({type(err).__name__}). Try again, or report it with the details.")
        with st.expander("Details for a bug report"):
            st.code(where("".join(traceback.format_exception(err))), language="text")


def where(trace: str) -> str:
    """The error line and the innermost frame of a traceback: enough for a report, not a wall of code."""
    lines = [ln for ln in trace.strip().splitlines() if ln.strip()]
    frames = [ln.strip() for ln in lines if ln.strip().startswith("File ")]
    return "\n".join(([f"at {frames[-1]}"] if frames else []) + lines[-1:])
