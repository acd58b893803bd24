"""``python -m optim hardware ...``: the target-device catalog, estimates and host calibration.

  hardware devices                       list targets (id, name, peaks, memory)
  hardware show ID                       every number of one device with its source and tag
  hardware estimate MODEL --device ID    per-layer estimate (MODEL: sample name, model file, zoo or
                                         MLPerf Tiny reference name); --device repeatable or "all"
  hardware calibrate                     fit this CPU's factors now (also done on first use, in the
                                         background), validate on held-out models, write the profile
                                         to $OPTIM_DATA_DIR/hardware/host-<cpu key>.json
  hardware status                        this CPU's fingerprint and calibration state
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pandas as pd

from optim.errors import ConfigError
from optim.handle import ModelHandle


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("hardware", help="target-device catalog, per-layer estimates, host calibration",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="hw_command", required=True)
    sub.add_parser("devices", help="list target devices").set_defaults(func=run_devices)
    show = sub.add_parser("show", help="every number of one device with its source")
    show.add_argument("device")
    show.set_defaults(func=run_show)
    est = sub.add_parser("estimate", help="estimate a model on target devices")
    est.add_argument("model", metavar="MODEL", help="sample name, model file, zoo name or reference name")
    est.add_argument("--device", action="append", default=[], help="device id (repeatable, or 'all')")
    est.add_argument("--bits", type=int, help="precision of the variant (default: meta or read from the graph)")
    est.add_argument("--batch", type=int, default=1)
    est.add_argument("--prune-kind", choices=["none", "structured", "unstructured"])
    est.add_argument("--layers", type=int, default=10, help="slowest layers to print (0: none)")
    est.set_defaults(func=run_estimate)
    cal = sub.add_parser("calibrate", help="fit this CPU's efficiency/overhead factors (<= ~60 s)")
    cal.add_argument("--models", nargs="*", help="calibration models (default: bundled samples + reference models)")
    cal.add_argument("--out", type=Path, help="profile path (default: this CPU's profile in the data dir)")
    cal.add_argument("--repeats", type=int, default=4, help="profiles per model (minimum taken)")
    cal.set_defaults(func=run_calibrate)
    sub.add_parser("status", help="this CPU's fingerprint and calibration state").set_defaults(func=run_status)


def load_any(spec: str) -> ModelHandle:
    """A model file, a bundled sample, a zoo architecture or an MLPerf Tiny reference model."""
    from optim.hardware.calibration.reference_models import REFERENCE_NAMES, reference_model
    from optim.reference.zoo import ZOO_NAMES, zoo_model

    path = Path(spec)
    if path.is_file():
        from optim.cli.common import load_model_file

        return load_model_file(path)
    if spec in REFERENCE_NAMES:
        return reference_model(spec)
    if spec in ZOO_NAMES:
        return ModelHandle(zoo_model(spec), spec, meta={"bits": 32})
    from optim.io.samples import list_samples, load_sample

    names = [s.name for s in list_samples()]
    if spec in names:
        return load_sample(spec)[0]
    raise ConfigError(f"MODEL {spec!r} is neither a file nor a known name; use a path or one of "
                      f"{', '.join([*names, *ZOO_NAMES, *REFERENCE_NAMES])}.")


def run_devices(args: argparse.Namespace) -> int:
    from optim.hardware.targets import list_devices

    rows = []
    for d in list_devices():
        peaks = {p: d.specs[f"peak_{p}"] for p in ("fp32", "fp16", "int8", "int4") if f"peak_{p}" in d.specs}
        rows.append({"id": d.id, "name": d.name, "kind": d.kind,
                     **{f"{p} T": round(s.si / 1e12, 4) for p, s in peaks.items()},
                     "GB/s": round(d.spec("bandwidth") / 1e9, 1), "memory GB": round(d.spec("memory") / 1e9, 3)})
    print(pd.DataFrame(rows).astype(object).fillna("-").to_string(index=False))
    return 0


def run_show(args: argparse.Namespace) -> int:
    from optim.hardware.targets import get_device

    dev = get_device(args.device)
    print(dev.name, f"({dev.kind}, {dev.runtime})")
    with pd.option_context("display.max_colwidth", 90, "display.width", 200):
        print(dev.table().to_string(index=False))
    for n in dev.notes:
        print("note:", n)
    return 0


def _print_estimate(e: Any, layers: int) -> None:
    kind = "measured" if e.measured else "estimated"
    print(f"\n== {e.device_name}: {e.total_ms:.3f} ms ({kind}; band {e.band_low_ms:.3f}-{e.band_high_ms:.3f} ms), "
          f"energy ≈ {e.energy_mj:.3f} mJ (rough)")
    print(f"   confidence: {e.confidence_note}")
    print(f"   precision: {e.precision_path}")
    print(f"   fits: {'yes' if e.fits else 'NO — does not fit'}; " + "; ".join(e.fit_notes[:2]))
    if e.bound_share:
        print("   time share: " + ", ".join(f"{k}-bound {v:.0%}" for k, v in e.bound_share.items()))
    for n in e.notes:
        print("   note:", n)
    if layers > 0:
        cols = ["node", "op_type", "macs", "bytes", "intensity", "bound", "ms"]
        top = e.layers.sort_values("ms", ascending=False).head(layers)[cols]
        with pd.option_context("display.width", 200, "display.float_format", "{:.4g}".format):
            print(top.to_string(index=False))


def run_estimate(args: argparse.Namespace) -> int:
    from optim.hardware.targets import estimate, list_devices

    handle = load_any(args.model)
    meta = dict(handle.meta)
    if args.bits is not None:
        meta["bits"] = args.bits
    if args.prune_kind:
        meta["prune_kind"] = args.prune_kind
    handle = ModelHandle(handle.model, handle.name, handle.source_format, meta)
    ids = args.device or ["host"]
    if "all" in ids:
        ids = [d.id for d in list_devices() if not d.flag("measured")]
    for dev_id in ids:
        _print_estimate(estimate(handle, dev_id, batch=args.batch, auto_calibrate=False), args.layers)
    return 0


def run_calibrate(args: argparse.Namespace) -> int:
    from optim.hardware import profiles
    from optim.hardware.calibration.calibrate import CalibrationConfig, calibrate

    def progress(fraction: float, stage: str) -> None:
        print(f"  {100 * fraction:3.0f} %  {stage}", flush=True)

    models = [load_any(m) for m in args.models] if args.models else None
    prof = calibrate(CalibrationConfig(repeats=args.repeats), out=args.out, progress=progress, fit_models=models)
    print(f"calibrated on {', '.join(prof['calibration_models'])} in {prof['calibration_s']} s")
    print(f"peak FP32 {prof['peak_fp32']['value']} GFLOPS, bandwidth {prof['bandwidth']['value']} GB/s (1 thread)")
    for name, c in prof["classes"].items():
        print(f"  {name:12s} eff_compute {c['eff_compute']:.3f}  eff_memory {c['eff_memory']:.3f}  "
              f"overhead {c['overhead_us']:.2f} us  ({c['nodes']} kernels)")
    print(f"run overhead {prof['run_overhead_us']} us; fit error (median) {prof['fit_error_pct']} %")
    held = prof["holdout"]
    if held["n"]:
        print(f"held-out: {held['n']} models, within ±15 %: {100 * held['within_15_pct']:.0f} %, "
              f"median |error| {held['median_abs_pct']:.1f} %")
        for name, err in held["errors_pct"].items():
            print(f"  {name:28s} measured/estimated - 1 = {err:+.1f} %")
    print(f"wrote {args.out or profiles.profile_path(prof['fingerprint_key'])}")
    return 0


def run_status(args: argparse.Namespace) -> int:
    import json

    from optim.hardware import host
    from optim.hardware.calibration.job import host_calibration_status

    print("fingerprint:", json.dumps(host.fingerprint(), sort_keys=True))
    status = host_calibration_status()
    print(f"key {status['key']}: {status['state']} — {status['message']}")
    return 0
