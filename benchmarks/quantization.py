"""FP32 vs FP16 / INT8 (dynamic, static QDQ & QOperator × U8S8/S8S8/U8U8) / INT4, side by side in one run.

For each bundled sample present (``optim.io.samples.load_sample``; when none is built yet, a small
ResNet-style CNN trained here on scikit-learn's offline digits) it prints: file size / FP32,
batch-1 latency / FP32 (1 thread, ORT_ENABLE_ALL, best median of several interleaved rounds so
background load hits every variant alike), top-1 accuracy on the test split with its 95 % interval,
and top-1 agreement with FP32. If ``nncf`` is importable its ONNX post-training quantization of the
same model (same calibration samples) is measured in the same loop, beside our searched INT8 (mode
``int8_auto``, what sweeps use); the last line is ``nncf: worst ours/NNCF latency R (model), accuracy
equal or better on k/n`` (equal: inside each other's 95 % interval).

Usage: ``.venv/bin/python benchmarks/quantization.py [--samples NAME ...] [--budget 0.4] [--rounds 3]
[--eval-limit N] [--no-nncf]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from optim.handle import ModelHandle  # noqa: E402
from optim.measure import core as measure  # noqa: E402
from optim.passes.base import PassContext  # noqa: E402
from optim.passes.quantize import QuantizeConfig, run, variant_label  # noqa: E402

SAMPLES = ("resnet_digits", "mobilenetv2_digits", "vit_digits", "mlp_tabular")


def variants() -> list[QuantizeConfig]:
    out = [QuantizeConfig(mode="fp16"), QuantizeConfig(mode="int8_dynamic")]
    for fmt in ("qdq", "qoperator"):
        for act, wt in (("uint8", "int8"), ("int8", "int8"), ("uint8", "uint8")):
            out.append(
                QuantizeConfig(quant_format=fmt, activation_type=act, weight_type=wt, reduce_range=False)
            )
    out.append(QuantizeConfig())  # the pass default: QDQ U8S8 reduce_range
    out.append(QuantizeConfig(mode="int8_auto"))  # the configuration search a sweep uses (quant_format auto)
    out.append(QuantizeConfig(mode="int4"))
    out.append(QuantizeConfig(mode="int4", int4_other_layers="fp32"))
    return out


@dataclass
class Row:
    label: str
    handle: ModelHandle | None
    error: str = ""
    latency_ms: float = float("inf")
    top1: float = float("nan")
    lo: float = float("nan")
    hi: float = float("nan")
    agree: float = float("nan")


# ----------------------------------------------------------------------------- models ----------
def fallback_model() -> tuple[ModelHandle, object, object]:
    """No bundled sample yet: train a small residual CNN on sklearn digits (8×8 → 16×16×3), ~20 s."""
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from torch import nn

    from optim.io.data import Dataset
    from optim.io.export import torch_to_onnx

    torch.manual_seed(0)
    d = load_digits()
    x = torch.nn.functional.interpolate(torch.tensor(d.images[:, None] / 16.0, dtype=torch.float32), size=16)
    x = ((x - 0.3) / 0.4).repeat(1, 3, 1, 1).numpy()
    xtr, xte, ytr, yte = train_test_split(x, d.target, test_size=0.3, random_state=0, stratify=d.target)

    def block(c: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU())

    net = nn.Sequential(
        nn.Conv2d(3, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(), block(64),
        nn.Conv2d(64, 128, 3, 2, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(), block(128), block(128),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 10),
    )
    opt = torch.optim.AdamW(net.parameters(), 3e-3)
    xt, yt = torch.tensor(xtr), torch.tensor(ytr)
    for _ in range(6):
        for idx in torch.randperm(len(xt)).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(net(xt[idx]), yt[idx]).backward()
            opt.step()
    proto = torch_to_onnx(net.eval(), [torch.zeros(1, 3, 16, 16)], dynamic_batch=True)
    return (
        ModelHandle(proto, "digits_cnn_fallback"),
        Dataset(xte.astype(np.float32), yte, "test"),
        Dataset(xtr.astype(np.float32), ytr, "train"),
    )


def load_models(names: list[str]) -> list[tuple[ModelHandle, object, object]]:
    try:
        from optim.io.samples import load_sample
    except ImportError:
        load_sample = None
    out = []
    for name in names:
        try:
            out.append(load_sample(name))  # type: ignore[misc]
        except Exception as exc:  # noqa: BLE001 - a missing sample is reported, not fatal
            print(f"[{name}] not available: {type(exc).__name__}: {exc}")
    if not out:
        print("No bundled sample built: using a CNN trained here on sklearn digits.")
        out.append(fallback_model())
    return out


# ------------------------------------------------------------------------------- nncf ----------
def nncf_variant(handle: ModelHandle, calib_x: np.ndarray) -> ModelHandle | str:
    try:
        import nncf
    except ImportError as exc:
        return f"nncf not importable ({exc}); `pip install nncf==3.4.0` (installs beside torch 2.13 unchanged)"
    name = handle.model.graph.input[0].name
    batches = [{name: calib_x[i : i + 1]} for i in range(len(calib_x))]
    try:
        q = nncf.quantize(handle.copy_model(), nncf.Dataset(batches), subset_size=len(batches))
    except Exception as exc:  # noqa: BLE001
        return f"nncf.quantize failed: {type(exc).__name__}: {str(exc)[:200]}"
    return handle.derive(q, "nncf PTQ", bits=8, executable=True, quant_format="qdq (nncf)")


# ---------------------------------------------------------------------------- measuring --------
def build_rows(handle: ModelHandle, calib_x: np.ndarray, use_nncf: bool) -> list[Row]:
    ctx = PassContext(calib=calib_x)
    rows = [Row("FP32", handle)]
    for cfg in variants():
        t0 = time.perf_counter()
        try:
            rows.append(Row(variant_label(cfg), run(handle, cfg, ctx)))
        except Exception as exc:  # noqa: BLE001 - failures are data
            rows.append(Row(variant_label(cfg), None, f"{type(exc).__name__}: {exc}"[:160]))
        print(f"  built {rows[-1].label:34s} {time.perf_counter() - t0:5.1f} s", flush=True)
    if use_nncf:
        q = nncf_variant(handle, calib_x[:300])
        rows.append(Row("NNCF PTQ (QDQ)", q if isinstance(q, ModelHandle) else None, "" if isinstance(q, ModelHandle) else q))
    return rows


def measure_rows(
    rows: list[Row], test, budget: float, rounds: int, limit: int | None, opt_level: str = "all"
) -> None:
    live = [r for r in rows if r.handle is not None]
    for _ in range(rounds):  # interleaved: background load affects all variants alike
        for r in live:
            lat = measure.latency(r.handle, batch=1, threads=1, opt_level=opt_level, budget_s=budget)
            r.latency_ms = min(r.latency_ms, lat.median_ms)
    x, y = (test.x, test.y) if limit is None else (test.x[:limit], test.y[:limit])
    ref = measure.predict(live[0].handle, x, threads=1)
    for r in live:
        logits = ref if r is live[0] else measure.predict(r.handle, x, threads=1)
        acc = measure.accuracy(logits, y)
        r.top1, r.lo, r.hi = acc.top1, acc.top1_lo, acc.top1_hi
        r.agree = float((logits.argmax(1) == ref.argmax(1)).mean())


def report(handle: ModelHandle, rows: list[Row], n_test: int) -> None:
    fp32 = rows[0]
    print(f"\n== {handle.name}: FP32 {handle.size_bytes / 1e6:.2f} MB, {fp32.latency_ms:.3f} ms, n_test={n_test}")
    print(f"{'variant':36s} {'exec':>5s} {'size/FP32':>9s} {'eff/FP32':>8s} {'lat/FP32':>8s} {'ms':>7s} "
          f"{'top-1 % [95% CI]':>22s} {'Δpts':>6s} {'agree':>6s}")
    for r in rows:
        if r.handle is None:
            print(f"{r.label:36s}  FAILED: {r.error}")
            continue
        m = r.handle.meta
        eff = m.get("effective_size_bytes", r.handle.size_bytes)
        print(
            f"{r.label:36s} {'yes' if m.get('executable', True) else 'sim':>5s} "
            f"{r.handle.size_bytes / handle.size_bytes:9.3f} {eff / handle.size_bytes:8.3f} "
            f"{r.latency_ms / fp32.latency_ms:8.2f} {r.latency_ms:7.3f} "
            f"{100 * r.top1:6.2f} [{100 * r.lo:5.1f}, {100 * r.hi:5.1f}] {100 * (r.top1 - fp32.top1):+6.2f} "
            f"{100 * r.agree:6.1f}"
        )
    int8 = [r for r in rows if r.handle is not None and r.label.startswith("INT8 static")]
    nn_row = next((r for r in rows if r.label.startswith("NNCF") and r.handle is not None), None)
    ours = next((r for r in rows if r.label == "INT8 fastest (searched)" and r.handle is not None), None)
    if int8:
        best = min(int8, key=lambda r: r.latency_ms)
        print(f"best INT8 static by latency: {best.label} ({best.latency_ms:.3f} ms)")
    if ours is not None:
        print(f"searched INT8: {ours.handle.meta['int8_search']['chosen']}")
    if ours is not None and nn_row is not None:
        print(f"ours(searched)/NNCF latency: {ours.latency_ms / nn_row.latency_ms:.2f}; "
              f"top-1 ours {100 * ours.top1:.2f} % vs NNCF {100 * nn_row.top1:.2f} %")
        SUMMARY.append((handle.name, ours.latency_ms / nn_row.latency_ms, ours.top1 - nn_row.top1,
                        _same_within_interval(ours, nn_row)))  # fmt: skip


SUMMARY: list[tuple[str, float, float, bool]] = []


def _same_within_interval(a: Row, b: Row) -> bool:
    """Accuracy equal or better: higher, or inside each other's 95 % interval."""
    return a.top1 >= b.top1 or (a.lo <= b.top1 <= a.hi) or (b.lo <= a.top1 <= b.hi)


