"""Real-size models at real speed: sweep time, peak memory and our INT8 against FP32, side by side.

For models of growing size — the bundled ResNet (digits), a 224² ResNet-18 and ResNet-50 and a
BERT-base-shaped encoder (``optim.reference``, random weights) — each measured in its own child process:

* a 4-variant fidelity sweep (ratios 0/0.5 structured × FP32/INT8, INT8 = the configuration search,
  ``quant_format="auto"``): wall time, and the child's peak RSS (``os.wait4`` rusage of that child) over
  the model's file size and over the issue-14 bound 1 GB + 8 × model;
* ``python -m optim profile MODEL``: wall time and peak RSS the same way;
* our INT8 latency / FP32: the sweep's dense INT8 artifact against the FP32 model, 1 intra-op thread,
  interleaved rounds (every model runs in every round), median of the per-round medians; plus the
  ratio the search's own probe saw and the configuration it chose.

Wall times on a shared machine include waiting for the CPU: each row also prints the child's CPU
seconds (user + system over all its threads), which on an idle machine bound the wall time from above
(evaluation uses 2 threads). The last line is ``scale: worst peak RSS / (1 GB + 8x model) R, ResNet-50 4-variant sweep T s, INT8 slower
than FP32 without a reason K`` — K counts dense INT8 variants measured slower than FP32 here (interleaved)
and pruned INT8 variants whose sweep latency exceeds their FP32 sibling's, whose note does not say why
(the search's note says "slower than FP32" with the reason and what was tried).

Usage: ``.venv/bin/python benchmarks/scale_models.py [--models resnet_digits resnet18 resnet50 bert_base]
[--eval N] [--calib N] [--rounds 5] [--no-profile]``. Models are exported once into a temporary directory
(BERT-base's export takes ~40 s), in a child process so the export's memory is not charged to any row.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("resnet_digits", "resnet18", "resnet50", "bert_base")
GB = 2**30


# ----------------------------------------------------------------------------------- children ----
def _child_export(name: str, path: str) -> None:
    import onnx

    from optim.reference.zoo import zoo_model

    onnx.save_model(zoo_model(name, dynamic_batch=True), path)


def _data(name: str, handle, n_eval: int, n_calib: int):  # noqa: ANN001, ANN202
    import numpy as np

    from optim.io.data import Dataset

    if name == "resnet_digits":
        from optim.io.samples import load_sample

        _h, test, train = load_sample(name)
        return test.subset(n_eval), train.subset(n_calib)
    dims = [d.dim_value for d in handle.model.graph.input[0].type.tensor_type.shape.dim][1:]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n_eval + n_calib, *dims)).astype(np.float32)
    return Dataset(x[:n_eval], None, "random"), Dataset(x[n_eval:], None, "random calib")


def _child_sweep(name: str, path: str, n_eval: int, n_calib: int, rounds: int, store_dir: str) -> None:
    import numpy as np

    from optim.io.load import load
    from optim.measure.timing import latency
    from optim.sweep.run import SweepConfig, run_sweep
    from optim.sweep.store import Store

    handle = load(Path(path), Path(path).name, max_bytes=2 * GB)
    test, calib = _data(name, handle, n_eval, n_calib)
    cfg = SweepConfig(ratios=(0.0, 0.5), bits=(32, 8), prune_kinds=("structured",), latency_budget_s=0.3,
                      profile_runs=5)  # fmt: skip
    store = Store(store_dir)
    t0, c0 = time.perf_counter(), time.process_time()
    sid = run_sweep(handle, test, calib, cfg, store)
    sweep_s, sweep_cpu = time.perf_counter() - t0, time.process_time() - c0
    df = store.variants(sid)
    rows = []
    for r in df.itertuples(index=False):
        meta = json.loads(r.meta_json or "{}")
        rows.append({"label": r.label, "status": r.status, "error": r.error, "latency_ms": r.latency_ms,
                     "bits": int(r.bits), "ratio": float(r.prune_ratio), "notes": r.notes,
                     "agreement": r.agreement, "cosine": r.cosine, "build_s": r.build_s, "measure_s": r.measure_s,
                     "artifact": r.artifact_path, "search": meta.get("int8_search")})  # fmt: skip
    dense8 = next((r for r in rows if r["bits"] == 8 and r["ratio"] == 0 and r["status"] == "ok"), None)
    side = None
    if dense8 is not None:  # interleaved, 1 thread: FP32 file vs the stored INT8 artifact
        fp, q = [], []
        for _ in range(rounds):
            fp.append(latency(Path(path), threads=1, budget_s=0.3, warmup=1, min_runs=3).median_ms)
            q.append(latency(Path(dense8["artifact"]), threads=1, budget_s=0.3, warmup=1, min_runs=3).median_ms)
        side = {"fp32_ms": float(np.median(fp)), "int8_ms": float(np.median(q))}
    for r in rows:
        r.pop("artifact")
    print("RESULT " + json.dumps({"sweep_s": sweep_s, "sweep_cpu_s": sweep_cpu, "rows": rows, "side": side}, default=str), flush=True)


# ------------------------------------------------------------------------------------- parent ----
def _run_child(args: list[str], timeout: float) -> tuple[dict | None, float, float, str]:
    """(RESULT json or None, wall s, peak RSS bytes of that child, tail of its output); the child's CPU
    seconds (user + system, all threads) go into the result as ``cpu_s``."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen([sys.executable, *args], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        try:
            _pid, status, usage = os.wait4(proc.pid, 0)
        except KeyboardInterrupt:
            proc.kill()
            raise
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        out.seek(0)
        text = out.read()
    result = None
    for line in text.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[7:])
    if result is not None:
        result["cpu_s"] = usage.ru_utime + usage.ru_stime
    tail = "\n".join(text.splitlines()[-6:]) if os.waitstatus_to_exitcode(status) else ""
    return result, wall, usage.ru_maxrss * 1024.0, tail


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=list(MODELS))
    ap.add_argument("--eval", type=int, default=64, help="evaluation samples per sweep")
    ap.add_argument("--calib", type=int, default=64, help="calibration samples")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds for INT8 / FP32")
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--child", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "export":
            _child_export(*rest)
        else:
            _child_sweep(rest[0], rest[1], args.eval, args.calib, args.rounds, rest[2])
        return
    me = str(Path(__file__).resolve())
    print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; eval {args.eval}, calib {args.calib}")
    table = []
    with tempfile.TemporaryDirectory(prefix="scale_models_") as tmp:
        for name in args.models:
            path = Path(tmp) / f"{name}.onnx"
            if name == "resnet_digits":
                path = ROOT / "sample_models" / "resnet_digits.onnx"
            else:
                _r, t_exp, _rss, tail = _run_child([me, "--child", "export", name, str(path)], 1800)
                if not path.exists():
                    print(f"[{name}] export failed:\n{tail}")
                    continue
                print(f"[{name}] exported in {t_exp:.0f} s", flush=True)
            size = path.stat().st_size
            res, wall, rss, tail = _run_child([me, "--eval", str(args.eval), "--calib", str(args.calib), "--rounds",
                                               str(args.rounds), "--child", "sweep", name, str(path),
                                               str(Path(tmp) / f"store_{name}")], 3600)  # fmt: skip
            if res is None:
                print(f"[{name}] sweep failed:\n{tail}")
                continue
            prof = None
            if not args.no_profile:
                _pr, p_wall, p_rss, p_tail = _run_child(["-m", "optim", "profile", str(path)], 1800)
                prof = (p_wall, p_rss)
                if p_tail:
                    print(f"[{name}] profile failed:\n{p_tail}")
            table.append((name, size, wall, rss, res, prof))
            _print_model(name, size, res, rss, prof)
    _summary(table)


