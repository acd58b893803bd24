"""Home page (placeholder until the dashboard lands)."""

import streamlit as st

st.title("Model Compression Trade-off Explorer")