def prune_and_fuse(handle: ModelHandle, test, budget: float, rounds: int, limit: int | None) -> None:
    """Unstructured sparsity (zip size, no speed-up) and ORT fusion levels on the same model."""
    from optim.passes import optimize_graph, prune_unstructured

    rows = [Row("FP32", handle)]
    for scope in ("layer", "global"):
        for ratio in (0.5, 0.8):
            cfg = prune_unstructured.PruneUnstructuredConfig(ratio=ratio, scope=scope)
            rows.append(Row(f"unstructured {ratio:.0%} {scope}", prune_unstructured.run(handle, cfg)))
    for level in ("basic", "extended", "all"):
        cfg = optimize_graph.OptimizeGraphConfig(level=level)
        rows.append(Row(f"optimize_graph {level}", optimize_graph.run(handle, cfg)))
    measure_rows(rows, test, budget, rounds, limit, opt_level="disable")
    zipped = prune_unstructured.compressed_size(handle.model_bytes)
    print(f"\n== {handle.name}: unstructured pruning and graph optimisation (FP32 zip {zipped / 1e6:.2f} MB)")
    print(f"{'variant':28s} {'sparsity':>8s} {'zip/FP32zip':>11s} {'nodes':>9s} {'lat/FP32':>8s} {'top-1 %':>8s}")
    for r in rows[1:]:
        m = r.handle.meta
        zip_ratio = m["compressed_bytes"] / zipped if "compressed_bytes" in m else float("nan")
        nodes = f"{m['nodes_before']}→{m['nodes_after']}" if "nodes_after" in m else ""
        print(f"{r.label:28s} {m.get('sparsity', 0.0):8.3f} {zip_ratio:11.3f} {nodes:>9s} "
              f"{r.latency_ms / rows[0].latency_ms:8.2f} {100 * r.top1:8.2f}")
    print("(this table's latencies: sessions with ORT optimisation disabled, so the saved graph is what runs)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", nargs="*", default=list(SAMPLES))
    ap.add_argument("--budget", type=float, default=0.4, help="seconds of timing per variant per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--eval-limit", type=int, default=None)
    ap.add_argument("--calib", type=int, default=256)
    ap.add_argument("--no-nncf", action="store_true")
    ap.add_argument("--no-extras", action="store_true", help="skip the unstructured-pruning / fusion table")
    args = ap.parse_args()
    for handle, test, train in load_models(args.samples):
        print(f"[{handle.name}] quantizing ...", flush=True)
        calib_x = np.asarray(train.x[np.random.default_rng(0).permutation(len(train.x))[: args.calib]], np.float32)
        rows = build_rows(handle, calib_x, not args.no_nncf)
        measure_rows(rows, test, args.budget, args.rounds, args.eval_limit)
        report(handle, rows, len(test.x) if args.eval_limit is None else min(args.eval_limit, len(test.x)))
        if not args.no_extras:
            prune_and_fuse(handle, test, args.budget, args.rounds, args.eval_limit)
    if SUMMARY:
        worst = max(SUMMARY, key=lambda t: t[1])
        ok = sum(1 for t in SUMMARY if t[3])
        print("\n" + "; ".join(f"{n} {r:.2f} (Δtop-1 {100 * d:+.2f})" for n, r, d, _ in SUMMARY))
        print(f"nncf: worst ours/NNCF latency {worst[1]:.2f} ({worst[0]}), accuracy equal or better on {ok}/{len(SUMMARY)}")


if __name__ == "__main__":
    main()