def _num(v: object) -> bool:
    return isinstance(v, (int, float)) and v == v


def _bound(size: float) -> float:
    return GB + 8 * size


def _print_model(name: str, size: int, res: dict, rss: float, prof: tuple[float, float] | None) -> None:
    print(f"\n== {name}: {size / 1e6:.1f} MB; sweep {res['sweep_s']:.1f} s (its CPU {res['sweep_cpu_s']:.0f} s; child CPU {res['cpu_s']:.0f} s), peak RSS {rss / 1e9:.2f} GB = "
          f"{rss / size:.1f}× model = {rss / _bound(size):.2f} of (1 GB + 8× model)")
    if prof:
        print(f"   profile: {prof[0]:.1f} s, peak RSS {prof[1] / 1e9:.2f} GB = {prof[1] / _bound(size):.2f} of the bound")
    for r in res["rows"]:
        lat = f"{r['latency_ms']:.2f} ms" if r["latency_ms"] else "—"
        agree = f"agree {100 * r['agreement']:.0f} %" if _num(r["agreement"]) else ""
        cos = f"cos {r['cosine']:.4f}" if _num(r["cosine"]) else ""
        spent = f"build {r['build_s'] or 0:.1f} s, measure {r['measure_s'] or 0:.1f} s"
        print(f"   {r['label']:26s} {r['status']:6s} {lat:>11s} {agree:>11s} {cos:>10s}  {spent}  {(r['error'] or '')[:90]}")
    side = res["side"]
    if side:
        print(f"   INT8 / FP32 (interleaved, 1 thread): {side['int8_ms'] / side['fp32_ms']:.2f} "
              f"({side['int8_ms']:.2f} / {side['fp32_ms']:.2f} ms)")
    for r in res["rows"]:
        if r["bits"] == 8 and r["notes"]:
            print(f"   note [{r['label']}]: {r['notes']}")


