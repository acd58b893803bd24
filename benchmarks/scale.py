"""Scale-out benchmark: variants per minute, local executor vs Ray with 1 and 2 workers, side by side.

Runs the same sweep (``resnet_digits``, a small grid) with each executor in a fresh store, in interleaved
rounds so that load from other processes hits every executor alike; the Ray workers are warmed up first (a
Ray worker's first task imports torch and ONNX Runtime). Then projects throughput for N nodes from the
per-variant times the Ray workers measured:

    per node:  min(cpus / task_s, 1 / quiet_s)      (quiet_s: timing alone on its node, quiet="node")
    cluster:   min(N × per node, 1 / driver_s)      (driver_s: storing one result, the driver's share)

plus the sweep's fixed part (baseline logits on the driver, the longest prune → variant chain). The
projection assumes nodes like this one and a network that moves a model faster than a variant takes.

Usage: .venv/bin/python benchmarks/scale.py [--rounds N] [--ratios 0,0.25,0.5] [--bits 32,16,8]
"""

from __future__ import annotations

import argparse
import os
import statistics
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

CALIB = 256


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(t) for t in text.split(",") if t.strip())


def _sweep(executor, config: SweepConfig, inputs, root: Path, name: str) -> tuple[float, int, Store]:  # noqa: ANN001
    handle, test, calib = inputs
    store = Store(root / name)
    t0 = time.perf_counter()
    sid = run_sweep(handle, test, calib, config, store, executor=executor)
    wall = time.perf_counter() - t0
    df = store.variants(sid)
    assert (df["status"] == "ok").all(), df[df["status"] != "ok"][["label", "error"]].to_string()
    return wall, len(df), store


def _ray(workers: int):  # noqa: ANN202
    from optim.sweep.ray_executor import RayExecutor

    ex = RayExecutor(workers=workers, object_store_mb=300)
    t0 = time.perf_counter()
    ex.start()
    return ex, time.perf_counter() - t0


def _warm(ex, inputs, root: Path, workers: int) -> float:  # noqa: ANN001
    """One tiny sweep per worker so that every Ray worker has imported the engine."""
    t0 = time.perf_counter()
    warm = SweepConfig(ratios=(0.0,), bits=(32, 8, 16, 4)[: max(workers, 1) + 1], eval_limit=50,
                       latency_budget_s=0.01, profile_runs=1)  # fmt: skip
    _sweep(ex, warm, inputs, root, f"warm{workers}")
    return time.perf_counter() - t0


def _driver_s(store: Store) -> float:
    """Seconds the driver spends storing one finished variant (row, layers, artifact), re-put into a scratch store."""
    sid = store.sweeps()["sweep_id"].iloc[0]
    df = store.variants(sid)
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Store(Path(tmp))
        t0 = time.perf_counter()
        for row in df.to_dict("records"):
            data = Path(row["artifact_path"]).read_bytes() + b"x"  # a new artifact file, as for a new variant
            scratch.put_variant({k: v for k, v in row.items() if k != "artifact_path"}, store.layers(row["variant_id"]),
                                data)  # fmt: skip
        return (time.perf_counter() - t0) / len(df)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds per executor (default 2)")
    parser.add_argument("--ratios", default="0,0.25,0.5", help="pruning ratios (default 0,0.25,0.5)")
    parser.add_argument("--bits", default="32,16,8", help="bit-widths (default 32,16,8)")
    parser.add_argument("--nodes", default="1,2,4,8,16,32", help="node counts to project (default 1,2,4,8,16,32)")
    parser.add_argument("--node-cpus", type=int, default=os.cpu_count() or 1, help="CPUs per projected node")
    args = parser.parse_args()
    try:
        import ray  # noqa: F401
    except ImportError:
        print("skipped: ray is not installed (pip install '.[cluster]')")
        return 0
    try:
        names = {s.name for s in list_samples()}
    except OptimError as err:
        print(f"skipped: {err}")
        return 0
    if "resnet_digits" not in names:
        print("skipped: resnet_digits sample not built (make samples)")
        return 0
    handle, test, train = load_sample("resnet_digits")
    inputs = (handle, test, train.subset(CALIB))
    config = SweepConfig(ratios=_floats(args.ratios), bits=tuple(int(b) for b in args.bits.split(",")),
                         prune_kinds=("structured",), eval_limit=500)  # fmt: skip
    n = len(config.variants())
    print(f"machine: {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f}; resnet_digits, {n} variants "
          f"per sweep (ratios {args.ratios} × bits {args.bits}, structured, 500 test images), {args.rounds} round(s)")
    walls: dict[str, list[float]] = {"local": [], "ray-1": [], "ray-2": []}
    stats: list[dict] = []
    last_store = None
    with tempfile.TemporaryDirectory(prefix="optim_scale_") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        _warm(LocalExecutor(1), inputs, root / "local-warm", 1)  # this process imports the passes once
        print(f"  local warm-up {time.perf_counter() - t0:.1f} s (not counted)")
        for rnd in range(args.rounds):
            wall, _, last_store = _sweep(LocalExecutor(1), config, inputs, root, f"local{rnd}")
            walls["local"].append(wall)
            for workers in (1, 2):
                ex, start_s = _ray(workers)
                warm_s = _warm(ex, inputs, root / f"r{rnd}", workers)
                wall, _, _ = _sweep(ex, config, inputs, root, f"ray{workers}-{rnd}")
                walls[f"ray-{workers}"].append(wall)
                if workers == 1:
                    stats += ex.stats
                ex.close()
                print(f"  round {rnd + 1}: Ray with {workers} worker(s): start {start_s:.1f} s, warm-up {warm_s:.1f} s "
                      "(not counted)")
        driver_s = _driver_s(last_store)
    base = statistics.median(walls["local"])
    print(f"\nload average now {os.getloadavg()[0]:.1f} (above {os.cpu_count()} the cores are shared with other work)")
    print("executor              wall s   variants/min   vs local   (median of the rounds)")
    for name, ws in walls.items():
        w = statistics.median(ws)
        print(f"{name:<20} {w:8.1f}   {60 * n / w:12.1f}   {base / w:7.2f}×")
    task_s = statistics.mean(s["task_s"] for s in stats)
    quiet_s = statistics.mean(s["quiet_s"] for s in stats)
    build_s = statistics.mean(s["build_s"] or 0.0 for s in stats)
    print(f"\nper variant (Ray, 1 worker, uncontended): task {task_s:.2f} s (build {build_s:.2f} s, timing alone on "
          f"its node {quiet_s:.2f} s); driver storing a result {1000 * driver_s:.0f} ms")
    per_node = min(args.node_cpus / task_s, 1 / quiet_s)
    bound = "timing (quiet='node')" if 1 / quiet_s < args.node_cpus / task_s else "CPUs"
    print(f"projected, nodes of {args.node_cpus} CPUs like this one (per node bound by {bound}; "
          "quiet='none' lifts the timing bound but timings then share the node):")
    print("nodes   variants/min   28-variant grid s")
    chain = max(s["task_s"] for s in stats) + build_s  # a pruned model, then its slowest variant
    for nodes in (int(x) for x in args.nodes.split(",")):
        rate = min(nodes * per_node, 1 / driver_s)
        print(f"{nodes:5d}   {60 * rate:12.1f}   {chain + 28 / rate:17.1f}")
    print(f"(the driver alone caps it at {60 / driver_s:.0f} variants/min; the fixed part — the longest build→measure "
          f"chain, ~{chain:.1f} s — bounds a small grid however many nodes there are)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
