"""Hardware estimator vs reality: predicted/published ratios and estimated vs measured on this machine.

Run: ``.venv/bin/python benchmarks/hardware.py [--quick]``. Published points are MLPerf Inference /
MLPerf Tiny / vendor batch-1 latencies (HARDWARE_FACTS.md) on graphs of the same architectures built
in code. On this machine every model below is one the saved host profile was NOT calibrated on
(leave-one-out for the calibration models themselves). Goal: within ±15 %. "Measured" is the median
per-run CPU time of the calling thread (ORT with one intra-op thread runs every kernel on it), which
equals quiet-machine wall-clock latency and is immune to preemption on the shared 2-core box.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from optim.handle import ModelHandle  # noqa: E402
from optim.hardware import calibrate, validation  # noqa: E402
from optim.hardware.catalog import load_host_profile  # noqa: E402
from optim.hardware.reference_models import reference_model  # noqa: E402


def _variants(n_samples: int) -> list[tuple[str, object]]:
    """Compression variants of bundled samples: structured pruning 0.3/0.5, unstructured 0.5, INT8, FP16."""
    try:
        from optim.io import samples as samples
        from optim.passes.base import PassContext, get_pass

        infos = samples.list_samples()[:n_samples]
    except Exception as err:  # noqa: BLE001 - samples missing: skip this group
        print(f"(no sample variants: {err})")
        return []
    settings = [("prune_structured", {"ratio": 0.3}, "pruned0.3"), ("prune_structured", {"ratio": 0.5}, "pruned0.5"),
                ("prune_unstructured", {"ratio": 0.5}, "sparse0.5"), ("quantize", {"mode": "int8_static"}, "int8"),
                ("quantize", {"mode": "fp16"}, "fp16")]
    out: list[tuple[str, object]] = []
    for info in infos:
        for pass_name, kwargs, tag in settings:

            def build(info=info, pass_name=pass_name, kwargs=kwargs, tag=tag) -> ModelHandle:
                base, _test, train = samples.load_sample(info.name)
                ctx = PassContext(calib=train.subset(128), train=train.subset(128))
                spec = get_pass(pass_name)
                h = spec.run(base, spec.config_cls(**kwargs), ctx)
                return ModelHandle(h.model, f"{info.name}_{tag}", meta=h.meta)

            out.append(("variant", build))
    return out


def host_rows(quick: bool) -> pd.DataFrame:
    models = calibrate.default_calibration_models()
    print(f"calibration models: {[m.name for m in models]}")
    frames = [validation.leave_one_out(models, fill=[reference_model("mobilenet_v1_025", 0.5)])]
    builders: list[tuple[str, object]] = [
        ("reference", lambda n=n, w=w: reference_model(n, w))
        for n in ("resnet8", "ds_cnn", "mobilenet_v1_025") for w in ((1.0,) if quick else (0.5, 1.0, 2.0))
    ]
    if not quick:
        builders += [("zoo", lambda n=n: validation.architecture(n)) for n in ("mobilenet_v2", "resnet18")]
    builders += _variants(1 if quick else 2)
    frames.append(validation.held_out(builders))
    return pd.concat(frames, ignore_index=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer models, no 224x224 zoo graphs")
    args = parser.parse_args()
    pd.set_option("display.width", 200)
    t0 = time.time()
    pub = validation.published_table()
    print("== predicted / published (batch 1)")
    print(pub[["point", "predicted_ms", "published_ms", "ratio"]].to_string(index=False, float_format="%.3f"))
    print(f"geometric-mean ratio {np.exp(np.log(pub['ratio']).mean()):.2f}; "
          f"within 0.67-1.5x: {((pub['ratio'] > 0.67) & (pub['ratio'] < 1.5)).sum()}/{len(pub)}")
    if load_host_profile() is None:
        print("no host profile: run `python -m optim hardware calibrate` first")
        return 1
    rows = host_rows(args.quick)
    print("\n== this machine: estimated vs measured (models not used for calibration; measured = thread CPU"
          " time, ORT_ENABLE_ALL, 1 thread, batch 1)")
    print(rows.to_string(index=False, float_format="%.3f"))
    for kind, grp in [("all", rows), *rows.groupby("kind")]:
        s = validation.error_summary(grp["error_pct"])
        print(f"{kind:14s} n={s['n']:2d}  median |err| {s['median_abs_pct']:.1f} %  p90 {s['p90_abs_pct']:.1f} %  "
              f"max {s['max_abs_pct']:.1f} %  within ±15 %: {s['within_15_pct']:.0%}  bias {s['mean_signed_pct']:+.1f} %")
    print(f"({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
