"""Distillation, accuracy recovery and mixed precision on the bundled ResNet, measured in one run.

Prints:
1. 50 % structured pruning: top-1 before distillation, after labelled distillation, after
   label-free distillation, and the FP32 baseline (target: after within 1 point of FP32);
2. label-free recovery / labelled recovery (target ≥ 0.8);
3. quantization-aware fine-tuning at 4/3/2 bits: how much of the post-training loss comes back;
4. per-layer mixed precision (sensitivity on the training split, knapsack plan) against uniform
   fake-quantised weights at the same packed size, for 4-bit (target: mixed > uniform) and lower budgets.

Usage: python benchmarks/distill.py [--sample resnet_digits] [--epochs 4] [--seconds 90]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from optim.analysis.plans import apply_bit_plan, bit_plan, uniform_bytes
from optim.analysis.sensitivity import analyze
from optim.io.samples import load_sample
from optim.measure.core import evaluate
from optim.passes import PassContext, get_pass


def top1(handle, test) -> tuple[float, float, float]:
    acc = evaluate(handle, test).accuracy
    return acc.top1 * 100, acc.top1_lo * 100, acc.top1_hi * 100


def fmt(a: tuple[float, float, float]) -> str:
    return f"{a[0]:6.2f} % [{a[1]:.2f}, {a[2]:.2f}]"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sample", default="resnet_digits")
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--sens-samples", type=int, default=500)
    args = ap.parse_args()

    handle, test, train = load_sample(args.sample)
    ctx = PassContext(calib=train, train=train, teacher=handle)
    base = top1(handle, test)
    print(f"{args.sample}: FP32 {fmt(base)} on {len(test)} test samples")

    prune, distill = get_pass("prune_structured"), get_pass("distill")
    t0 = time.monotonic()
    pruned = prune.run(handle, prune.config_cls(ratio=args.ratio), ctx)
    p = top1(pruned, test)
    print(f"structured {args.ratio:.0%} (recalibrated, no fine-tune): {fmt(p)}  [{time.monotonic() - t0:.1f} s]")

    results = {}
    for labels in (True, False):
        t0 = time.monotonic()
        cfg = distill.config_cls(epochs=args.epochs, budget_s=args.seconds, use_labels=labels)
        out = distill.run(pruned, cfg, PassContext(train=train, teacher=handle))
        results[labels] = top1(out, test)
        d = out.meta["distillation"]
        print(f"  + distillation, labels {'used    ' if labels else 'withheld'}: {fmt(results[labels])}  "
              f"[{d['epochs_run']} epochs, {d['seconds']:.0f} s, stopped by {d['stopped_by']}]")
    gap = base[0] - results[True][0]
    print(f"after labelled distillation − FP32: {-gap:+.2f} points (target: within 1 point) -> "
          f"{'MET' if gap <= 1 else 'NOT MET'}")
    gain_l, gain_u = results[True][0] - p[0], results[False][0] - p[0]
    if gain_l > 0:
        print(f"label-free recovery / labelled recovery: {gain_u / gain_l:.2f} (target ≥ 0.80)")
    else:
        print(f"labelled distillation gained {gain_l:+.2f} points (nothing to recover); label-free {gain_u:+.2f}")

    quant = get_pass("quantize")
    print("\nquantization-aware fine-tune (fake-quantised weights, straight-through gradients) vs post-training:")
    for bits in (4, 3, 2):
        ptq = top1(quant.run(handle, quant.config_cls(mode="fake", bits=bits)), test)
        t0 = time.monotonic()
        qat_cfg = distill.config_cls(epochs=2, budget_s=args.seconds / 2, qat_bits=bits, lr=3e-4)
        tuned = distill.run(handle, qat_cfg, PassContext(train=train, teacher=handle))
        qat = top1(quant.run(tuned, quant.config_cls(mode="fake", bits=bits)), test)
        lost = base[0] - ptq[0]
        back = (qat[0] - ptq[0]) / lost if lost > 0 else float("nan")
        print(f"  {bits}-bit weights: PTQ {fmt(ptq)} -> QAT {fmt(qat)}; share of the PTQ loss recovered "
              f"{back:.2f}  [{time.monotonic() - t0:.0f} s]")

    t0 = time.monotonic()
    sub = train.subset(min(args.sens_samples, len(train)), seed=1)
    sens = analyze(handle, sub.x, sub.y, prune_levels=(), quant_bits=(8, 4, 3, 2))
    print(f"\nsensitivity on {len(sub)} training samples: {len(sens)} rows in {time.monotonic() - t0:.1f} s")
    for bits in (4, 3, 2):
        budget = uniform_bytes(handle, bits)
        plan = bit_plan(handle, sens, budget, bits_choices=(8, 4, 3, 2))
        mixed = top1(apply_bit_plan(handle, plan), test)
        uniform = top1(quant.run(handle, quant.config_cls(mode="fake", bits=bits)), test)
        hist = np.unique(list(plan.choices.values()), return_counts=True)
        mix = ", ".join(f"{int(b)}-bit×{c}" for b, c in zip(*hist, strict=True))
        print(f"budget = uniform {bits}-bit ({budget / 1e3:.0f} kB): mixed {fmt(mixed)} vs uniform {fmt(uniform)} "
              f"-> mixed − uniform {mixed[0] - uniform[0]:+.2f} points  [{mix}]")


if __name__ == "__main__":
    main()
