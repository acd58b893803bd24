"""``python -m optim casestudy MODEL [--data D --train T]``: the efficient-inference case study table.

Baseline; structured pruning; pruning + distillation; a smaller distilled student; INT8 static;
everything combined — built and measured on the user's model (accuracy with its 95 % interval,
parameters, MACs, memory, batch-1 latency). ``--csv`` writes the same rows.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from optim.errors import ConfigError


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("casestudy", help="pruning, distillation, quantization and all combined, measured",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL", help="bundled sample name or path to a model file")
    p.add_argument("--data", type=Path, help="labelled test data (.npz, .csv, .zip); samples bring their own")
    p.add_argument("--train", type=Path, help="training inputs for calibration and distillation (labels optional)")
    p.add_argument("--label-column", help="label column of CSV data")
    p.add_argument("--ratio", type=float, default=0.5, help="structured pruning ratio (default 0.5)")
    p.add_argument("--student-width", type=float, default=0.5, help="width of the smaller student (default 0.5)")
    p.add_argument("--epochs", type=int, default=3, help="distillation epochs (default 3)")
    p.add_argument("--distill-seconds", type=float, default=60.0, help="distillation time budget per model")
    p.add_argument("--eval-limit", type=int, default=0, help="evaluate on at most N test samples")
    p.add_argument("--csv", type=Path, help="write the table to this CSV")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from optim.cli.common import load_data_file, open_model
    from optim.sweep.casestudy import CaseStudyConfig, format_table, run_casestudy

    src = open_model(args.model)
    handle, test, train = src.handle, src.test, src.train
    if args.data:
        test = load_data_file(handle, args.data, label_column=args.label_column)
    if args.train:
        train = load_data_file(handle, args.train, label_column=args.label_column)
    if test is None or train is None:
        raise ConfigError("A model file needs --data (labelled test set) and --train (inputs for calibration "
                          "and distillation).")
    cfg = CaseStudyConfig(prune_ratio=args.ratio, student_width=args.student_width, distill_epochs=args.epochs,
                          distill_budget_s=args.distill_seconds, eval_limit=args.eval_limit)

    def progress(fraction: float, message: str) -> None:
        print(f"[{fraction:4.0%}] {message}", file=sys.stderr, flush=True)

    df = run_casestudy(handle, test, train, cfg, progress)
    print(format_table(df))
    if args.csv:
        df.to_csv(args.csv, index=False)
        print(f"wrote {args.csv}")
    return 0
