"""Fidelity that fits the output: how closely a variant's outputs follow the original model's, without labels.

Every model output is classified from its shape, dtype, name and the op that produces it
(:func:`classify_output`): ``class_logits`` (N × classes scores, softmax probabilities), ``labels`` (one integer
class per sample), ``boxes``, ``scores`` (detector confidences), ``sequence`` (per-token states or logits),
``embedding`` (one vector per sample), ``map`` (dense per-pixel output: segmentation, text-detection maps) and
``other``. Argmax agreement means something only for class outputs, so it is the judged metric only when every
compared output is ``class_logits`` or ``labels``; otherwise the worst output's cosine similarity is (with
SQNR and relative error beside it), so a YOLO head at cosine 0.9999 is no longer "3 % agreement" and an FP16
DBNet at cosine 0.03 is no longer fine. A variant whose cosine falls below :data:`COLLAPSE_COSINE` on any
output or whose relative error reaches :data:`COLLAPSE_REL_ERROR` (when cosine judges it), or whose outputs hold
NaN/inf, is ``collapsed``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import onnx

from optim.errors import ShapeMismatchError

__all__ = [
    "AGREEMENT_METRIC", "CLASS_KINDS", "COLLAPSE_COSINE", "COLLAPSE_REL_ERROR", "COSINE_METRIC", "KIND_LABELS", "Fidelity", "Reference", "as_rows",
    "RECORD_COLUMNS", "bootstrap_mean_interval", "classify_output", "fidelity", "fidelity_record",
    "output_fidelity", "output_kinds",
]

COLLAPSE_COSINE = 0.9  # below this on any output a variant no longer computes what the original did
COLLAPSE_REL_ERROR = 1.0  # an error as large as the output itself (cosine cannot see a rescaled output)
SQNR_CAP_DB = 300.0  # identical outputs: SQNR is infinite; stored as this cap
AGREEMENT_METRIC, COSINE_METRIC = "agreement", "cosine"
KIND_LABELS = {"class_logits": "class logits", "labels": "class labels", "boxes": "boxes", "scores": "scores",
               "sequence": "sequence", "embedding": "embedding", "map": "dense map", "other": "other"}
CLASS_KINDS = ("class_logits", "labels")
_BOX = re.compile(r"box|bbox|anchor|coord|loc(?!al)|dets?\b|detection")
_SCORE = re.compile(r"score|conf|obj")
_EMBED = re.compile(r"embed|pool|feature|vector|sentence|emb\b|hidden|encoder|last_hidden")
_SEQ = re.compile(r"hidden|state|token|seq|encoder|logits")
_PROBS = {"Softmax", "LogSoftmax"}
_NORMS = {"LpNormalization"}


def as_rows(a: np.ndarray) -> np.ndarray:
    """``a`` as float64 rows, one per sample (N × everything else)."""
    a = np.asarray(a, dtype=np.float64)
    return a.reshape(len(a), -1) if a.ndim != 2 else a


@dataclass(frozen=True)
class Fidelity:
    """How closely a variant's outputs follow the reference's (no labels needed).

    ``top1_agreement``: argmax agreement of the class outputs (None when no compared output is a class output);
    ``cosine``/``cosine_lo``/``cosine_hi``: mean per-sample cosine of the worst output, 95 % bootstrap interval;
    ``rel_error``: the largest ||ref − x|| / ||ref|| over outputs; ``sqnr_db``: the smallest signal-to-
    quantisation-noise ratio; ``metric``: which of agreement / cosine judges the variant; ``kinds``:
    "name:kind" per compared output; ``worst_output``: the output with the lowest cosine; ``collapsed``: the
    cosine fell below :data:`COLLAPSE_COSINE` or the error reached :data:`COLLAPSE_REL_ERROR` (or the outputs
    are not finite)."""

    top1_agreement: float | None
    cosine: float
    rel_error: float
    cosine_lo: float | None = None
    cosine_hi: float | None = None
    metric: str = AGREEMENT_METRIC
    sqnr_db: float | None = None
    kinds: str = ""
    worst_output: str | None = None
    collapsed: bool = False


class Reference(dict):
    """The original model's per-sample outputs by name, with their kinds (``.kinds``, :func:`output_kinds` of the
    original): what a sweep compares every variant with. A dict, so it pickles to workers as it is."""

    def __init__(self, outputs: Mapping[str, np.ndarray], kinds: Mapping[str, str]) -> None:
        super().__init__(outputs)
        self.kinds = dict(kinds)


def _producers(model: onnx.ModelProto) -> dict[str, str]:
    return {o: n.op_type for n in model.graph.node for o in n.output}


def classify_output(name: str, shape: tuple[int | str, ...], dtype: np.dtype, producer: str = "",
                    has_boxes: bool = False) -> str:
    """The kind of one output (see the module docstring) from its name, shape (batch first), dtype and the op
    type producing it; ``has_boxes``: the model has a box output, so rank-2 scores are detector scores."""
    lname, rank, kind = name.lower(), len(shape), np.dtype(dtype).kind
    last = shape[-1] if shape else None
    if kind in "iub":
        return "labels" if rank == 1 else "sequence" if rank == 2 else "other"
    if kind != "f" or rank <= 1:
        return "other"
    if _BOX.search(lname) or (rank == 3 and last == 4):
        return "boxes"
    if _SCORE.search(lname) and (rank >= 3 or has_boxes):
        return "scores"
    if rank >= 4:
        return "map"
    if rank == 3:
        return "sequence" if _SEQ.search(lname) or producer in _PROBS else "other"  # per-token class scores
    if producer in _NORMS or (_EMBED.search(lname) and producer not in _PROBS):
        return "embedding"
    if producer == "Sigmoid" and has_boxes:
        return "scores"
    if isinstance(last, int) and last < 2:
        return "other"  # one score per sample: regression or a binary logit, no argmax
    return "class_logits"


def output_kinds(model: onnx.ModelProto) -> dict[str, str]:
    """Output name → kind for every graph output, in graph order."""
    prod = _producers(model)
    shapes = {}
    for vi in model.graph.output:
        tt = vi.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tt.shape.dim)
        try:
            dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type))
        except (KeyError, TypeError, ValueError):
            dtype = np.dtype(object)
        shapes[vi.name] = (dims, dtype)
    names = list(shapes)
    has_boxes = any(classify_output(n, *shapes[n], prod.get(n, "")) == "boxes" for n in names)
    kinds = {n: classify_output(n, *shapes[n], prod.get(n, ""), has_boxes=has_boxes) for n in names}
    probs = {n for n in names if prod.get(n) in _PROBS and kinds[n] == "class_logits"}
    if probs:  # beside a softmax head, raw rank-2 outputs that do not feed it are regressions (MTCNN boxes)
        fed = {i for node in model.graph.node if node.op_type in _PROBS and set(node.output) & probs
               for i in node.input}
        kinds.update({n: "other" for n in names if kinds[n] == "class_logits" and n not in probs and n not in fed})
    return kinds


def bootstrap_mean_interval(values: np.ndarray, resamples: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95 % percentile-bootstrap interval of the mean of ``values`` (seeded: the same inputs give the same
    interval); the cosine has no closed-form interval like Wilson's for counts."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size < 2:
        m = float(v.mean()) if v.size else 1.0
        return m, m
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for start in range(0, resamples, 100):  # 100 resamples at a time bounds the index array
        n = min(100, resamples - start)
        means[start:start + n] = v[rng.integers(0, v.size, size=(n, v.size))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def _row_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-row cosine; rows that are both zero agree (1), one zero row or non-finite values do not (0)."""
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    dots = np.sum(a * b, axis=1)
    both_zero = (na == 0) & (nb == 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = np.where(both_zero, 1.0, np.where((na == 0) | (nb == 0), 0.0, dots / (na * nb)))
    cos = np.where(np.isfinite(cos), cos, 0.0)
    return np.clip(cos, -1.0, 1.0)


def _errors(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(relative error ||a − b|| / ||a||, SQNR in dB) of one output; non-finite outputs are infinitely wrong."""
    if not np.all(np.isfinite(b)):
        return math.inf, -SQNR_CAP_DB
    ref_norm, diff = float(np.linalg.norm(a)), float(np.linalg.norm(a - b))
    rel = diff / ref_norm if ref_norm > 0 else (0.0 if diff == 0 else math.inf)
    sqnr = SQNR_CAP_DB if diff == 0 else (-SQNR_CAP_DB if ref_norm == 0 else 20 * math.log10(ref_norm / diff))
    return rel, float(min(SQNR_CAP_DB, sqnr))


def fidelity(ref_logits: np.ndarray, logits: np.ndarray) -> Fidelity:
    """Top-1 agreement, mean row cosine similarity and relative error ||ref − x|| / ||ref|| of one class output."""
    a, b = as_rows(ref_logits), as_rows(logits)
    if a.shape != b.shape:
        raise ShapeMismatchError(f"Reference outputs {a.shape} and variant outputs {b.shape} differ in shape.")
    if len(a) == 0:
        return Fidelity(1.0, 1.0, 0.0, sqnr_db=SQNR_CAP_DB)
    agree = float(np.mean(np.argmax(a, axis=1) == np.argmax(b, axis=1)))
    cos = _row_cosine(a, b)
    rel, sqnr = _errors(a, b)
    lo, hi = bootstrap_mean_interval(cos)
    return Fidelity(agree, float(np.mean(cos)), rel, lo, hi, sqnr_db=sqnr)


def _paired(ref: Mapping[str, np.ndarray], out: Mapping[str, np.ndarray]) -> list[tuple[str, str]]:
    """(reference name, variant name) pairs: by name when the variant has every reference output, else by
    position (a rebuilt graph may rename its outputs)."""
    if all(k in out for k in ref):
        return [(k, k) for k in ref]
    if len(out) != len(ref):
        raise ShapeMismatchError(f"The variant has {len(out)} outputs ({', '.join(list(out)[:4])}) but the original "
                                 f"has {len(ref)} ({', '.join(list(ref)[:4])}); fidelity needs the same outputs.")
    return list(zip(ref, out, strict=True))


def output_fidelity(ref: Mapping[str, np.ndarray], out: Mapping[str, np.ndarray],
                    kinds: Mapping[str, str]) -> Fidelity:
    """Fidelity over every compared output (``ref``: the original's outputs by name, N samples each; ``kinds``
    from :func:`output_kinds` of the original — a variant's graph may end in Casts or QDQ nodes that hide what
    produced an output). Per sample the worst output's cosine counts; the mean of those over samples is
    ``cosine`` with its bootstrap interval. Agreement: the smallest argmax (or label) agreement of the class
    outputs; it judges the variant only when all compared outputs are class outputs."""
    pairs = _paired(ref, out)
    if not pairs:
        raise ShapeMismatchError("The model has no per-sample outputs to compare; fidelity cannot be measured.")
    cos_rows, agree, rels, sqnrs, worst = None, [], [], [], (math.inf, None)
    described = []
    for rname, vname in pairs:
        kind = kinds.get(rname, kinds.get(vname, "other"))
        described.append(f"{rname}:{kind}")
        a, b = np.asarray(ref[rname]), np.asarray(out[vname])
        if a.shape != b.shape:
            raise ShapeMismatchError(f"Output {rname!r} has shape {b.shape} in the variant but {a.shape} in the "
                                     "original; a compressed variant must keep its output shapes.")
        if kind == "labels":
            agree.append(float(np.mean(a.reshape(len(a), -1) == b.reshape(len(b), -1))) if len(a) else 1.0)
        ra, rb = as_rows(a), as_rows(b)
        if kind == "class_logits" and len(ra):
            agree.append(float(np.mean(np.argmax(ra, axis=1) == np.argmax(rb, axis=1))))
        cos = _row_cosine(ra, rb) if len(ra) else np.ones(0)
        rel, sqnr = _errors(ra, rb)
        rels.append(rel)
        sqnrs.append(sqnr)
        mean_cos = float(np.mean(cos)) if cos.size else 1.0
        if mean_cos < worst[0]:
            worst = (mean_cos, rname)
        cos_rows = cos if cos_rows is None else np.minimum(cos_rows, cos)
    classes_only = all(kinds.get(r, kinds.get(v, "other")) in CLASS_KINDS for r, v in pairs)
    cosine = float(np.mean(cos_rows)) if cos_rows is not None and cos_rows.size else 1.0
    lo, hi = bootstrap_mean_interval(cos_rows if cos_rows is not None else np.ones(0))
    metric = AGREEMENT_METRIC if classes_only and agree else COSINE_METRIC
    finite = all(bool(np.all(np.isfinite(np.asarray(out[v], dtype=np.float64)))) for _, v in pairs)
    collapsed = not finite or (metric == COSINE_METRIC and (worst[0] < COLLAPSE_COSINE
                                                            or max(rels) >= COLLAPSE_REL_ERROR))
    return Fidelity(min(agree) if agree else None, cosine, max(rels), lo, hi, metric=metric, sqnr_db=min(sqnrs),
                    kinds=", ".join(described), worst_output=worst[1], collapsed=bool(collapsed))


RECORD_COLUMNS = ("agreement", "cosine", "cosine_lo", "cosine_hi", "rel_error", "fidelity_metric", "sqnr_db",
                  "output_kinds", "worst_output", "fidelity_collapsed")


def fidelity_record(fid: Fidelity | None) -> dict[str, object]:
    """The flat record of a fidelity the sweep store keeps (:data:`RECORD_COLUMNS`; all None without one)."""
    if fid is None:
        return dict.fromkeys(RECORD_COLUMNS)
    return {"agreement": fid.top1_agreement, "cosine": fid.cosine, "cosine_lo": fid.cosine_lo,
            "cosine_hi": fid.cosine_hi, "rel_error": fid.rel_error, "fidelity_metric": fid.metric,
            "sqnr_db": fid.sqnr_db, "output_kinds": fid.kinds, "worst_output": fid.worst_output,
            "fidelity_collapsed": int(fid.collapsed)}
