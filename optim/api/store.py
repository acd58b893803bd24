"""The results store as the pages reach it: opened once per process per data directory."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from optim import paths
from optim.sweep.store import Store

__all__ = ["data_dir", "open_store"]


def data_dir() -> str:
    """The data directory (``$OPTIM_DATA_DIR`` or ``<repo>/.optim_data``) as a plain string (a cache key)."""
    return str(paths.data_dir())


@lru_cache(maxsize=8)
def _open_store(path: str) -> Any:
    return Store(path)


def open_store(path: str | None = None) -> Any:
    """The results store of ``path`` (default :func:`data_dir`), opened (schema, migrations) once per process."""
    return _open_store(path or data_dir())
