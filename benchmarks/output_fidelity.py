"""Fidelity that fits the output, on the real-model corpus (tests/corpus): what the old metric said and what the
output-aware one says for FP16 and INT8 static variants of every light model.

Per model and variant it prints the output kinds (``optim.measure.fidelity.output_kinds``), the old judgement
(argmax agreement of output 0 — what every sweep used before issue 11) and the new one (the judged metric:
agreement only when every output is a class output, else the worst output's cosine with its 95 % bootstrap
interval; SQNR; relative error; collapsed). Inputs are synthesised as the dashboard does without data, and
calibrate INT8 too. Models come from the corpus cache (``$OPTIM_CORPUS_CACHE``) like benchmarks/real_models.py.

Usage: ``.venv/bin/python benchmarks/output_fidelity.py [--only NAME ...] [--samples 16]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "corpus"))

import corpus_models as cm  # noqa: E402

from optim.errors import OptimError  # noqa: E402
from optim.io.load import load  # noqa: E402
from optim.io.model_data import synthetic_dataset  # noqa: E402
from optim.io.shapes import parse_input_shape  # noqa: E402
from optim.measure.core import predict_outputs  # noqa: E402
from optim.measure.fidelity import fidelity, output_fidelity, output_kinds  # noqa: E402
from optim.passes.base import PassContext, get_pass  # noqa: E402


def _row(name: str, mode: str, ref: dict, out: dict, kinds: dict) -> str:
    first = next(iter(ref))
    old = fidelity(ref[first], out[first])
    new = output_fidelity(ref, out, kinds)
    judged = (f"agreement {new.top1_agreement:6.1%}" if new.metric == "agreement" else
              f"cosine {new.cosine:.5f} [{new.cosine_lo:.4f}, {new.cosine_hi:.4f}]")
    return (f"{name:<20} {mode:<5} old agreement {old.top1_agreement:6.1%} | new {judged:<36} SQNR "
            f"{new.sqnr_db:6.1f} dB  rel {new.rel_error:8.3g}  {'COLLAPSED' if new.collapsed else 'ok'}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--samples", type=int, default=16)
    args = ap.parse_args()
    quant = get_pass("quantize")
    for m in cm.MODELS:
        if m.suffix != ".onnx" or m.heavy or (args.only and m.name not in args.only):
            continue
        try:
            handle = load(str(cm.fetch(m)), input_shapes=dict(parse_input_shape(s) for s in m.shapes) or None)
            data = synthetic_dataset(handle, args.samples)
            ref = predict_outputs(handle, data.x)
        except (OptimError, cm.FetchError) as err:
            print(f"{m.name:<20} skipped: {str(err)[:120]}")
            continue
        kinds = output_kinds(handle.model)
        print(f"{m.name:<20} outputs: {', '.join(f'{k}={v}' for k, v in kinds.items())[:140]}")
        for mode, label in (("fp16", "FP16"), ("int8_static", "INT8")):
            try:
                variant = quant.run(handle, quant.make_config(mode=mode), PassContext(calib=data))
                print(_row(m.name, label, ref, predict_outputs(variant, data.x), kinds))
            except (OptimError, ValueError, RuntimeError) as err:
                print(f"{m.name:<20} {label:<5} failed: {str(err)[:120]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