def _unexplained_pruned(rows: list[dict]) -> int:
    """Pruned INT8 variants whose stored latency exceeds their FP32 sibling's without a note saying so."""
    fp32 = {r["ratio"]: r["latency_ms"] for r in rows if r["bits"] == 32 and r["status"] == "ok"}
    return sum(1 for r in rows if r["bits"] == 8 and r["ratio"] > 0 and r["status"] == "ok"
               and fp32.get(r["ratio"]) and r["latency_ms"] > fp32[r["ratio"]]
               and "slower than FP32" not in (r["notes"] or ""))  # fmt: skip


def _summary(table: list) -> None:  # noqa: ANN001
    print(f"\n{'model':14s} {'MB':>7s} {'sweep s':>8s} {'CPU s':>6s} {'RSS/model':>9s} {'RSS/bound':>9s} {'prof s':>7s} "
          f"{'prof RSS/bound':>14s} {'INT8/FP32':>9s} {'probe':>6s}  chosen")
    worst, r50, unexplained = 0.0, float("nan"), 0
    for name, size, _wall, rss, res, prof in table:
        side = res["side"]
        ratio = side["int8_ms"] / side["fp32_ms"] if side else float("nan")
        dense = next((r for r in res["rows"] if r["bits"] == 8 and r["ratio"] == 0), {})
        search = dense.get("search") or {}
        chosen = search.get("chosen") or "—"
        probe = next((t["vs_fp32"] for t in search.get("tried", []) if t["label"] == chosen), None)
        worst = max(worst, rss / _bound(size), prof[1] / _bound(size) if prof else 0.0)
        if name == "resnet50":
            r50 = res["sweep_s"]
        if side and ratio > 1.0 and "slower than FP32" not in (dense.get("notes") or ""):
            unexplained += 1
        unexplained += _unexplained_pruned(res["rows"])
        print(f"{name:14s} {size / 1e6:7.1f} {res['sweep_s']:8.1f} {res['sweep_cpu_s']:6.0f} {rss / size:9.1f} {rss / _bound(size):9.2f} "
              f"{(prof[0] if prof else float('nan')):7.1f} {(prof[1] / _bound(size) if prof else float('nan')):14.2f} "
              f"{ratio:9.2f} {(probe or float('nan')):6.2f}  {chosen}")
    print(f"(machine load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores: wall times above include "
          "waiting for the CPU; the sweep's CPU seconds do not)")
    print(f"scale: worst peak RSS / (1 GB + 8x model) {worst:.2f}, ResNet-50 4-variant sweep {r50:.1f} s, "
          f"INT8 slower than FP32 without a reason {unexplained}")


if __name__ == "__main__":
    main()
