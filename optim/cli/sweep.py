"""``python -m optim sweep MODEL``: build and measure a grid of compressed variants, print the Pareto set.

MODEL is a bundled sample name (``resnet_digits``; its own test set and a 256-sample calibration set
from its training split) or a model file, with ``--data FILE`` for accuracy or without it: then
variants are compared on synthesised inputs (fidelity to the original only) that also calibrate INT8
(``--input-shape NAME=DIMS`` fixes dynamic dims). Results go to the store (``--store DIR``, default
``$OPTIM_DATA_DIR`` or ``<repo>/.optim_data``): an identical second run returns the stored results at
once, and an interrupted run resumes where it stopped.

Example: python -m optim sweep resnet_digits --ratios 0,0.25,0.5,0.75 --bits 32,16,8,4 --csv out.csv
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd

from optim.analysis import select
from optim.analysis.labels import collapse_note, interval_note, metric_short
from optim.analysis.pareto import group_keys, hardware_count
from optim.cli.common import load_data_file, open_model
from optim.errors import ConfigError
from optim.handle import ModelHandle
from optim.io.model_data import SYNTHETIC_NAME
from optim.io.named_inputs import synthesised
from optim.io.shapes import parse_input_shape
from optim.io.sources import calibration_subset
from optim.io.splits import separate_training, split_for_distillation
from optim.jobs import client, default_limits, limits_enabled
from optim.sweep.node import hardware_label


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("sweep", help="grid of pruning ratios × bit-widths, measured; prints the Pareto set",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("model", metavar="MODEL", help="bundled sample name or path to a model file")
    p.add_argument("--data", type=Path, help="evaluation data (.npz with x[,y], .csv, .zip of class folders)")
    p.add_argument("--label-column", help="label column of a --data CSV")
    p.add_argument("--input-shape", action="append", default=[], metavar="NAME=DIMS",
                   help="fix dynamic input dims, e.g. input=1,3,224,224 (repeatable)")
    p.add_argument("--samples", type=int, default=64,
                   help="without --data: synthesised inputs to compare variants on (default 64; fidelity only)")
    p.add_argument("--calib", type=Path, help="calibration data for INT8 static (default: the sample's train split)")
    p.add_argument("--no-calib", action="store_true", help="no calibration data: 8 bits means INT8 dynamic")
    p.add_argument("--ratios", default="0,0.25,0.5,0.75", help="pruning ratios (default 0,0.25,0.5,0.75)")
    p.add_argument("--bits", default="32,16,8,4", help="bit-widths; 2,3,5,6,7 are simulated (default 32,16,8,4)")
    p.add_argument("--kinds", default="structured,unstructured", help="pruning kinds (default both)")
    p.add_argument("--opt-levels", default="all", help="ORT optimisation levels: disable,basic,extended,all")
    p.add_argument("--importance", default="l2", help="pruning importance criterion (default l2)")
    p.add_argument("--quant-format", choices=("auto", "qdq", "qoperator"), default="auto",
                   help="INT8: auto = the fastest configuration on this CPU whose fidelity holds (default); "
                        "qdq/qoperator = static U8S8 in that format")
    p.add_argument("--eval-limit", type=int, help="evaluate on at most N test samples")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads for latency (default 1)")
    p.add_argument("--budget", type=float, default=0.3, help="seconds of timed runs per variant (default 0.3)")
    p.add_argument("--profile-runs", type=int, default=10, help="runs averaged in each variant's layer profile")
    p.add_argument("--workers", type=int,
                   help="local: build threads running ahead of measurement; ray without an address: Ray workers "
                        "of the local instance (default 1 local, 2 ray)")
    p.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="local: this machine (default); ray: every variant is a Ray task (pip install '.[cluster]')")
    p.add_argument("--ray-address", metavar="ADDR",
                   help="Ray cluster to run on (host:6379 or ray://host:10001; default $OPTIM_RAY_ADDRESS, "
                        "else a local Ray instance)")
    p.add_argument("--distill", action="store_true",
                   help="also build a distilled copy of every pruned variant: on the sample's training split, on "
                        "--train-data, or on a seeded split of --data (the student never sees the held-out rows)")
    p.add_argument("--train-data", type=Path, help="with --distill: a separate training file to distil on "
                                                   "(labels optional); --data stays whole for evaluation")
    p.add_argument("--distill-seed", type=int, default=0, help="seed of the distillation/held-out split of --data")
    p.add_argument("--held-out", type=float, default=0.3,
                   help="share of --data held out for evaluation when it is split for distillation (default 0.3)")
    p.add_argument("--distill-seconds", type=float, default=30.0, help="distillation budget per pruned model")
    p.add_argument("--auto-bits", action="store_true",
                   help="add a sensitivity-based per-layer mixed-precision variant (size of uniform INT4)")
    p.add_argument("--csv", type=Path, help="write every variant (with a pareto column) to this CSV")
    p.add_argument("--target", default=None, metavar="DEVICE",
                   help="rank and recommend on this device's latency: a catalog id from `python -m optim hardware "
                        "devices` (estimated), default this CPU (measured)")
    p.add_argument("--store", type=Path, help="results directory (default $OPTIM_DATA_DIR or .optim_data)")
    p.set_defaults(func=run)


def _split(text: str, cast: type, name: str) -> tuple[Any, ...]:
    try:
        return tuple(cast(t.strip()) for t in text.split(",") if t.strip())
    except ValueError:
        raise ConfigError(f"--{name}: expected a comma-separated list, got {text!r}.") from None


def _load_data(path: Path, handle: ModelHandle, label_column: str | None) -> Any:
    return load_data_file(handle, path, label_column=label_column)


def load_inputs(args: argparse.Namespace) -> tuple[ModelHandle, Any, Any, Any]:
    """(model, test data, calibration data or None, training data or None) from the command line."""
    shapes = dict(parse_input_shape(t) for t in args.input_shape)
    src = open_model(args.model, shapes or None)
    handle, test, calib = src.handle, src.test, src.calib
    if args.data:
        test = _load_data(args.data, handle, args.label_column)
    if test is None:
        from optim.io.model_data import synthetic_dataset

        if args.samples < 1:
            raise ConfigError("--samples must be at least 1.")
        test = synthetic_dataset(handle, args.samples)
        calib = test
        print(f"no --data: comparing variants on {len(test)} synthesised inputs (fidelity to the original model "
              "only; no accuracy). Pass --data FILE for accuracy.", file=sys.stderr)
    stated = synthesised(handle.model, test)
    if stated:
        print("inputs not in the data, synthesised: " + "; ".join(stated) + " (a 0-d array under an input's name in "
              "the npz sets a scalar input)", file=sys.stderr)
    train = src.train
    if args.train_data:
        if not args.distill:
            raise ConfigError("--train-data feeds distillation: add --distill, or leave it out.")
        train = _load_data(args.train_data, handle, args.label_column)
    if args.distill:
        test, train, calib = _distill_split(args, test, train, calib)
    if args.calib:
        calib = calibration_subset(_load_data(args.calib, handle, args.label_column))
    return handle, test, None if args.no_calib else calib, train


def _distill_split(args: argparse.Namespace, test: Any, train: Any, calib: Any) -> tuple[Any, Any, Any]:
    """(held-out test, distillation data, calibration) for ``--distill``; prints the split."""
    if train is None and test.name == SYNTHETIC_NAME:
        raise ConfigError("--distill needs data: pass --data FILE (labelled or not; it is split into a "
                          "distillation part and a held-out part) or --train-data FILE.")
    if train is not None:
        part = separate_training(train, test, args.train_data.name if args.train_data else train.name)
    else:
        part = split_for_distillation(test, args.distill_seed, args.held_out)
        calib = calibration_subset(part.train)  # the held-out rows calibrate nothing either
    print(f"distillation data: {part.sentence}")
    return part.test, part.train, calib


class ProgressBar:
    """A one-line text progress bar on stderr (a line per update when stderr is not a terminal)."""

    def __init__(self, stream: Any = None, width: int = 28) -> None:
        self.stream = stream or sys.stderr
        self.width = width
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.last_done = -1

    def __call__(self, p: Any) -> None:
        if not self.tty and p.done == self.last_done:
            return
        self.last_done = p.done
        filled = int(round(self.width * p.fraction))
        eta = f" ETA {p.eta_s:4.0f} s" if p.eta_s is not None and p.done < p.total else ""
        line = f"[{'#' * filled}{'.' * (self.width - filled)}] {p.done:>3}/{p.total} {p.current:<28}{eta}"
        self.stream.write(("\r" + line) if self.tty else line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def format_pareto(df: pd.DataFrame, recommended: pd.Series | None = None, latency_note: str = "measured") -> str:
    """The Pareto set of a prepared table (:func:`optim.analysis.select.prepare`) as aligned text, most accurate
    first, the recommended variant marked. Without labels the metric is agreement (class outputs) or output cosine. Rows measured on different
    hardware (``node_hw``, e.g. a sweep run on a mixed cluster) are never compared: each machine gets its own
    front under a line naming it."""
    rec_id = recommended["variant_id"] if recommended is not None else None
    if hardware_count(df) <= 1 or not df["target_source"].eq("measured").any():
        return _front_table(df, rec_id, latency_note)
    parts = []
    ok = df[df["status"] == "ok"]
    for key in dict.fromkeys(group_keys(ok, "node_hw")):
        part = df[group_keys(df, "node_hw") == key]
        hosts = ", ".join(sorted(str(h) for h in part["node"].dropna().unique())) or "unknown host"
        info = part["node_json"].dropna()
        parts.append(f"-- latency measured on {hardware_label(info.iloc[0] if len(info) else None)} "
                     f"(hosts: {hosts}); a front of its own, not compared with other hardware:")
        parts.append(_front_table(part, rec_id, latency_note))
    return "\n".join(parts)


def _front_table(df: pd.DataFrame, rec_id: str | None, latency_note: str) -> str:
    front = df[df["pareto"]].sort_values(["metric", "target_ms"], ascending=[False, True], kind="stable")
    head = metric_short(str(df["metric_name"].iloc[0]))
    lines = [f"{'variant':<36} {head:>7} {'95% interval':>16} {'latency ms':>11} {'size MB':>8} {'MACs M':>8}"
             + f"   (latency {latency_note})"]
    for r in front.to_dict("records"):
        ci = f"[{r['metric_lo']:5.1f}, {r['metric_hi']:5.1f}]" if pd.notna(r["metric_lo"]) else ""
        macs = f"{r['macs'] / 1e6:8.2f}" if pd.notna(r.get("macs")) else "     n/a"
        sim = " (sim)" if r["simulated"] else ""
        mark = " ← recommended" if r["variant_id"] == rec_id else ""
        lines.append(f"{(r['label'] + sim):<36} {r['metric']:6.2f}% {ci:>16} {r['target_ms']:11.3f} "
                     f"{r['size_mb']:8.3f} {macs}{mark}")  # fmt: skip
    return "\n".join(lines)


def recommendation_line(recommended: pd.Series | None, latency_note: str = "measured") -> str:
    """The sentence naming the engine's recommendation (:func:`optim.analysis.select.recommend`)."""
    if recommended is None:
        return "recommended: none (the baseline did not finish)"
    r = recommended
    why = select.RECOMMENDATION.format(metric=r["metric_name"])
    return (f"recommended: {r['label']} ({r['metric']:.2f} % {r['metric_name']}, {r['target_ms']:.3f} ms "
            f"{latency_note}, {r['size_mb']:.3f} MB): {why}")


