"""Structured pruning: params / MACs / batch-1 latency ratios side by side, and what recalibration buys.

For the bundled ResNet (``resnet_digits``; ``OPTIM_SAMPLES_DIR`` may point at a freshly built copy)
and the zoo ResNet-50 graph (random weights, 224×224) it prints, at each ratio, parameters / MACs /
batch-1 latency relative to the unpruned model (1 thread, ORT_ENABLE_ALL, best median of interleaved
rounds so background load hits every variant alike) and the *latency efficiency*
``(1 − latency ratio) / (1 − MACs ratio)``: 1.0 means every MAC removed is time saved. For the
trained ResNet it also prints top-1 accuracy (95 % interval) and agreement with the unpruned model
without and with per-channel recalibration (and with ``round_to=8``); for the ViT sample, MLP-only
pruning vs MLP + attention heads.

Usage: ``.venv/bin/python benchmarks/pruning.py [--ratios 0.3 0.5] [--budget 1.0] [--rounds 3]
[--no-resnet50]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from optim import measure  # noqa: E402
from optim.graph.summary import summarize  # noqa: E402
from optim.handle import ModelHandle  # noqa: E402
from optim.passes.base import PassContext  # noqa: E402
from optim.passes.prune_structured import StructuredPruneConfig, run  # noqa: E402


def best_latency(handles: list[ModelHandle], budget: float, rounds: int) -> list[float]:
    """Best median batch-1 latency (ms) per handle over ``rounds`` interleaved rounds."""
    best = [float("inf")] * len(handles)
    for _ in range(rounds):
        for i, h in enumerate(handles):
            best[i] = min(best[i], measure.latency(h, batch=1, threads=1, budget_s=budget).median_ms)
    return best


def size_row(base: ModelHandle, variant: ModelHandle, lat0: float, lat: float) -> dict[str, float]:
    s0, s = summarize(base), summarize(variant)
    macs_r, lat_r = s.macs / s0.macs, lat / lat0
    return {"params": s.params / s0.params, "macs": macs_r, "latency": lat_r, "lat_ms": lat,
            "efficiency": (1 - lat_r) / (1 - macs_r) if macs_r < 1 else float("nan")}


def fmt(name: str, row: dict[str, float], extra: str = "") -> str:
    return (f"{name:<34} params {row['params']:.3f}  MACs {row['macs']:.3f}  latency {row['latency']:.3f} "
            f"({row['lat_ms']:.2f} ms)  efficiency {row['efficiency']:.2f}  {extra}")


def bundled_resnet(ratios: list[float], budget: float, rounds: int) -> None:
    try:
        from optim.io.samples import load_sample

        handle, test, train = load_sample("resnet_digits")
    except Exception as exc:  # noqa: BLE001 - artifacts may not be built
        print(f"resnet_digits unavailable ({exc}); skipped")
        return
    ctx = PassContext(calib=train)
    ref = measure.predict(handle, test.x)
    acc0 = measure.accuracy(ref, test.y)
    variants: list[tuple[str, ModelHandle]] = []
    for r in ratios:
        for recal, round_to in ((False, 1), (True, 1), (True, 8)):
            cfg = StructuredPruneConfig(ratio=r, recalibrate=recal, round_to=round_to)
            variants.append((f"ratio {r} recal={recal} round_to={round_to}", run(handle, cfg, ctx)))
    lats = best_latency([handle] + [v for _, v in variants], budget, rounds)
    print(f"\nresnet_digits: fp32 top-1 {acc0.top1:.4f} [{acc0.top1_lo:.4f}, {acc0.top1_hi:.4f}] "
          f"(n={acc0.n}), batch-1 latency {lats[0]:.2f} ms")
    for (name, v), lat in zip(variants, lats[1:], strict=True):
        logits = measure.predict(v, test.x)
        acc = measure.accuracy(logits, test.y)
        agree = measure.fidelity(ref, logits).top1_agreement
        extra = f"top-1 {acc.top1:.4f} [{acc.top1_lo:.4f}, {acc.top1_hi:.4f}]  agreement {agree:.4f}"
        print(fmt(name, size_row(handle, v, lats[0], lat), extra))


def bundled_vit(ratios: list[float], budget: float, rounds: int) -> None:
    try:
        from optim.io.samples import load_sample

        handle, test, train = load_sample("vit_digits")
    except Exception as exc:  # noqa: BLE001 - artifacts may not be built
        print(f"vit_digits unavailable ({exc}); skipped")
        return
    ctx = PassContext(calib=train)
    ref = measure.predict(handle, test.x)
    acc0 = measure.accuracy(ref, test.y)
    variants = [(f"ratio {r} heads={h}", run(handle, StructuredPruneConfig(ratio=r, prune_heads=h), ctx))
                for r in ratios for h in (False, True)]
    lats = best_latency([handle] + [v for _, v in variants], budget, rounds)
    print(f"\nvit_digits: fp32 top-1 {acc0.top1:.4f} (n={acc0.n}), batch-1 latency {lats[0]:.2f} ms")
    for (name, v), lat in zip(variants, lats[1:], strict=True):
        acc = measure.accuracy(measure.predict(v, test.x), test.y)
        heads = v.meta["structured_pruning"].get("heads_removed", 0)
        print(fmt(name, size_row(handle, v, lats[0], lat), f"top-1 {acc.top1:.4f}  heads removed {heads}"))


def zoo_resnet50(ratio: float, budget: float, rounds: int) -> None:
    from optim.reference.zoo import zoo_model

    handle = ModelHandle(zoo_model("resnet50"), "resnet50")
    pruned = run(handle, StructuredPruneConfig(ratio=ratio, recalibrate=False, calib_samples=8))
    lats = best_latency([handle, pruned], budget, rounds)
    print(f"\nzoo resnet50 (random weights, 1×3×224×224): batch-1 latency {lats[0]:.1f} ms")
    print(fmt(f"ratio {ratio}", size_row(handle, pruned, lats[0], lats[1])))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ratios", type=float, nargs="*", default=[0.3, 0.5])
    ap.add_argument("--budget", type=float, default=1.0, help="seconds per latency measurement")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-resnet50", action="store_true")
    args = ap.parse_args(argv)
    np.set_printoptions(precision=3)
    bundled_resnet(args.ratios, args.budget, args.rounds)
    bundled_vit(args.ratios, args.budget, args.rounds)
    if not args.no_resnet50:
        zoo_resnet50(0.5, args.budget * 3, args.rounds)


if __name__ == "__main__":
    main()
