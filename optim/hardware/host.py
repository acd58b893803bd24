"""The one CPU probe of the project: what this machine is, as ONNX Runtime's CPU kernels see it.

Everything that asks "which CPU is this" — the host estimator (peaks, NCHWc block), the per-CPU
calibration cache (:func:`fingerprint`, :func:`host_key`) and the INT8 advice of the quantize pass
(:func:`cpu_has_vnni`) — reads it here, from ``/proc/cpuinfo`` and ``/sys``. Imports nothing else
from :mod:`optim`.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

CPUINFO = Path("/proc/cpuinfo")
MEMINFO = Path("/proc/meminfo")
CACHE_DIR = Path("/sys/devices/system/cpu/cpu0/cache")
# ISA extensions that select different MLAS / ONNX Runtime CPU kernels (x86 and Arm spellings).
KERNEL_FLAGS = ("sse4_1", "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512dq",
                "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16",
                "asimd", "asimddp", "asimdhp", "i8mm", "bf16", "sve", "sve2", "sme")
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
INT8_DOT_FLAGS = (*VNNI_FLAGS, "asimddp")


def parse_cpuinfo(text: str) -> dict[str, Any]:
    """Model name, clock (GHz) and flag set of the first processor listed in a ``/proc/cpuinfo`` text."""
    out: dict[str, Any] = {"model": None, "ghz": None, "flags": None}
    for line in text.splitlines():
        key, _, val = line.partition(":")
        key, val = key.strip(), val.strip()
        if key == "model name" and out["model"] is None:
            out["model"] = val
        elif key == "cpu MHz" and out["ghz"] is None:
            try:
                out["ghz"] = float(val) / 1000
            except ValueError:
                pass
        elif key in ("flags", "Features") and out["flags"] is None:
            out["flags"] = frozenset(val.split())
        if None not in out.values():
            break
    return out


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="ignore")
    except OSError:
        return ""


def _largest_cache_bytes() -> float | None:
    sizes = []
    for idx in CACHE_DIR.glob("index*/size"):
        txt = _read(idx).strip()
        try:
            sizes.append(float(txt.rstrip("KM")) * {"K": 2**10, "M": 2**20}.get(txt[-1:], 1))
        except ValueError:
            continue
    return max(sizes) if sizes else None


def _mem_bytes() -> float | None:
    for line in _read(MEMINFO).splitlines():
        if line.startswith("MemTotal:"):
            return float(line.split()[1]) * 1024
    return None


@lru_cache(maxsize=1)
def cpu_facts() -> dict[str, Any]:
    """Model name, clock (GHz), ISA flags, memory, largest cache and core count of this machine.

    ``flags_known`` is False when ``/proc/cpuinfo`` could not be read (the flags are then empty)."""
    info = parse_cpuinfo(_read(CPUINFO))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return {"model": info["model"] or platform.processor() or platform.machine(), "ghz": info["ghz"] or 2.5,
            "flags": set(info["flags"] or ()), "flags_known": info["flags"] is not None,
            "mem_bytes": _mem_bytes() or 8e9, "cache_bytes": _largest_cache_bytes() or 8 * 2**20, "cores": cores,
            "machine": platform.machine()}


def ort_version() -> str:
    try:
        return metadata.version("onnxruntime")
    except metadata.PackageNotFoundError:
        return "unknown"


def fingerprint(facts: dict[str, Any] | None = None, ort: str | None = None) -> dict[str, Any]:
    """What makes one host profile valid for another machine: CPU model, the kernel-relevant ISA flags,
    core count and the ONNX Runtime version (its kernels change between releases)."""
    f = facts if facts is not None else cpu_facts()
    return {"cpu_model": str(f["model"]), "machine": str(f.get("machine", platform.machine())),
            "isa": sorted(set(f["flags"]) & set(KERNEL_FLAGS)), "cores": int(f["cores"]),
            "onnxruntime": ort if ort is not None else ort_version()}


def host_key(fp: dict[str, Any] | None = None) -> str:
    """Short stable id of a fingerprint: the file name of this CPU's cached profile."""
    blob = json.dumps(fp if fp is not None else fingerprint(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def isa(flags: set[str] | frozenset[str]) -> tuple[int, str]:
    """(FP32 FLOP per cycle per core, ISA label) of the widest vector unit ONNX Runtime uses."""
    if "avx512f" in flags:
        return 64, "AVX-512 (2 FMA units assumed)"
    if "avx2" in flags and "fma" in flags:
        return 32, "AVX2 + FMA"
    if "asimd" in flags:
        return 16, "NEON"
    return 8, "SSE"


def int8_dot_product(flags: set[str] | frozenset[str]) -> bool:
    """Whether the CPU has an 8-bit dot-product instruction (VNNI, AMX-INT8 or Arm SDOT)."""
    return bool(set(INT8_DOT_FLAGS) & set(flags))


def channel_block(flags: set[str] | frozenset[str] | None = None) -> int:
    """ONNX Runtime's NCHWc channel block on this CPU: 16 floats with AVX-512, 8 otherwise."""
    return 16 if "avx512f" in (flags if flags is not None else cpu_facts()["flags"]) else 8


def cpu_has_vnni() -> bool | None:
    """True/False when the CPU flags list (or lack) an x86 8-bit dot-product extension (VNNI / AMX);
    None when the flags cannot be read."""
    facts = cpu_facts()
    if not facts["flags_known"]:
        return None
    return bool(set(VNNI_FLAGS) & facts["flags"])
