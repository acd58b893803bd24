"""Names of bit-widths and pruning kinds: one spelling for the sweep's variant labels, the charts' legends and
hovers, the Learn page's tables and the CLI (the stored label of a variant is built from these)."""

from __future__ import annotations

__all__ = ["MIXED_BITS", "bits_label", "collapse_note", "interval_note", "kind_label", "metric_axis", "metric_short",
           "variant_label"]

MIXED_BITS = 0  # bits = 0: automatic per-layer mixed precision (packed size of uniform INT4)
_BITS = {32: "FP32", 16: "FP16", MIXED_BITS: "auto mixed ≤INT4"}
_KINDS = {"none": "dense", "structured": "struct", "unstructured": "unstruct", "auto": "auto-struct"}


def bits_label(bits: int) -> str:
    """FP32, FP16, INT8, INT4, INT3, …; 0 is the automatic per-layer mixed precision."""
    return _BITS.get(int(bits), f"INT{int(bits)}")


def kind_label(kind: str) -> str:
    """Short name of a pruning kind (dense = not pruned)."""
    return _KINDS.get(kind, kind)


def variant_label(kind: str, ratio: float, bits: int, distilled: bool = False, opt_level: str | None = None) -> str:
    """'dense · FP32', 'struct 50% · distilled · INT8', … with ' · opt LEVEL' when the level tells variants apart."""
    head = "dense" if ratio == 0 else f"{kind_label(kind)} {ratio:.0%}"
    kd = " · distilled" if distilled else ""
    return f"{head}{kd} · {bits_label(bits)}" + (f" · opt {opt_level}" if opt_level else "")


def metric_short(metric_name: str) -> str:
    """The metric's column head in narrow tables: top-1, agree, cosine."""
    return "top-1" if "accuracy" in metric_name else "cosine" if "cosine" in metric_name else "agree"


def metric_axis(metric_name: str) -> str:
    """The metric's axis title on charts."""
    if "accuracy" in metric_name:
        return "Accuracy (top-1, %)"
    return "Output cosine with baseline (%)" if "cosine" in metric_name else "Agreement with baseline (%)"


def collapse_note(cosine: float | None, worst_output: str | None) -> str:
    """The flag of a variant whose outputs no longer follow the original's (``collapsed``)."""
    where = f" on output {worst_output!r}" if worst_output else ""
    value = f"cosine {cosine:.3f}" if cosine is not None and cosine == cosine else "non-finite outputs"
    return f"fidelity collapsed ({value}{where}): it no longer computes what the original does; not usable"


def interval_note(metric_name: str) -> str:
    """How the 95 % interval of the metric a table or chart shows was computed (help text beside the numbers)."""
    if "accuracy" in metric_name:
        return "95 % Wilson interval of top-1 accuracy over the evaluation samples"
    if "cosine" in metric_name:
        return ("Cosine = per input, the lowest cosine similarity between the variant's and the original model's "
                "outputs over all outputs (boxes, scores, maps, embeddings: argmax agreement does not apply), "
                "averaged over the inputs, in %; 95 % bootstrap interval over the evaluation inputs; 99 % of the "
                "original or more counts as not significantly below it")
    return ("Agreement = share of inputs where the variant's top-1 class equals the original model's (no labels); "
            "95 % Wilson interval over the evaluation inputs")
