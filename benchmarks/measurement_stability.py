"""How repeatable are our latency numbers, and how much of a run does the per-node profile explain?

Prints, for the bundled ResNet sample (or the zoo ResNet-18 when samples are not built):
- the ratio of two successive latency medians of the same model, several pairs, at 1 and at 2 intra-op
  threads (target: within 5 % at 1 thread; 2 threads on a shared 2-core machine shows the noise);
- the per-node sum / whole-run ratio (``coverage``) of the ORT profile at opt_level disable and all.
Ratios only, no pass/fail: this is a measurement, not a test.

Usage: ``.venv/bin/python benchmarks/measurement_stability.py [--pairs 3] [--budget 1.0] [--batch 1]``
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from optim.errors import OptimError  # noqa: E402
from optim.handle import ModelHandle  # noqa: E402
from optim.measure.core import latency, profile_nodes  # noqa: E402


def pick_model() -> ModelHandle:
    try:
        from optim.io.samples import load_sample

        return load_sample("resnet_digits")[0]
    except (ImportError, OptimError) as err:
        print(f"(bundled sample unavailable: {err}; using zoo resnet18)")
        from optim.reference.zoo import zoo_model

        return ModelHandle(model=zoo_model("resnet18"), name="zoo:resnet18")


def median_pairs(handle: ModelHandle, threads: int, pairs: int, budget: float, batch: int) -> list[float]:
    ratios = []
    for i in range(pairs):
        a = latency(handle, batch=batch, threads=threads, budget_s=budget)
        b = latency(handle, batch=batch, threads=threads, budget_s=budget)
        ratio = b.median_ms / a.median_ms
        ratios.append(ratio)
        print(f"  threads={threads} pair {i + 1}: median {a.median_ms:.3f} → {b.median_ms:.3f} ms "
              f"(p90 {a.p90_ms:.3f} / {b.p90_ms:.3f}; runs {a.runs}/{b.runs})  ratio {ratio:.3f}")
    return ratios


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--budget", type=float, default=1.0)
    ap.add_argument("--batch", type=int, default=1)
    args = ap.parse_args()

    handle = pick_model()
    print(f"model {handle.name}, batch {args.batch}, budget {args.budget} s per median; "
          f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, "
          f"load average {os.getloadavg()[0]:.1f} (other processes competing for the cores widen the spread)")
    for threads in (1, 2):
        ratios = median_pairs(handle, threads, args.pairs, args.budget, args.batch)
        worst = max(abs(r - 1) for r in ratios)
        print(f"threads={threads}: successive-median ratios {', '.join(f'{r:.3f}' for r in ratios)}; "
              f"worst deviation {100 * worst:.1f} % (mean ratio {statistics.mean(ratios):.3f})")
    for threads in (1, 2):
        for level in ("disable", "all"):
            prof = profile_nodes(handle, threads=threads, opt_level=level, runs=20)
            print(f"profile threads={threads} opt_level={level:<7}: {len(prof.table)} nodes, node sum "
                  f"{prof.node_sum_ms:.3f} ms / run {prof.run_ms:.3f} ms = coverage {prof.coverage:.3f}")


if __name__ == "__main__":
    main()
