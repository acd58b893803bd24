"""Where a 4-variant scale sweep spends its time: wall seconds per engine stage, one model, in process.

Runs the same sweep as ``benchmarks/scale_models.py`` (ratios 0/0.5 structured × FP32/INT8 searched) on a model
exported from ``optim.reference`` (or an ONNX file) and wraps the engine's stages — reference outputs,
evaluation, latency, per-layer profile, summary; INT8 pre-processing, calibration ranges, the search's probe,
candidate builds, fidelity checks, race and slow-layer profiles; structured pruning's conversion, channel
removal, recalibration and export — summing each stage's wall seconds (nested stages count inside their parents
too). Wall time on a shared machine includes waiting for the CPU: compare stages within one run.

Usage: ``.venv/bin/python benchmarks/sweep_stages.py resnet50 [--onnx FILE]``.
"""

from __future__ import annotations

import argparse
import collections
import functools
import importlib
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SPENT: collections.defaultdict[str, float] = collections.defaultdict(float)
CALLS: collections.Counter[str] = collections.Counter()
STAGES = [  # (module, attribute, label); methods as "Class.method"
    ("optim.sweep.run", "_reference_logits", "reference outputs"),
    ("optim.measure.model", "evaluate", "measure: evaluate"),
    ("optim.measure.model", "latency", "measure: latency"),
    ("optim.measure.model", "profile_layers", "measure: per-layer profile"),
    ("optim.sweep.run", "_summary_columns", "measure: summary columns"),
    ("optim.passes._quant.auto", "calibrate", "int8: calibrate (pre-process + ranges)"),
    ("optim.passes._quant.int8", "preprocess", "int8:   quant_pre_process"),
    ("optim.passes._quant.int8", "ranges", "int8:   ranges"),
    ("optim.passes._quant.auto", "search", "int8: search"),
    ("optim.passes._quant.search", "Probe.__init__", "int8:   probe FP32 reference"),
    ("optim.passes._quant.search", "build", "int8:   build candidates"),
    ("optim.passes._quant.search", "Probe.fidelity", "int8:   fidelity"),
    ("optim.passes._quant.search", "Probe.race", "int8:   race"),
    ("optim.passes._quant.search", "slow_layers", "int8:   slow-layer profiles"),
    ("optim.passes.prune_structured", "to_torch", "prune: onnx2torch"),
    ("optim.passes.prune_structured", "_prune", "prune: torch-pruning"),
    ("optim.passes.prune_structured", "recalibrate", "prune: recalibrate"),
    ("optim.passes.prune_structured", "export_like", "prune: export"),
]


def _timed(fn: Any, label: str) -> Any:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            SPENT[label] += time.perf_counter() - t0
            CALLS[label] += 1

    return wrapper


def _install() -> None:
    for mod_name, attr, label in STAGES:
        owner: Any = importlib.import_module(mod_name)
        *path, name = attr.split(".")
        for part in path:
            owner = getattr(owner, part)
        setattr(owner, name, _timed(getattr(owner, name), label))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="an optim.reference name (resnet50, bert_base, ...) or resnet_digits")
    ap.add_argument("--onnx", help="the model's ONNX file (default: exported into a temporary directory)")
    ap.add_argument("--eval", type=int, default=64)
    ap.add_argument("--calib", type=int, default=64)
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's optim
    import scale_models  # noqa: PLC0415 - the sibling benchmark: the same sweep and data

    _install()
    with tempfile.TemporaryDirectory(prefix="sweep_stages_") as tmp:
        path = Path(args.onnx) if args.onnx else Path(tmp) / f"{args.model}.onnx"
        if args.model == "resnet_digits" and not args.onnx:
            path = scale_models.ROOT / "sample_models" / "resnet_digits.onnx"
        elif not path.exists():
            scale_models._child_export(args.model, str(path))
        t0 = time.perf_counter()
        scale_models._child_sweep(args.model, str(path), args.eval, args.calib, 1, str(Path(tmp) / "store"))
        total = time.perf_counter() - t0
    print(f"\n{args.model}: {total:.1f} s including load and the INT8/FP32 side timing; "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB")
    for _mod, _attr, label in STAGES:
        if CALLS[label]:
            print(f"  {label:42s} {SPENT[label]:7.1f} s  ({CALLS[label]} call{'s' if CALLS[label] > 1 else ''})")


if __name__ == "__main__":
    main()
