"""The fastest honest INT8: try the configurations that apply, keep the fastest whose fidelity holds.

Which INT8 graph runs fastest depends on the CPU and the model: on x86 without VNNI, U8S8 kernels are
the fast ones and S8S8 ran 1.6× slower than FP32 (QDQ), a small classifier's INT8 ran 1.45× FP32, and
dynamic quantisation (ConvInteger) ran CNNs 6–16× slower while it is the usual winner on transformer
MatMuls. So nothing is assumed: the candidates that apply are built from one pre-processed file with
activation ranges computed once (:mod:`optim.passes._quant.calib`), and each is

* timed on a short latency probe beside FP32 — one intra-op thread, ORT_ENABLE_ALL, batch 1, interleaved
  rounds (every candidate runs in every round, so background load hits all alike), median over runs;
* checked for fidelity on calibration samples (never the test set): relative error ``‖ref − out‖/‖ref‖``
  and top-1 agreement with FP32. A candidate *holds* when it is no worse than the standard configuration
  (QDQ U8S8 per-channel, first in the list) by more than a tolerance: relative error ≤ max(1.5 × the
  standard's, the standard's + 0.02), agreement ≥ the standard's − max(0.02, 1/n).

Candidates, in the order built (the standard and dynamic always; the time budget stops the rest of the list;
what was skipped and why is recorded):
QDQ U8S8 per-channel, the standard (``reduce_range`` unless the CPU has VNNI); dynamic U8S8 (only for graphs
whose MACs are mostly MatMul/Gemm); the standard with its slow quantised layers kept FP32 (layers whose INT8
time in a per-layer profile exceeds their FP32 time); QDQ S8S8; QOperator U8S8; QDQ U8S8 per-tensor; the
standard with its first and last weight layers kept FP32. All are then raced once, interleaved. The fastest
that holds is kept — the standard unless another is at least 5 % faster (near-ties are noise on a shared
machine, and the standard is the most accurate). The record says which was chosen and why, and, when even
the fastest INT8 is slower than FP32, that every configuration tried was.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from optim.errors import OptimError, PassUnavailableError, runtime_reason
from optim.measure.budget import runs_within
from optim.measure.layer_profile import profile_layers
from optim.measure.session import make_session
from optim.passes._quant.core import QUANTISED_OPS, cpu_has_vnni, weight_refs
from optim.passes._quant.int8 import Calibrated, build_dynamic, build_static

ROUNDS = 3
PROBE_SAMPLES = 16
MATMUL_SHARE = 0.5  # dynamic INT8 is tried when MatMul/Gemm carry at least this share of the MACs
MIXED_SHARE = 0.2  # graphs with convolutions: MatMul-only dynamic INT8 is tried from this MatMul/Gemm share
MATMUL_OPS = ("MatMul", "Gemm")
FIDELITY_S = 1.0  # fidelity samples per candidate: as many as run in this time (at least 8, at most PROBE_SAMPLES)
MARGIN = 0.05  # another candidate replaces the standard one only when at least this much faster


@dataclass(frozen=True)
class Candidate:
    label: str
    kind: str = "static"  # "static" | "dynamic"
    quant_format: str = "qdq"
    activation_type: str = "uint8"
    weight_type: str = "int8"
    per_channel: bool = True
    reduce_range: bool = True
    exclude: tuple[str, ...] = ()
    op_types: tuple[str, ...] = ()  # dynamic only: the op types quantised (empty = every one ORT quantises)
    why: str = ""


@dataclass
class Trial:
    candidate: Candidate
    path: Path | None = None
    error: str | None = None
    times: list[float] = field(default_factory=list)
    rel_error: float | None = None
    agreement: float | None = None
    holds: bool = False

    @property
    def ms(self) -> float | None:
        return float(np.median(self.times)) if self.times else None


def base_candidates(vnni: bool | None, matmul_share: float, static: bool,
                    has_conv: bool = False) -> tuple[list[Candidate], list[dict[str, str]]]:  # fmt: skip
    """(candidates to try in order, skipped ones with the reason). ``has_conv``: the graph has Conv weights; then
    a MatMul-only dynamic candidate (Conv stays FP32) is tried too when MatMul/Gemm carry ≥ ``MIXED_SHARE``."""
    rr = vnni is not True
    rr_why = "reduce_range: 7-bit weights avoid U8S8 saturation without VNNI" if rr else "VNNI: full 8-bit weights"
    dyn = Candidate("INT8 dynamic U8S8 per-channel", kind="dynamic", reduce_range=rr,
                    why="MatMul-heavy graph: activations quantised on the fly (no calibration error)")
    mm_only = Candidate("INT8 dynamic U8S8 per-channel MatMul-only", kind="dynamic", reduce_range=rr,
                        op_types=MATMUL_OPS, why="mixed Conv + MatMul graph: MatMul/Gemm quantised on the fly, "
                        "convolutions kept FP32 (ConvInteger is the slow dynamic kernel)")  # fmt: skip
    skipped: list[dict[str, str]] = []
    out: list[Candidate] = []
    if static:
        out.append(Candidate("INT8 static QDQ U8S8 per-channel", reduce_range=rr, why=f"the standard x86 kernel; {rr_why}"))
    if matmul_share >= MATMUL_SHARE or not static:
        out.append(dyn)
    else:
        skipped.append({"label": dyn.label, "why": f"MatMul/Gemm carry {matmul_share:.0%} of the MACs: convolutions "
                        "would run as ConvInteger, 6–16× slower than FP32 on CNNs"})
    if has_conv and matmul_share >= MIXED_SHARE:
        out.append(mm_only)
    elif has_conv and matmul_share > 0:
        skipped.append({"label": mm_only.label, "why": f"MatMul/Gemm carry {matmul_share:.0%} of the MACs: too "
                        "little to gain from quantising them alone"})
    if static:
        out += [
            Candidate("INT8 static QDQ S8S8 per-channel", activation_type="int8", reduce_range=rr,
                      why="signed activations: the fast kernel on ARM and some x86 builds"),
            Candidate("INT8 static QOperator U8S8 per-channel", quant_format="qoperator", reduce_range=rr,
                      why="explicit QLinear* nodes instead of Q/DQ pairs ORT must fuse"),
            Candidate("INT8 static QDQ U8S8 per-tensor", per_channel=False, reduce_range=rr,
                      why="one weight scale per layer: simpler requantisation"),
        ]
    return out, skipped


def matmul_share(summary_layers: Any) -> float:
    macs = summary_layers["macs"].fillna(0)
    total = float(macs.sum())
    mm = float(macs[summary_layers["op_type"].isin(["MatMul", "Gemm"])].sum())
    return mm / total if total > 0 else 0.0


class Probe:
    """Interleaved 1-thread latency and fidelity of candidate files against the FP32 file.

    Memory: a session lives only while it is used — the FP32 one for its reference outputs, each candidate's
    for its fidelity — and all are opened again together for the race, after every candidate is built (a
    BERT-base FP32 session is ~1× the model; kept open it stacked on every candidate's quantisation).
    """

    def __init__(self, fp32: Path, rows: dict[str, np.ndarray], budget_s: float,
                 extra: dict[str, np.ndarray] | None = None) -> None:  # fmt: skip
        """``rows``: probe samples of every input the data gives (the same rows each); ``extra``: the other
        inputs' values at batch 1."""
        self.rows, self.budget_s, self.extra = rows, budget_s, extra or {}
        n = len(next(iter(rows.values())))
        self.fp32_path = fp32
        sess = self._open(fp32)
        self.fp32_times: list[float] = []
        self.cost_s = max(1e-4, self._time(sess, 2)[-1] / 1e3)
        keep = max(min(8, n), min(n, int(FIDELITY_S / self.cost_s)))  # ≈ 1 s per candidate
        self.rows = {k: v[:keep] for k, v in rows.items()}
        self.n = keep
        self.ref = self._outputs(sess)

    def _feed(self, i: int) -> dict[str, np.ndarray]:
        return {**self.extra, **{k: v[i : i + 1] for k, v in self.rows.items()}}

    @staticmethod
    def _open(path: Path) -> ort.InferenceSession:
        return make_session(path, threads=1, opt_level="all")

    def _outputs(self, sess: ort.InferenceSession) -> np.ndarray:
        out = [sess.run([sess.get_outputs()[0].name], self._feed(i))[0] for i in range(self.n)]
        return np.concatenate(out).reshape(self.n, -1).astype(np.float64)

    def _time(self, sess: ort.InferenceSession, runs: int) -> list[float]:
        feed = self._feed(0)
        sess.run(None, feed)
        times = []
        for _ in range(runs):
            t0 = time.perf_counter_ns()
            sess.run(None, feed)
            times.append((time.perf_counter_ns() - t0) / 1e6)
        return times

    def fidelity(self, trial: Trial, sess: ort.InferenceSession) -> None:
        out = self._outputs(sess)
        ref_norm = float(np.linalg.norm(self.ref))
        trial.rel_error = float(np.linalg.norm(self.ref - out) / ref_norm) if ref_norm > 0 else 0.0
        if self.ref.shape[1] > 1:
            trial.agreement = float(np.mean(np.argmax(self.ref, 1) == np.argmax(out, 1)))

    def race(self, trials: list[Trial]) -> int:
        """ROUNDS interleaved rounds over FP32 and every trial's file (sessions opened here, closed after);
        returns the runs per round."""
        fp32 = self._open(self.fp32_path)
        sessions = [self._open(t.path) for t in trials]
        per_round = self.budget_s / ROUNDS / max(1, len(sessions) + 1)
        runs = runs_within(self.cost_s, per_round, min_runs=3, max_runs=50)
        for _ in range(ROUNDS):
            self.fp32_times += self._time(fp32, runs)
            for trial, sess in zip(trials, sessions, strict=True):
                trial.times += self._time(sess, runs)
        return runs

    @property
    def fp32_ms(self) -> float:
        return float(np.median(self.fp32_times))


def judge(trials: list[Trial], n: int) -> None:
    """Mark which built candidates hold fidelity relative to the standard one (the first that built)."""
    built = [t for t in trials if t.error is None and t.rel_error is not None]
    if not built:
        return
    ref = built[0]
    for t in built:
        rel_ok = t.rel_error <= max(1.5 * ref.rel_error, ref.rel_error + 0.02)
        agree_ok = t.agreement is None or ref.agreement is None or t.agreement >= ref.agreement - max(0.02, 1 / n)
        t.holds = bool(rel_ok and agree_ok)


def pick(trials: list[Trial]) -> Trial | None:
    """The fastest candidate that holds fidelity; the standard one (first built) unless another is at least
    ``MARGIN`` faster — near-ties are noise on a shared machine and the standard is the most accurate."""
    ok = [t for t in trials if t.error is None and t.holds and t.ms is not None]
    if not ok:
        return None
    best = min(ok, key=lambda t: t.ms)
    std = next((t for t in trials if t.error is None and t.ms is not None), None)
    if std is not None and std.holds and best.ms > (1 - MARGIN) * std.ms:
        return std
    return best


def quantised_any(path: Path) -> bool:
    """Whether the file ORT's quantiser wrote runs any layer in INT8 (a Gemm-only graph's dynamic INT8 is FP32)."""
    return any(n.op_type in QUANTISED_OPS for n in onnx.load_model(str(path), load_external_data=False).graph.node)


def slow_layers(fp32: Path, best: Path, cost_s: float, names: set[str]) -> list[str]:
    """Weight layers whose time in the INT8 file's per-layer profile exceeds their FP32 time."""
    runs = runs_within(cost_s, 0.5, min_runs=2, max_runs=20)
    a = profile_layers(fp32, threads=1, opt_level="all", runs=runs).table.set_index("node")["ms"]
    b = profile_layers(best, threads=1, opt_level="all", runs=runs).table.set_index("node")["ms"]
    total = float(a.sum())
    return [n for n in b.index if n in names and n in a.index and b[n] > 1.05 * a[n] and b[n] - a[n] > 0.005 * total]


def record(trials: list[Trial], skipped: list[dict[str, str]], chosen: Trial | None, fp32_ms: float, runs: int,
           n: int, vnni: bool | None, spent_s: float) -> dict[str, Any]:  # fmt: skip
    tried = []
    for t in trials:
        row = {"label": t.candidate.label, "why": t.candidate.why, "error": t.error, "ms": t.ms,
               "vs_fp32": (t.ms / fp32_ms) if t.ms else None, "rel_error": t.rel_error, "agreement": t.agreement,
               "holds": t.holds, "kept_fp32": list(t.candidate.exclude)}  # fmt: skip
        tried.append(row)
    return {"chosen": chosen.candidate.label if chosen else None, "fp32_ms": fp32_ms, "vnni": vnni, "tried": tried,
            "skipped": skipped, "probe": {"threads": 1, "opt_level": "all", "batch": 1, "rounds": ROUNDS,
                                          "runs_per_round": runs, "fidelity_samples": n},
            "search_s": spent_s, "candidate": asdict(chosen.candidate) if chosen else None}  # fmt: skip


def note(rec: dict[str, Any]) -> str:
    """One paragraph for the variant: what was chosen, why, and what else was tried."""
    rows = [r for r in rec["tried"] if r["ms"]]
    chosen = next((r for r in rows if r["label"] == rec["chosen"]), None)
    others = "; ".join(f"{r['label'].removeprefix('INT8 ')} {r['vs_fp32']:.2f}×" + ("" if r["holds"] else " (fidelity)")
                       for r in rows if r is not chosen)  # fmt: skip
    failed = [r["label"] for r in rec["tried"] if r["error"]]
    if chosen is None:
        return "INT8 search: no configuration built. " + "; ".join(f"{r['label']}: {r['error']}" for r in rec["tried"])
    if rec.get("restricted_to"):
        head = (f"{chosen['label']}: the format, types and granularity the INT8 search chose for the unpruned model "
                f"(layers it kept FP32 there are not carried over: pruning changes them; "
                f"{chosen['vs_fp32']:.2f}× FP32 latency here in a 1-thread probe)")
    else:
        head = (f"INT8 search chose {chosen['label']} ({chosen['vs_fp32']:.2f}× FP32 latency in a 1-thread probe, "
                f"fidelity within tolerance of the standard QDQ U8S8)")
    if chosen["vs_fp32"] >= 1.0:
        cpu = {False: "this CPU has no VNNI (8-bit dot products)", True: "even with VNNI",
               None: "VNNI not detected"}[rec["vnni"]]
        if rec.get("restricted_to"):
            head += f"; slower than FP32 here ({cpu}) with the only configuration tried on this pruned model"
        elif any(r["vs_fp32"] < 1.0 and not r["holds"] for r in rows):
            head += f"; slower than FP32 here ({cpu}): the INT8 configurations that ran faster lost fidelity"
        else:
            head += f"; every INT8 configuration tried was slower than FP32 here ({cpu})"
    tail = f". Also tried: {others}" if others else ""
    if failed:
        tail += f". Failed to build: {', '.join(failed)}"
    if rec["skipped"] and not rec.get("restricted_to"):
        tail += ". Not tried: " + "; ".join(f"{s['label']} ({s['why']})" for s in rec["skipped"])
    return head + tail + "."


def build(cand: Candidate, cal: Calibrated | None, pre: Path, out: Path) -> Path:
    if cand.kind == "dynamic":
        return build_dynamic(pre, out, cand.weight_type, cand.per_channel, cand.reduce_range, cand.exclude,
                             cand.op_types)  # fmt: skip
    assert cal is not None
    return build_static(cal, out, quant_format=cand.quant_format, activation_type=cand.activation_type,
                        weight_type=cand.weight_type, per_channel=cand.per_channel, reduce_range=cand.reduce_range,
                        exclude=cand.exclude)  # fmt: skip


def search(src: Path, pre: Path, cal: Calibrated | None, rows: dict[str, np.ndarray], d: Path, *,
           share: float, budget_s: float, probe_budget_s: float, only: tuple[str, ...] = (), per_channel: bool = True,
           extra: dict[str, np.ndarray] | None = None, has_conv: bool = False,
           tick: Callable[[float, str], None] = lambda f, m: None) -> tuple[Path | None, dict[str, Any]]:  # fmt: skip
    """Build, probe and judge the candidates against the FP32 file ``src`` (``pre``: its pre-processed form,
    which the candidates quantise; ``rows``: probe samples by input name, ``extra``: the other inputs at batch 1);
    (path of the chosen file or None, record)."""
    t0 = time.perf_counter()
    vnni = cpu_has_vnni()
    cands, skipped = base_candidates(vnni, share, cal is not None, has_conv)
    if not per_channel:  # opset 10-12 that onnx could not convert: per-tensor only
        cands = list({c.label.replace("per-channel", "per-tensor"): replace(
            c, per_channel=False, label=c.label.replace("per-channel", "per-tensor")) for c in cands}.values())
    if only:
        cands = [c for c in cands if c.label in only] or cands[:1]
    probe = Probe(src, rows, probe_budget_s, extra)
    trials: list[Trial] = []

    def attempt(cand: Candidate) -> Trial:
        trial = Trial(cand)
        try:
            trial.path = build(cand, cal, pre, d / f"cand{len(trials)}.onnx")
            if cand.kind == "dynamic" and not quantised_any(trial.path):
                raise PassUnavailableError("quantised no layer (ONNX Runtime's dynamic INT8 covers MatMul, not Gemm)")
            probe.fidelity(trial, make_session(trial.path, threads=1, opt_level="all"))  # closed on return
        except Exception as exc:  # noqa: BLE001 - a candidate that fails to build or open is recorded, not fatal
            trial.error = str(exc) if isinstance(exc, OptimError) else runtime_reason(exc, 160)
        trials.append(trial)
        tick(min(0.9, (time.perf_counter() - t0) / max(budget_s, 1e-3)), f"INT8 search: {cand.label}")
        return trial

    def within_budget(cand: Candidate) -> bool:
        if trials and time.perf_counter() - t0 > budget_s:
            skipped.append({"label": cand.label, "why": f"search time budget ({budget_s:g} s) spent"})
            return False
        return True

    # the standard (and dynamic, where it applies) first, whatever the budget, then the standard's slow layers kept FP32, then the
    # other formats/types, then the standard's first/last layers kept FP32; every one raced once, at the end
    head = [c for c in cands if c is cands[0] or c.kind == "dynamic"]
    rest = [c for c in cands if c not in head]
    for cand in head:  # always: dynamic is the usual winner on MatMul-heavy graphs and needs no calibration
        attempt(cand)
    spent = time.perf_counter() - t0 > budget_s  # the per-layer profiles (2 sessions) only within the budget
    slow, ends = _derived(trials[0] if trials else None, pre, probe, only, profile=not spent)
    if spent and slow == [] and trials and trials[0].error is None and not only:
        skipped.append({"label": f"{trials[0].candidate.label} + slow layers FP32",
                        "why": f"search time budget ({budget_s:g} s) spent before the per-layer profile"})
    for cand in [*slow, *rest, *ends]:
        if within_budget(cand):
            attempt(cand)
    live = [t for t in trials if t.error is None]
    runs = probe.race(live) if live else 0
    judge(trials, probe.n)
    chosen = pick(trials)
    rec = record(trials, skipped, chosen, probe.fp32_ms if probe.fp32_times else 0.0, runs, probe.n, vnni,
                 time.perf_counter() - t0)  # fmt: skip
    rec["restricted_to"] = list(only)
    return (chosen.path if chosen else None), rec


def _derived(std: Trial | None, pre: Path, probe: Probe, only: tuple[str, ...], profile: bool = True
             ) -> tuple[list[Candidate], list[Candidate]]:  # fmt: skip
    """From the standard candidate: (its slow quantised layers kept FP32 — found by a per-layer profile, only
    when ``profile`` —, its first/last layers kept FP32)."""
    if std is None or std.error is not None or only:
        return [], []
    model = onnx.load_model(str(pre), load_external_data=False)
    refs = weight_refs(model)
    del model
    names = {r.node for r in refs}
    try:
        qdq = std.candidate.quant_format == "qdq"
        slow = slow_layers(pre, std.path, probe.cost_s, names) if qdq and profile else []
    except Exception:  # noqa: BLE001 - no per-layer profile: this candidate is simply not built
        slow = []
    base = std.candidate.label
    first = [replace(std.candidate, label=f"{base} + {len(slow)} slow layer(s) FP32", exclude=tuple(slow),
                     why="layers whose INT8 kernels ran slower than FP32 in a per-layer profile")] if slow else []
    last = [replace(std.candidate, label=f"{base} + first/last layers FP32", exclude=(refs[0].node, refs[-1].node),
                    why="the first layer (few input channels) and the classifier often gain least from INT8")
            ] if len(refs) >= 3 else []  # fmt: skip
    return first, last
