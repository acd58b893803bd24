"""The dashboard's entry point (`make run`): routes to the pages in app_pages/ with st.navigation.

Every run: page config, URL ⇄ session state (model, sweep, variant, Optimize settings), the sidebar,
then the chosen page (a page that changes the model reruns, so the sidebar always names the loaded one). Pages import ``optim.api`` and ``ui`` only.
"""

from __future__ import annotations

import streamlit as st

from ui import nav, state, widgets

page = nav.router()
st.set_page_config(page_title=f"{page.title} · Compression Explorer", page_icon=":material/compress:",
                   layout="wide")
state.sync_url()
widgets.resolve_model()
nav.sidebar(widgets.model_label())
state.note_page(page.title)
page.run()
