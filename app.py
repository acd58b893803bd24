"""Entry point (`make run` = `streamlit run app.py`): page setup, navigation, then the chosen page.

The pages live in ``pages/``; Home (``pages/0_Home.py``) opens by default on the bundled ResNet sample.
"""

from __future__ import annotations

import streamlit as st

import dashboard as ui

st.set_page_config(page_title="Compression Explorer", page_icon=":material/compress:", layout="wide")
nav = st.navigation([
    st.Page(ui.PAGES["home"], title="Home", icon=":material/home:", default=True),
    st.Page(ui.PAGES["optimize"], title="Optimize", icon=":material/tune:", url_path="optimize"),
    st.Page(ui.PAGES["pareto"], title="Pareto", icon=":material/scatter_plot:", url_path="pareto"),
    st.Page(ui.PAGES["layers"], title="Layers", icon=":material/layers:", url_path="layers"),
    st.Page(ui.PAGES["export"], title="Export", icon=":material/download:", url_path="export"),
    st.Page(ui.PAGES["learn"], title="Learn", icon=":material/school:", url_path="learn"),
])
ui.setup()
nav.run()
