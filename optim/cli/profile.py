"""``python -m optim profile MODEL``: summary, accuracy ± interval, fidelity, latency and the slowest layers.

MODEL is a bundled sample name (``resnet_digits``) or a model file (ONNX, zip, TorchScript, .pt2).
Accuracy uses the sample's own test set, or ``--data FILE`` (npz / csv / zip of class folders).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from optim.analysis.labels import collapse_note
from optim.cli.common import load_data_file, open_model
from optim.errors import ConfigError
from optim.handle import ModelHandle
from optim.measure.budget import runs_within
from optim.measure.core import (
    OPT_LEVELS,
    Accuracy,
    Latency,
    NodeProfile,
    accuracy,
    latency,
    make_session,
    output_fidelity,
    output_kinds,
    predict,
    predict_outputs,
)
from optim.measure.layer_profile import profile_layers

SLOWEST = 10


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "profile",
        help="measure one model: accuracy ± 95 %% interval, latency, slowest layers",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", metavar="MODEL", help="bundled sample name or path to a model file")
    p.add_argument("--data", type=Path, help="evaluation data (.npz with x[,y], .csv, .zip of class folders)")
    p.add_argument("--label-column", help="label column of a --data CSV")
    p.add_argument("--mean", type=_floats, help="per-channel mean for --data images, e.g. 0.485,0.456,0.406")
    p.add_argument("--std", type=_floats, help="per-channel std for --data images, e.g. 0.229,0.224,0.225")
    p.add_argument("--input-shape", action="append", default=[], metavar="NAME=DIMS",
                   help="fix dynamic input dims, e.g. input=1,3,224,224 (repeatable)")
    p.add_argument("--reference", metavar="MODEL", help="reference model for fidelity (sample name or path)")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads for latency (default 1)")
    p.add_argument("--batch", type=int, default=32, help="second latency batch size (default 32)")
    p.add_argument("--opt-level", default="all", choices=list(OPT_LEVELS),
                   help="ONNX Runtime graph optimisation level for latency (default all)")
    p.add_argument("--budget", type=float, default=1.0, help="seconds of timed runs per latency (default 1)")
    p.add_argument("--profile-runs", type=int, default=20, help="most runs averaged in the layer profile "
                   "(fewer when the model is slow: as many as fit twice --budget)")
    p.add_argument("--eval-budget", type=float, default=20.0,
                   help="seconds for accuracy; a slow model is evaluated on a seeded subset (default 20)")
    p.set_defaults(func=run)


# --- loading -------------------------------------------------------------------------------------
def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def load_model(spec: str, input_shapes: dict[str, tuple[int, ...]] | None = None) -> tuple[ModelHandle, Any]:
    """(handle, its own test Dataset or None) for a sample name or a model path (:func:`optim.cli.common.open_model`)."""
    src = open_model(spec, input_shapes)
    return src.handle, src.test


def _parse_shapes(items: list[str]) -> dict[str, tuple[int, ...]]:
    if not items:
        return {}
    from optim.io.load import parse_input_shape

    return dict(parse_input_shape(s) for s in items)


def _load_data(path: Path, handle: ModelHandle, args: argparse.Namespace) -> Any:
    """The --data file, images sized and normalised for the model's (NCHW) input."""
    return load_data_file(handle, path, label_column=args.label_column, mean=args.mean, std=args.std)


