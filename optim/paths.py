"""Where the explorer keeps its files: one data directory, shared by every layer.

``$OPTIM_DATA_DIR`` when set, else ``<repo>/.optim_data``. Under it: the results store (``sweep.store``),
uploads (``io.uploads``), per-CPU host profiles and calibration models (``hardware/``).
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    """``$OPTIM_DATA_DIR`` when set, else ``<repo>/.optim_data``."""
    env = os.environ.get("OPTIM_DATA_DIR")
    return Path(env).expanduser() if env else REPO_ROOT / ".optim_data"
