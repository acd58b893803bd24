"""Which machine measured a variant: every stored row names its node, so latencies are never compared blind.

A latency only means something next to the hardware and runtime that produced it. With one machine that
is implicit; once a sweep runs on a cluster (``optim.sweep.ray_executor``) or is resumed elsewhere, rows
of one sweep can come from different CPUs. Each row therefore records

- ``node``: the host name of the machine that ran the variant,
- ``node_hw``: a short id of what shapes latency — CPU model, its ISA features (the flags ONNX Runtime's
  kernels dispatch on), GPU model if any, ONNX Runtime version and its providers. Two hosts with the same
  ``node_hw`` give comparable latencies; the host name is left out of it on purpose.
- ``node_json``: the full record (also the core count and Python/OS), for the Pareto page and reports.

:func:`hardware_label` turns a row into a short readable name ("Intel Xeon … · ORT 1.31.1").
"""

from __future__ import annotations

import hashlib
import json
import platform
import socket
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd

from optim.hardware.host import KERNEL_FLAGS, cpu_facts

NODE_COLUMNS = ("node", "node_hw", "node_json")

# CPU flags that change which kernels ONNX Runtime / MLAS runs: the one list, in the one CPU probe.
ISA_FLAGS = frozenset(KERNEL_FLAGS)
_GPU_INFO = Path("/proc/driver/nvidia/gpus")


def _gpu_names() -> list[str]:
    """NVIDIA GPU models from the driver's /proc files (no subprocess, no CUDA context)."""
    names = []
    try:
        for info in sorted(_GPU_INFO.glob("*/information")):
            for line in info.read_text().splitlines():
                key, _, val = line.partition(":")
                if key.strip() == "Model":
                    names.append(val.strip())
    except OSError:
        pass
    return names


def _ort() -> tuple[str, list[str]]:
    try:
        import onnxruntime as ort

        return str(ort.__version__), list(ort.get_available_providers())
    except ImportError:  # the record is still useful without it
        return "none", []


@lru_cache(maxsize=1)
def node_identity() -> dict[str, Any]:
    """This machine's identity record (cached per process; a worker process never changes machine)."""
    facts = cpu_facts()
    ort_version, providers = _ort()
    gpus = _gpu_names()
    hw = {
        "cpu_model": str(facts.get("model", "")),
        "cpu_features": sorted(ISA_FLAGS & set(facts.get("flags", ()))),
        "gpu": gpus or None,
        "ort_version": ort_version,
        "ort_providers": providers,
    }
    hw_id = hashlib.sha256(json.dumps(hw, sort_keys=True).encode()).hexdigest()[:12]
    return {"hostname": socket.gethostname(), "hardware_id": hw_id, **hw, "cores": facts.get("cores"),
            "machine": platform.machine(), "system": platform.platform(terse=True),
            "python": platform.python_version()}  # fmt: skip


def node_columns() -> dict[str, str]:
    """The three store columns for a row measured here."""
    ident = node_identity()
    return {"node": ident["hostname"], "node_hw": ident["hardware_id"],
            "node_json": json.dumps(ident, sort_keys=True)}  # fmt: skip


def hardware_label(node_json: Any) -> str:
    """"<CPU model> [+ GPU] · ORT <version>" from a stored ``node_json`` (``"unknown hardware"`` when absent:
    rows stored before nodes were recorded)."""
    try:
        ident = json.loads(node_json) if isinstance(node_json, str) else None
    except ValueError:
        ident = None
    if not isinstance(ident, dict):
        return "unknown hardware"
    gpu = ident.get("gpu")
    head = str(ident.get("cpu_model") or "unknown CPU") + (f" + {', '.join(gpu)}" if gpu else "")
    return f"{head} · ORT {ident.get('ort_version', '?')}"


def hardware_note(df: pd.DataFrame) -> str | None:
    """A warning when the measured latencies of ``df`` (``variants``) come from more than one kind of machine
    (a cluster sweep, or a sweep resumed elsewhere), naming them; None when they all come from one."""
    if "node_hw" not in df.columns:
        return None
    ok = df[(df["status"] == "ok") & (df.get("target_source", "measured") == "measured")]
    kinds = ok.groupby(ok["node_hw"].fillna("unknown"), sort=False)
    if kinds.ngroups <= 1:
        return None
    names = "; ".join(f"{hardware_label(g['node_json'].dropna().iloc[0] if g['node_json'].notna().any() else None)}"
                      f" ({len(g)} variants)" for _, g in kinds)  # fmt: skip
    return (f"Latencies of this sweep were measured on {kinds.ngroups} kinds of machine ({names}). Each has its "
            "own Pareto front (thick rings); compare latencies only between variants of one machine (the "
            "hardware column of the table says which).")
