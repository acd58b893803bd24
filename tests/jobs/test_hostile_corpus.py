"""The hostile corpus (tests/hostile_corpus.py) through the real job path: no payload runs, nothing outside
the upload is read, every file ends in a result or an OptimError message within its job's limits."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hostile_corpus import HONEY, Case, generate
from onnx import numpy_helper

from optim.errors import OptimError
from optim.handle import ModelHandle
from optim.jobs import JobSpec, Limits, LocalProcessExecutor, codec

LIMITS = Limits(address_space_bytes=3 * 2**30, cpu_s=60, wall_s=30)
SLACK_S = 20  # worker start + transfer on a busy 2-core machine
MIN_PER_FAMILY = {"pickle": 60, "onnx-external": 60, "onnx-bomb": 10, "damaged": 60, "zip": 15, "npz": 10,
                  "csv": 8, "image-zip": 6, "pt2-expr": 20, "torchscript": 4}
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Case], Path, Path]:
    base = tmp_path_factory.mktemp("hostile")
    server_cwd, markers = base / "server", base / "markers"
    for d in (server_cwd, markers, base / "elsewhere"):
        d.mkdir()
    honey = [base / "elsewhere" / "honey.txt", server_cwd / "honey.txt"]
    for h in honey:
        h.write_bytes(HONEY)
    real = (REPO / "sample_models" / "mlp_tabular.onnx").read_bytes()
    return generate(base / "corpus", markers, honey, real), server_cwd, markers


@pytest.fixture(scope="module")
def executor() -> LocalProcessExecutor:
    ex = LocalProcessExecutor(max_workers=1)
    yield ex
    ex.shutdown()


@pytest.fixture(scope="module")
def probes(tiny_mlp: ModelHandle, tiny_cnn: ModelHandle) -> dict[str, ModelHandle]:
    return {"mlp12": tiny_mlp, "cnn16": tiny_cnn}


def _leaks(data: bytes) -> bool:
    return HONEY in data or HONEY.lower() in data


def _model_leaks(blob: bytes) -> bool:
    handle = codec.handle_from({"model": blob})
    arrays = [numpy_helper.to_array(t) for t in handle.model.graph.initializer]
    return _leaks(blob) or any(_leaks(a.tobytes()) or (a.dtype.kind in "fiu" and _leaks(a.astype(np.uint8).tobytes()))
                               for a in arrays)


def _run(case: Case, executor: LocalProcessExecutor, probes: dict[str, ModelHandle]) -> tuple[str, float]:
    """('ok' | 'refused: <message>', seconds); fails the test on any leak or non-OptimError."""
    data = case.path.read_bytes()
    if case.kind == "model":  # as the dashboard does: load, with synthetic inputs for fidelity
        spec = JobSpec("load_model", {"filename": case.path.name, "n_synthetic": 128}, {"data": data},
                       limits=LIMITS, label=case.family)
    else:
        probe = probes[case.model]
        spec = JobSpec("load_data", {"filename": case.path.name, "model": codec.handle_facts(probe)},
                       {"data": data, **codec.handle_blobs(probe)}, limits=LIMITS, label=case.family)
    t0 = time.monotonic()
    try:
        res = executor.run(spec).unwrap()
    except OptimError as err:
        msg = str(err)
        assert not _leaks(msg.encode()), (case, msg)
        assert "Traceback" not in msg and len(msg) < 1500, (case, msg)
        return f"refused: {msg}", time.monotonic() - t0
    elapsed = time.monotonic() - t0
    if case.kind == "model":
        assert not _model_leaks(res.blobs["model"]), case
        if case.family == "onnx-bomb":  # what loads must also be measured safely: the baseline job runs it
            facts = res.value["handle"]
            t1 = time.monotonic()
            try:
                executor.run(JobSpec("baseline", {"model": facts, "budget_s": 0.1}, {"model": res.blobs["model"]},
                                     limits=LIMITS, label="baseline")).unwrap()
            except OptimError as err:
                assert "Traceback" not in str(err) and len(str(err)) < 1500, (case, str(err))
            elapsed = max(elapsed, time.monotonic() - t1)
    else:
        ds = codec.dataset_from(res.value["data"], res.blobs, "data")
        assert not _leaks(ds.x.tobytes()) and not _leaks(np.clip(ds.x, 0, 255).astype(np.uint8).tobytes()), case
    return "ok", elapsed


def _check(cases: list[Case], executor: LocalProcessExecutor, probes: dict[str, ModelHandle],
           markers: Path) -> Counter:
    outcomes: Counter = Counter()
    for case in cases:
        outcome, seconds = _run(case, executor, probes)
        assert seconds < LIMITS.wall_s + SLACK_S, (case, outcome, seconds)
        outcomes[(case.family, outcome.split(":")[0])] += 1
    assert not list(markers.iterdir()), f"payloads ran: {sorted(p.name for p in markers.iterdir())}"
    return outcomes


def test_corpus_has_at_least_300_files_in_every_family(corpus: tuple[list[Case], Path, Path]) -> None:
    counts = Counter(c.family for c in corpus[0])
    assert sum(counts.values()) >= 300, counts
    for family, n in MIN_PER_FAMILY.items():
        assert counts[family] >= n, (family, counts)


def test_a_few_of_every_family_are_refused_or_loaded_safely(corpus, executor, probes,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    cases, server_cwd, markers = corpus
    monkeypatch.chdir(server_cwd)  # the honey file sits in the server's working directory
    picked = [c for fam in MIN_PER_FAMILY if fam != "torchscript" for c in [x for x in cases if x.family == fam][:2]]
    _check(picked, executor, probes, markers)


@pytest.mark.slow
def test_whole_corpus_no_payload_no_leak_no_hang(corpus, executor, probes, monkeypatch: pytest.MonkeyPatch) -> None:
    cases, server_cwd, markers = corpus
    monkeypatch.chdir(server_cwd)
    outcomes = _check(cases, executor, probes, markers)
    # every payload-carrying family is refused outright, never loaded
    for family in ("pickle", "pt2-expr", "onnx-external", "torchscript"):
        assert outcomes[(family, "ok")] == 0, (family, outcomes)
    print(dict(outcomes))
