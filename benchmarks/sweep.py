"""Sweep benchmark: default grid on the bundled ResNet, re-open time, INT8 size and accuracy ratios.

Prints, from one run on this machine:
  - wall time of the default grid (ratios 0/.25/.5/.75 × bits 32/16/8/4 × structured/unstructured,
    28 variants) on ``resnet_digits`` against the 60 s target, and seconds per variant;
  - time to return the same sweep again from the store (target ≤ 2 s) and to read its table;
  - INT8 static size / FP32 size, and the INT8 static top-1 drop per bundled CNN.

Usage: .venv/bin/python benchmarks/sweep.py [--store DIR] [--workers N]
A fresh temporary store is used unless --store is given (then a second run shows the re-open path).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from optim.errors import OptimError  # noqa: E402
from optim.io.samples import list_samples, load_sample  # noqa: E402
from optim.sweep.executors import LocalExecutor  # noqa: E402
from optim.sweep.run import SweepConfig, run_sweep  # noqa: E402
from optim.sweep.store import Store  # noqa: E402

TARGET_GRID_S = 60.0
TARGET_REOPEN_S = 2.0
CALIB = 256


def _cpu_s() -> float:
    """User + system CPU seconds of this process, all its threads (ORT and torch pools included)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _row(df, key: str):  # noqa: ANN001, ANN202
    rows = df[df["variant_key"] == key]
    return rows.iloc[0] if len(rows) else None


def bench_grid(store: Store, workers: int) -> None:
    handle, test, train = load_sample("resnet_digits")
    calib = train.subset(CALIB)
    config = SweepConfig()
    n = len(config.variants())
    print(f"machine: {os.cpu_count()} CPU cores; ResNet sample {handle.size_bytes / 1e6:.2f} MB, "
          f"{len(test)} test images; grid {n} variants; build workers {workers}")  # fmt: skip
    load0, cpu0, t0 = os.getloadavg()[0], _cpu_s(), time.perf_counter()
    sid = run_sweep(handle, test, calib, config, store, executor=LocalExecutor(workers))
    grid_s, cpu_s = time.perf_counter() - t0, _cpu_s() - cpu0
    df = store.variants(sid)
    n_failed = int((df["status"] == "failed").sum())
    print(f"default grid: {grid_s:.1f} s for {len(df)} variants ({n_failed} failed) = "
          f"{grid_s / len(df):.2f} s/variant; {grid_s / TARGET_GRID_S:.2f} × the {TARGET_GRID_S:.0f} s target")  # fmt: skip
    print(f"  CPU time of this process {cpu_s:.1f} s ({cpu_s / grid_s:.2f} cores busy on average); load average "
          f"{load0:.1f} → {os.getloadavg()[0]:.1f} (other processes share these cores: wall time is inflated when "
          f"it is above the core count)")  # fmt: skip
    print(f"  time split: build {df['build_s'].sum():.1f} s, measure {df['measure_s'].sum():.1f} s (summed per variant)")
    for r in df[df["status"] == "failed"].itertuples(index=False):
        print(f"  failed: {r.label}: {r.error[:160]}")
    t0 = time.perf_counter()
    again = run_sweep(handle, test, calib, config, Store(store.path))
    reopen_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    table = Store(store.path).variants(again)
    read_s = time.perf_counter() - t0
    assert again == sid and len(table) == len(df)
    print(f"re-open: run_sweep again {reopen_s:.2f} s (incl. hashing the model and data), table read "
          f"{1000 * read_s:.0f} ms; {reopen_s / TARGET_REOPEN_S:.2f} × the {TARGET_REOPEN_S:.0f} s target")  # fmt: skip
    cli_s = _cli_reopen_s(store.path)
    print(f"re-open from the command line (new process: imports, sample load, hashing, lookup): {cli_s:.2f} s")
    fp32, int8 = _row(df, "none:0:32:all"), _row(df, "none:0:8:all")
    if fp32 is not None and int8 is not None and int8["status"] == "ok":
        print(f"INT8 static size / FP32 size (resnet_digits): {int8['size_bytes'] / fp32['size_bytes']:.3f} "
              f"({int8['size_bytes'] / 1e6:.2f} / {fp32['size_bytes'] / 1e6:.2f} MB); latency ratio "
              f"{int8['latency_ms'] / fp32['latency_ms']:.2f}")  # fmt: skip


def _cli_reopen_s(store_dir: Path) -> float:
    """Wall time of ``python -m optim sweep resnet_digits`` on a store that already holds the sweep."""
    root = Path(__file__).resolve().parent.parent
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "optim", "sweep", "resnet_digits", "--store", str(store_dir)],
                   cwd=root, check=True, capture_output=True)  # fmt: skip
    return time.perf_counter() - t0


def bench_int8_drop(store: Store) -> None:
    config = SweepConfig(ratios=(0.0,), bits=(32, 8), prune_kinds=("structured",))
    for info in list_samples():
        if info.task != "classification" or info.arch.lower().startswith(("mlp", "vit")):
            continue
        handle, test, train = load_sample(info.name)
        df = store.variants(run_sweep(handle, test, train.subset(CALIB), config, store))
        fp32, int8 = _row(df, "none:0:32:all"), _row(df, "none:0:8:all")
        if int8 is None or int8["status"] != "ok":
            print(f"INT8 static on {info.name}: failed ({None if int8 is None else int8['error']})")
            continue
        drop = 100 * (fp32["top1"] - int8["top1"])
        print(f"INT8 static top-1 drop on {info.name}: {drop:+.2f} points ({100 * fp32['top1']:.2f} % → "
              f"{100 * int8['top1']:.2f} %, n={int(fp32['n_eval'])}, FP32 95 % interval "
              f"[{100 * fp32['top1_lo']:.1f}, {100 * fp32['top1_hi']:.1f}]); agreement with FP32 "
              f"{100 * int8['agreement']:.2f} %; size ratio {int8['size_bytes'] / fp32['size_bytes']:.3f}")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, help="store directory (default: a fresh temporary one)")
    parser.add_argument("--workers", type=int, default=1, help="build threads (default 1)")
    args = parser.parse_args()
    try:
        names = {s.name for s in list_samples()}
    except OptimError as err:
        print(f"skipped: {err}")
        return 0
    if "resnet_digits" not in names:
        print("skipped: resnet_digits sample not built (make samples)")
        return 0
    with tempfile.TemporaryDirectory(prefix="optim_bench_") as tmp:
        store = Store(args.store or Path(tmp))
        bench_grid(store, args.workers)
        bench_int8_drop(store)
    return 0


if __name__ == "__main__":
    sys.exit(main())
