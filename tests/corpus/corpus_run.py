"""Run one corpus model through the command line a user has: ``optim profile`` then ``optim sweep``.

Each command runs in-process through ``optim.__main__.main`` (what ``python -m optim`` calls), so a
refusal is its exit status 2 with a one-line ``error:`` message and anything else escaping is a traceback,
which is always our defect. The sweep's ``--csv`` gives every variant's status and error.
"""

from __future__ import annotations

import contextlib
import io
import math
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from corpus_models import CorpusModel

SWEEP_ARGS = ["--ratios", "0,0.5", "--bits", "32,8", "--budget", "0.05", "--samples", "16", "--profile-runs", "2"]
PROFILE_ARGS = ["--budget", "0.05", "--batch", "1", "--profile-runs", "2"]
RAW_RUNTIME_TEXT = ("[ONNXRuntimeError]", "Traceback (most recent call last)", "onnxruntime_pybind11")


@dataclass
class Step:
    status: str  # "ok" | "refused" (an OptimError: exit 2 with a message) | "traceback"
    message: str = ""
    seconds: float = 0.0


@dataclass
class Outcome:
    model: str
    family: str
    profile: Step
    sweep: Step
    variants: pd.DataFrame | None = None  # the sweep's CSV
    errors: list[str] = field(default_factory=list)  # every refusal / variant error text

    def technique(self, kind: str, bits: int) -> str:
        """'ok', 'failed' or '-' (no such row: the sweep did not run) for ratio 0.5 of ``kind`` (or 0 for none)."""
        df = self.variants
        if df is None or df.empty:
            return "-"
        ratio = 0.0 if kind == "none" else 0.5
        rows = df[(df["prune_kind"] == kind) & (df["prune_ratio"] == ratio) & (df["bits"] == bits)]
        if rows.empty:
            return "-"
        return "ok" if (rows["status"] == "ok").all() else "failed"

    def _row(self, kind: str, bits: int) -> pd.Series | None:
        df = self.variants
        if df is None or df.empty:
            return None
        ratio = 0.0 if kind == "none" else 0.5
        rows = df[(df["prune_kind"] == kind) & (df["prune_ratio"] == ratio) & (df["bits"] == bits)
                  & (df["status"] == "ok")]
        return None if rows.empty else rows.iloc[0]

    def int8_ratio(self) -> float | None:
        """INT8 latency / FP32 latency (both measured in the same sweep, batch 1)."""
        base, q = self._row("none", 32), self._row("none", 8)
        if base is None or q is None or not base["latency_ms"]:
            return None
        return float(q["latency_ms"]) / float(base["latency_ms"])

    def fidelity(self, kind: str = "none", bits: int = 8) -> float | None:
        """Cosine of the variant's outputs to the original's (the sweep's fidelity column)."""
        row = self._row(kind, bits)
        if row is None or pd.isna(row.get("cosine")):
            return None
        value = float(row["cosine"])
        return None if math.isnan(value) else value

    @property
    def any_compressed(self) -> bool:
        df = self.variants
        if df is None or df.empty:
            return False
        compressed = df[~((df["prune_kind"] == "none") & (df["bits"] == 32))]
        return bool((compressed["status"] == "ok").any())


def _cli(argv: list[str]) -> Step:
    import time

    from optim.__main__ import main

    out, err = io.StringIO(), io.StringIO()
    t0 = time.perf_counter()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(argv)
    except SystemExit as exc:  # argparse refusing the command line
        rc = exc.code if isinstance(exc.code, int) else 2
        return Step("refused", f"command line refused (exit {rc}): {err.getvalue().strip()[-300:]}",
                    time.perf_counter() - t0)
    except Exception:  # noqa: BLE001 - a traceback is what this harness exists to catch
        return Step("traceback", traceback.format_exc(limit=-4), time.perf_counter() - t0)
    seconds = time.perf_counter() - t0
    if rc == 0:
        return Step("ok", "", seconds)
    lines = [ln for ln in err.getvalue().splitlines() if ln.startswith("error:")]
    return Step("refused", lines[-1][len("error:"):].strip() if lines else err.getvalue().strip()[-300:], seconds)


def run_model(model: CorpusModel, path: Path, workdir: Path) -> Outcome:
    """Profile and sweep ``model`` (its file at ``path``) as a user would, with the shapes its entry names."""
    workdir.mkdir(parents=True, exist_ok=True)
    shapes = [a for s in model.shapes for a in ("--input-shape", s)]
    profile = _cli(["profile", str(path), *shapes, *PROFILE_ARGS])
    csv = workdir / f"{model.name}.csv"
    sweep = _cli(["sweep", str(path), *shapes, *SWEEP_ARGS, "--store", str(workdir / "store"), "--csv", str(csv)])
    variants = pd.read_csv(csv) if sweep.status == "ok" and csv.exists() else None
    errors = [s.message for s in (profile, sweep) if s.status == "refused"]
    if variants is not None:
        errors += [str(e) for e in variants.loc[variants["status"] == "failed", "error"]]
    return Outcome(model.name, model.family, profile, sweep, variants, errors)


def message_problems(text: str) -> list[str]:
    """Why a refusal text is not one sentence a user can act on ([] when it is)."""
    problems = []
    if any(marker in text for marker in RAW_RUNTIME_TEXT):
        problems.append("raw runtime/traceback text")
    if "internal error" in text:
        problems.append("an internal error (not an OptimError): our defect")
    if "\n" in text.strip():
        problems.append("more than one line")
    if len(text) > 600:
        problems.append(f"{len(text)} characters")
    if not text.strip():
        problems.append("empty")
    return problems
