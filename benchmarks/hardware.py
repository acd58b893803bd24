"""Hardware estimator vs reality: predicted/published ratios, then estimated vs measured on this machine.

Run: ``.venv/bin/python benchmarks/hardware.py [--quick]``. Published points are MLPerf Inference /
MLPerf Tiny / vendor batch-1 latencies (``devices.toml``, HARDWARE_FACTS.md) on graphs of the same
architectures built in code. Then the tool calibrates this CPU by itself (the same default
configuration as the first-use background calibration, into a scratch data dir) and every model below
that the calibration did NOT fit on is estimated and measured: reference architectures at other
widths, zoo architectures and compression variants (pruned, sparse, INT8, FP16) of the bundled samples.
"Measured" is the minimum over interleaved rounds (half before the calibration, half after) of the fastest per-run thread CPU time (ORT with one
intra-op thread runs every kernel on it), which equals quiet-machine latency on the shared 2-core box.
Goal: >= 80 % within ±15 %. The last line is the summary:
``host held-out: N models, within ±15 %: P %, median |error| E %``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from optim.handle import ModelHandle  # noqa: E402
from optim.hardware.calibration import calibrate, models, validation  # noqa: E402

REF_WIDTHS = (0.5, 1.0, 2.0)
VARIANTS = (("prune_structured", {"ratio": 0.3}, "pruned0.3"), ("prune_structured", {"ratio": 0.5}, "pruned0.5"),
            ("prune_unstructured", {"ratio": 0.5}, "sparse0.5"), ("quantize", {"mode": "int8_static"}, "int8"),
            ("quantize", {"mode": "fp16"}, "fp16"))


def sample_variants(n_samples: int) -> list[tuple[str, ModelHandle]]:
    """Compression variants of bundled samples: structured pruning 0.3/0.5, unstructured 0.5, INT8, FP16."""
    try:
        from optim.io import samples as samples
        from optim.passes.base import PassContext, get_pass

        infos = [s for s in samples.list_samples() if s.model_path.exists()][:n_samples]
    except Exception as err:  # noqa: BLE001 - samples missing: skip this group
        print(f"(no sample variants: {err})")
        return []
    out = []
    for info in infos:
        base, _test, train = samples.load_sample(info.name)
        ctx = PassContext(calib=train.subset(128), train=train.subset(128))
        for pass_name, kwargs, tag in VARIANTS:
            spec = get_pass(pass_name)
            h = spec.run(base, spec.config_cls(**kwargs), ctx)
            out.append(("variant", ModelHandle(h.model, f"{info.name}_{tag}", meta=h.meta)))
    return out


def held_out_models(quick: bool, fitted: set[str]) -> list[tuple[str, ModelHandle]]:
    specs = [f"ref:{n}:{w:g}" for n in ("resnet8", "ds_cnn", "mobilenet_v1_025") for w in REF_WIDTHS]
    specs += ["int8:ref:resnet8", "int8:ref:mobilenet_v1_025", "fp16:ref:ds_cnn"]
    if not quick:
        specs += ["zoo:mobilenet_v2", "zoo:resnet18"]
    out = [(s.split(":")[0], models.build(s)) for s in specs]
    out += sample_variants(2 if quick else 4)
    return [(k, h) for k, h in out if h.name not in fitted]


def host_rows(quick: bool) -> tuple[pd.DataFrame, dict]:
    fit_specs = models.expand(calibrate.CalibrationConfig().fit)
    pairs = held_out_models(quick, {models.build(s).name for s in fit_specs})
    rounds = 3 if quick else 4
    # half the rounds before the calibration, half after: a burst of load on this shared machine that lasts
    # a minute inflates the rounds it overlaps, not a model's every reading
    before = calibrate.robust_latency_ms([p[1] for p in pairs], rounds=rounds)
    t0 = time.perf_counter()
    profile = calibrate.calibrate(save=False)
    print(f"\n== calibration on this CPU: {profile['calibration_s']} s (wall {time.perf_counter() - t0:.0f} s), "
          f"fitted on {', '.join(profile['calibration_models'])}")
    print(f"peak {profile['peak_fp32']['value']} GFLOPS, copy bandwidth {profile['bandwidth']['value']} GB/s, "
          f"run overhead {profile['run_overhead_us']} us, per-kernel cost {profile['kernel_cost_us']} us, "
          f"family scales {profile['kernel_scale']}")
    h = profile["holdout"]
    print(f"its own held-out check: {h['n']} models, within ±15 %: {100 * (h['within_15_pct'] or 0):.0f} %, "
          f"median |error| {h['median_abs_pct']} %")
    assert {m.name for _, m in pairs}.isdisjoint(profile["calibration_models"])
    measured = np.minimum(before, calibrate.robust_latency_ms([p[1] for p in pairs], rounds=rounds))
    rows = []
    for (kind, handle), ms in zip(pairs, measured, strict=True):
        est = calibrate.estimate_host(handle, profile)
        rows.append({"kind": kind, "model": handle.name, "estimated_ms": est, "measured_ms": ms,
                     "error_pct": (est / ms - 1) * 100})
    return pd.DataFrame(rows), profile


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer models, no 224x224 zoo graphs")
    args = parser.parse_args()
    pd.set_option("display.width", 200)
    t0 = time.time()
    pub = validation.published_table()
    print("== predicted / published (batch 1)")
    print(pub[["point", "device", "predicted_ms", "published_ms", "ratio", "recorded_ms"]].to_string(
        index=False, float_format="%.3f"))
    print(f"geometric-mean ratio {np.exp(np.log(pub['ratio']).mean()):.2f}; "
          f"within 0.67-1.5x: {((pub['ratio'] > 0.67) & (pub['ratio'] < 1.5)).sum()}/{len(pub)}")
    with tempfile.TemporaryDirectory(prefix="optim_hw_bench_") as scratch:
        os.environ["OPTIM_DATA_DIR"] = scratch
        rows, _profile = host_rows(args.quick)
    print("\n== this machine: estimated vs measured (models the calibration did not fit on; ORT_ENABLE_ALL, "
          "1 thread, batch 1)")
    print(rows.to_string(index=False, float_format="%.3f"))
    for kind, grp in [("all", rows), *rows.groupby("kind")]:
        s = validation.error_summary(grp["error_pct"])
        print(f"{kind:10s} n={s['n']:2d}  median |err| {s['median_abs_pct']:.1f} %  p90 {s['p90_abs_pct']:.1f} %  "
              f"max {s['max_abs_pct']:.1f} %  within ±15 %: {s['within_15_pct']:.0%}  bias {s['mean_signed_pct']:+.1f} %")
    print(f"({time.time() - t0:.0f} s)")
    s = validation.error_summary(rows["error_pct"])
    print(f"host held-out: {s['n']} models, within ±15 %: {100 * s['within_15_pct']:.0f} %, "
          f"median |error| {s['median_abs_pct']:.1f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
