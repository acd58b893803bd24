"""Names of bit-widths and pruning kinds: one spelling for the sweep's variant labels, the charts' legends and
hovers, the Learn page's tables and the CLI (the stored label of a variant is built from these)."""

from __future__ import annotations

__all__ = ["MIXED_BITS", "bits_label", "interval_note", "kind_label", "variant_label"]

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


def interval_note(metric_name: str) -> str:
    """How the 95 % interval of the metric a table or chart shows was computed (help text beside the numbers)."""
    if "accuracy" in metric_name:
        return "95 % Wilson interval of top-1 accuracy over the evaluation samples"
    return ("Agreement = share of inputs where the variant's top-1 class equals the original model's (no labels); "
            "95 % Wilson interval over the evaluation inputs")