def _executor(args: argparse.Namespace) -> Any:
    from optim.sweep.executors import LocalExecutor

    if args.executor == "local":
        if args.ray_address:
            raise ConfigError("--ray-address needs --executor ray.")
        return LocalExecutor(args.workers or 1)
    from optim.sweep.ray_executor import ENV_ADDRESS, RayExecutor

    address = args.ray_address or os.environ.get(ENV_ADDRESS) or None
    return RayExecutor(address, workers=args.workers or 2)


def run(args: argparse.Namespace) -> int:
    from optim.analysis import targets
    from optim.sweep.run import SweepConfig, run_sweep
    from optim.sweep.store import Store

    config = SweepConfig(
        ratios=_split(args.ratios, float, "ratios"), bits=_split(args.bits, int, "bits"),
        prune_kinds=_split(args.kinds, str, "kinds"), opt_levels=_split(args.opt_levels, str, "opt-levels"),
        importance=args.importance, quant_format=args.quant_format, latency_threads=args.threads, latency_budget_s=args.budget,
        eval_limit=args.eval_limit, distill=args.distill, distill_budget_s=args.distill_seconds,
        auto_bits=args.auto_bits, target_device=None if targets.is_measured(args.target) else args.target,
        profile_runs=args.profile_runs,
    )  # fmt: skip
    handle, test, calib, train = load_inputs(args)
    store = Store(args.store)
    executor = _executor(args)
    bar = ProgressBar()
    t0 = time.perf_counter()
    try:
        if args.executor == "local" and limits_enabled():  # a worker process with the sweep's limits
            res = client.run("sweep", f"sweep of {handle.name[:80]}",
                             {"config": config.to_dict(), "store": str(store.path), "run_on": "local",
                              "workers": args.workers or 1},
                             handle=handle, datasets={"test": test, "calib": calib, "train": train},
                             limits=default_limits("sweep").scaled(max(1.0, len(config.variants()) / 10)),
                             progress=lambda d: bar(SimpleNamespace(**d)))
            sid = str(res.value["sweep_id"])
        else:
            sid = run_sweep(handle, test, calib, config, store, progress=bar, executor=executor, train=train)
    finally:
        bar.close()
        getattr(executor, "close", lambda: None)()
    elapsed = time.perf_counter() - t0
    raw = store.variants(sid)
    df = select.prepare(raw, targets.estimated_ms(raw, args.target))
    note = "measured on this CPU" if targets.is_measured(args.target) else f"estimated on {args.target}"
    if not targets.is_measured(args.target) and not df["target_source"].eq("estimated").any():
        note = f"measured on this CPU: no estimate for {args.target}"
    n_failed = int((df["status"] == "failed").sum())
    print(f"sweep {sid}: {len(df)} variants of {handle.name} ({n_failed} failed) in {elapsed:.1f} s; "
          f"store {store.path}" + (f"; ran on {executor.describe()}" if hasattr(executor, "describe") else ""))
    metric = str(df["metric_name"].iloc[0]) if len(df) else select.ACCURACY
    print(f"Pareto set ({metric} ↑, latency ↓, size ↓; latency: median, batch 1, "
          f"{config.latency_threads} thread(s); (sim) = simulated precision):")  # fmt: skip
    if metric == select.COSINE:
        print(f"metric: {interval_note(metric)}")
    rec = select.recommend(df)
    print(format_pareto(df, rec, note))
    print(recommendation_line(rec, note))
    for r in df[df["status"] == "failed"].itertuples(index=False):
        print(f"failed: {r.label}: {r.error}")
    for r in df[df["status"].eq("ok") & df["collapsed"]].to_dict("records"):
        print(f"collapsed: {r['label']}: {collapse_note(r.get('cosine'), r.get('worst_output'))}")
    if args.csv:
        df.drop(columns=["meta_json"]).to_csv(args.csv, index=False)
        print(f"wrote {args.csv}")
    return 0