# --- printing ------------------------------------------------------------------------------------
def _fmt_count(v: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= scale:
            return f"{v / scale:.3g} {unit}"
    return f"{v:.0f}"


def _print_summary(handle: ModelHandle) -> None:
    from optim.graph.summary import summarize

    s = summarize(handle)
    print(f"model    {handle.name} ({handle.source_format}, {s.size_bytes / 1e6:.2f} MB)")
    for label, items in (("inputs ", s.inputs), ("outputs", s.outputs)):
        print(f"{label}  " + "; ".join(f"{n} {list(shape)} {dt}" for n, shape, dt in items))
    print(f"opset    {s.opset} · params {_fmt_count(s.params)} · MACs {_fmt_count(s.macs)}"
          f" · FLOPs {_fmt_count(s.flops)}")
    ops = sorted(s.op_histogram.items(), key=lambda kv: (-kv[1], kv[0]))
    print("ops      " + ", ".join(f"{op}×{n}" for op, n in ops))


def _pct(v: float) -> str:
    return f"{100 * v:.2f} %"


def format_accuracy(acc: Accuracy, data_name: str) -> str:
    line = (f"accuracy top-1 {_pct(acc.top1)} [{_pct(acc.top1_lo)}, {_pct(acc.top1_hi)}] "
            f"(95 % Wilson interval, n={acc.n}, data {data_name})")
    if acc.top5 is not None:
        line += f"\n         top-5 {_pct(acc.top5)} [{_pct(acc.top5_lo or 0)}, {_pct(acc.top5_hi or 0)}]"
    return line


def format_latency(lat: Latency) -> str:
    mode = "" if lat.batch_mode == "native" else f", {lat.batch_mode}"
    return (f"latency  batch {lat.batch:>3}: median {lat.median_ms:.3f} ms, p90 {lat.p90_ms:.3f} ms "
            f"({lat.per_sample_ms:.3f} ms/sample; {lat.runs} runs, {lat.threads} thread(s), "
            f"opt {lat.opt_level}{mode})")


def format_profile(prof: NodeProfile, top: int = SLOWEST) -> str:
    what = ("every ONNX node timed as it is" if prof.opt_level == "disable" else
            "runtime kernels mapped back to the ONNX layers they came from")
    head = (f"slowest layers (batch 1, opt_level {prof.opt_level}: {what}; mean of "
            f"{prof.runs} runs; nodes sum to {prof.node_sum_ms:.3f} ms = {100 * prof.coverage:.0f} % of "
            f"the {prof.run_ms:.3f} ms run" + (f"; {prof.dropped_runs} stalled run(s) dropped" if prof.dropped_runs else "")
            + ")")
    rows = prof.table.head(top)
    width = max([4, *(len(str(n)) for n in rows["node"])])
    lines = [head, f"  {'node':<{width}}  {'op_type':<16} {'ms':>8}  {'share':>6}"]
    for r in rows.itertuples(index=False):
        lines.append(f"  {r.node:<{width}}  {r.op_type:<16} {r.ms:8.4f}  {100 * r.share:5.1f}%")
    return "\n".join(lines)


# --- command -------------------------------------------------------------------------------------
def _synthetic_x(handle: ModelHandle, n: int = 64) -> np.ndarray:
    dims = [d.dim_value for d in handle.model.graph.input[0].type.tensor_type.shape.dim][1:]
    return np.random.default_rng(0).standard_normal((n, *dims)).astype(np.float32)


def run(args: argparse.Namespace) -> int:
    if args.threads < 1 or args.batch < 1:
        raise ConfigError("--threads and --batch must be at least 1.")
    shapes = _parse_shapes(args.input_shape)
    handle, test = load_model(args.model, shapes)
    if args.data is not None:
        test = _load_data(args.data, handle, args)
    _print_summary(handle)

    logits = None
    if test is not None:
        sess = make_session(handle, threads=2, opt_level=args.opt_level)
        test = _within_budget(handle, test, args, sess)
        logits = predict(handle, test.x, session=sess, feeds=test.feeds, constants=test.constants)
        del sess
        if test.y is not None:
            print(format_accuracy(accuracy(logits, test.y), test.name))
            if "fp32_top1" in handle.meta:
                print(f"         manifest fp32_top1 {_pct(float(handle.meta['fp32_top1']))}")
        else:
            print(f"accuracy n/a: data {test.name} has no labels")
    if args.reference:
        ref, _ = load_model(args.reference, shapes)
        x = test.x if test is not None else _synthetic_x(handle)
        feeds, consts = (test.feeds, test.constants) if test is not None else (None, None)
        f = output_fidelity(predict_outputs(ref, x, feeds=feeds, constants=consts),
                            predict_outputs(handle, x, feeds=feeds, constants=consts), output_kinds(ref.model))
        src = test.name if test is not None else f"{len(x)} synthetic inputs"
        judged = (f"top-1 agreement {_pct(f.top1_agreement)}, " if f.metric == "agreement" else
                  f"judged by output cosine (outputs {f.kinds}; worst {f.worst_output!r}), SQNR {f.sqnr_db:.1f} dB, ")
        print(f"fidelity vs {args.reference} on {src}: {judged}cosine {f.cosine:.5f}, relative error {f.rel_error:.3g}"
              + (f"; {collapse_note(f.cosine, f.worst_output)}" if f.collapsed else ""))

    one = latency(handle, batch=1, threads=args.threads, opt_level=args.opt_level, budget_s=args.budget)
    print(format_latency(one))
    cost = one.median_ms / 1e3
    batch = second_batch(args.batch, cost, args.budget)
    if batch != args.batch:
        print(f"         batch {args.batch} → {batch}: one batch-{args.batch} run would take ≈ "
              f"{args.batch * cost:.1f} s (time budget {args.budget:g} s per latency)")
    if batch > 1:
        print(format_latency(latency(handle, batch=batch, threads=args.threads, opt_level=args.opt_level,
                                     budget_s=args.budget, warmup=1, min_runs=3)))
    runs = runs_within(cost, 2 * args.budget, 3, args.profile_runs)
    print(format_profile(profile_layers(handle, threads=args.threads, opt_level=args.opt_level, runs=runs)))
    return 0


def second_batch(requested: int, cost_s: float, budget_s: float) -> int:
    """The batch for the second latency: ``requested``, or smaller when 3 runs of it would overrun the budget
    at the measured batch-1 cost (never below 2)."""
    if requested <= 1 or cost_s <= 0:
        return requested
    return max(2, min(requested, int(budget_s / (3 * cost_s))))


def _within_budget(handle: ModelHandle, test: Any, args: argparse.Namespace, sess: Any) -> Any:
    """The test set, or a seeded subset of it when evaluating all of it would overrun ``--eval-budget``
    (per-sample cost measured on 8 samples in the session that will evaluate, after one warm-up)."""
    n = len(test)
    probe = min(n, 8)
    feeds = {k: v[:probe] for k, v in test.feeds.items()} if test.feeds else None
    predict(handle, test.x[:1], session=sess, feeds={k: v[:1] for k, v in feeds.items()} if feeds else None,
            constants=test.constants)
    t0 = time.perf_counter()
    predict(handle, test.x[:probe], session=sess, feeds=feeds, constants=test.constants)
    per = (time.perf_counter() - t0) / max(probe, 1)
    keep = max(probe, int(args.eval_budget / per)) if per > 0 else n
    if keep >= n:
        return test
    print(f"evaluating {keep} of {n} samples: all of them would take ≈ {n * per:.0f} s "
          f"(--eval-budget {args.eval_budget:g} s); the interval below is for n={keep}")
    return test.subset(keep)
