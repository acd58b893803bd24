"""``python -m optim sweep ... --executor ray`` gives the local run's rows and accuracies, with a node column.

Runs the real CLI in child processes (the Ray one starts its own local instance) on the bundled sample.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("ray")
ROOT = Path(__file__).resolve().parent.parent
SAME = ["label", "status", "top1", "top1_lo", "top1_hi", "top5", "agreement", "cosine", "size_bytes",
        "effective_size_bytes", "params", "macs", "node", "node_hw"]  # fmt: skip


def _sweep(tmp_path: Path, name: str, *extra: str) -> pd.DataFrame:
    csv = tmp_path / f"{name}.csv"
    argv = [sys.executable, "-m", "optim", "sweep", "resnet_digits", "--ratios", "0,0.5", "--bits", "32,8",
            "--kinds", "structured", "--eval-limit", "300", "--budget", "0.05", "--store", str(tmp_path / name),
            "--csv", str(csv), *extra]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("OPTIM_RAY_ADDRESS", None)
    out = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    if extra:
        assert "ran on local Ray instance" in out.stdout
    return pd.read_csv(csv).set_index("variant_key").sort_index()


@pytest.mark.slow
def test_cli_ray_sweep_matches_the_local_sweep_and_names_the_node(tmp_path: Path) -> None:
    local = _sweep(tmp_path, "local")
    remote = _sweep(tmp_path, "ray", "--executor", "ray", "--workers", "2")
    assert list(remote.index) == list(local.index) and len(local) == 4
    pd.testing.assert_frame_equal(remote[SAME], local[SAME])
    assert remote["node"].notna().all() and (remote["status"] == "ok").all()
