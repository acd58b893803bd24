"""The dashboard's Streamlit layer: navigation, session/URL state, caches, the error guard, shared widgets.

Pages (``app_pages/``) import these modules and ``optim.api`` only; nothing here knows the engine
beyond ``optim.api``.
"""
