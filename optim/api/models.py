"""Models and data for the dashboard: bundled samples, uploads, evaluation data, the summary and the measured
baseline of the loaded model."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import pandas as pd

from optim.errors import ConfigError, OptimError
from optim.handle import ModelHandle
from optim.io import load as model_io
from optim.io import model_data, samples, splits
from optim.io.data import Dataset
from optim.io.named_inputs import synthesised
from optim.io.sources import CALIB_SAMPLES, calibration_subset
from optim.jobs import client as jobrun
from optim.jobs import codec
from optim.measure.fidelity import CLASS_KINDS, KIND_LABELS, output_kinds

__all__ = ["DEMO_SAMPLE", "Loaded", "attach_data", "attach_training", "baseline", "for_distillation", "list_samples", "load_sample",
           "load_upload", "parse_shapes", "summarize", "synthetic_dataset"]

DEMO_SAMPLE = "resnet_digits"


@dataclass(frozen=True, eq=False)
class Loaded:
    """A model ready for the dashboard: the handle plus its evaluation and calibration data."""

    handle: ModelHandle
    test: Dataset | None  # may carry y=None: fidelity only
    calib: Dataset | None
    origin: str  # "sample" or "upload"
    label: str
    train: Dataset | None = None  # a training split separate from ``test`` (samples, a training file): distillation
    split: str = ""  # how ``train`` and ``test`` were made apart (:func:`for_distillation`), stated on the page

    @property
    def key(self) -> str:
        return f"{self.handle.content_hash}:{getattr(self.test, 'content_hash', 'none')}"

    @property
    def own_data(self) -> bool:
        """True when the evaluation data is the user's (or a sample's), not synthesised inputs."""
        return self.test is not None and self.test.name != model_data.SYNTHETIC_NAME

    @property
    def has_labels(self) -> bool:
        return self.test is not None and self.test.y is not None

    @property
    def synthesised_inputs(self) -> str:
        """One sentence naming each input the data does not give and the value fed instead ("" when none)."""
        shown = synthesised(self.handle.model, self.test)
        if not shown:
            return ""
        return ("Not in the data, so synthesised: " + "; ".join(shown) + " — set a scalar input with a 0-d array "
                "under its name in the npz (e.g. sr=np.int64(8000)), any other with one row per sample.")

    @property
    def judged_by(self) -> str:
        """What sweeps of this model are judged on, in words (labels: accuracy; class outputs: agreement;
        boxes, maps, embeddings, sequences: the outputs' cosine; :mod:`optim.measure.fidelity`)."""
        if self.has_labels:
            return "labelled samples (top-1 accuracy)"
        kinds = output_kinds(self.handle.model)
        if kinds and all(k in CLASS_KINDS for k in kinds.values()):
            return "unlabelled inputs (agreement with the original model's top-1 class)"
        shown = ", ".join(f"{n} = {KIND_LABELS.get(k, k)}" for n, k in list(kinds.items())[:4])
        return f"unlabelled inputs (output cosine with the original model, all outputs: {shown})"


def list_samples() -> list[dict[str, Any]]:
    """Bundled samples as dicts (name, description, arch, dataset, fp32_top1, n_test); [] if none built."""
    try:
        infos = samples.list_samples()
    except OptimError:
        return []
    return [dataclasses.asdict(info) for info in infos]


def load_sample(name: str, calib_n: int = CALIB_SAMPLES) -> Loaded:
    """A bundled sample with its test split, training split and calibration subset (:mod:`optim.io.sources`)."""
    handle, test, train = samples.load_sample(name)
    return Loaded(handle=handle, test=test, calib=calibration_subset(train, calib_n), origin="sample", label=name,
                  train=train)


def parse_shapes(text: str) -> dict[str, tuple[int, ...]]:
    """``"input=1,3,224,224; mask=1,128"`` → dict; empty text → {}."""
    out: dict[str, tuple[int, ...]] = {}
    for part in [p.strip() for p in text.replace("\n", ";").split(";") if p.strip()]:
        name, shape = model_io.parse_input_shape(part)
        out[name] = tuple(shape)
    return out


def load_upload(data: bytes, filename: str, shapes_text: str = "", n_synthetic: int = 128) -> Loaded:
    """Load an uploaded model in a worker process (limits; TorchScript/.pt2 converted in the sandbox); without
    evaluation data the test set is synthetic (fidelity only)."""
    shapes = parse_shapes(shapes_text) or None
    res = jobrun.run("load_model", f"loading {filename[:80]}", {"filename": filename, "input_shapes": shapes,
                                                                "n_synthetic": n_synthetic}, {"data": data})
    handle = codec.handle_from(res.blobs, res.value["handle"])
    handle = handle if handle.name.startswith("upload:") else dataclasses.replace(handle, name=f"upload:{filename}")
    test = codec.dataset_from(res.value.get("synthetic"), res.blobs, "synthetic")
    return Loaded(handle=handle, test=test, calib=test, origin="upload", label=filename)


def synthetic_dataset(handle: ModelHandle, n: int) -> Dataset | None:
    """Synthesised inputs (no labels) so an upload without data can still be compared by fidelity; None when
    an input cannot be synthesised (the page then asks for data)."""
    try:
        return model_data.synthetic_dataset(handle, n)
    except OptimError:
        return None


def attach_data(loaded: Loaded, data: bytes, filename: str) -> Loaded:
    """Evaluation data for an uploaded model, read and checked in a worker; raises ShapeMismatchError /
    DataFormatError with advice."""
    res = jobrun.run("load_data", f"reading {filename[:80]}", {"filename": filename}, {"data": data},
                     handle=loaded.handle)
    ds = codec.dataset_from(res.value["data"], res.blobs, "data")
    calib = calibration_subset(ds)
    return Loaded(handle=loaded.handle, test=ds, calib=calib, origin=loaded.origin, label=loaded.label)


def for_distillation(loaded: Loaded, seed: int = splits.DEFAULT_SEED,
                     held_out: float = splits.HELD_OUT_FRACTION) -> Loaded:
    """The data a distillation sweep runs on, the student never seeing the evaluation rows: a separate training
    split (a sample's, or an uploaded training file) against the whole evaluation data, else the uploaded data
    split (seeded) into a distillation split and a held-out split (:mod:`optim.io.splits`). Calibration then
    comes from the distillation side. ``.split`` states it ("N for distillation, M held out, seed S")."""
    if not loaded.own_data:
        raise ConfigError("Distillation needs data of your own: upload evaluation data (labelled or not; it is "
                          "split into a distillation part and a held-out part) or a training file on Home, or "
                          "switch distillation off.")
    if loaded.train is not None:
        part = splits.separate_training(loaded.train, loaded.test, loaded.train.name)
        calib = loaded.calib if part.dropped == 0 and loaded.calib is not None else calibration_subset(part.train)
    else:
        part = splits.split_for_distillation(loaded.test, seed, held_out)
        calib = calibration_subset(part.train)
    return dataclasses.replace(loaded, test=part.test, train=part.train, calib=calib, split=part.sentence)


def attach_training(loaded: Loaded, data: bytes, filename: str) -> Loaded:
    """A separate training file for distillation (labels optional), read and checked in a worker like evaluation
    data; the evaluation data stays whole and held out (:func:`for_distillation`)."""
    res = jobrun.run("load_data", f"reading {filename[:80]}", {"filename": filename}, {"data": data},
                     handle=loaded.handle)
    ds = codec.dataset_from(res.value["data"], res.blobs, "data")
    return dataclasses.replace(loaded, train=dataclasses.replace(ds, name=filename[:120]) if ds is not None else None)


def summarize(loaded: Loaded) -> dict[str, Any]:
    """{"facts": dict of headline numbers, "ops": DataFrame(op_type, count), "layers": DataFrame} (worker)."""
    out = jobrun.run("summarize", f"summarising {loaded.label[:80]}", handle=loaded.handle).value
    ops = pd.DataFrame(out["ops"], columns=["op_type", "count"])
    return {"facts": out["facts"], "ops": ops, "layers": codec.frame_from(out["layers"])}


def baseline(loaded: Loaded, eval_limit: int | None = 300, budget_s: float = 0.25) -> dict[str, Any]:
    """Measured baseline (a worker's ``baseline`` job, :func:`optim.measure.model.measure_model`): accuracy ± 95 %
    interval (or None without labels) and batch-1 latency."""
    test = loaded.test if loaded.has_labels else None
    return dict(jobrun.run("baseline", f"measuring {loaded.label[:80]}", {"eval_limit": eval_limit,
                                                                          "budget_s": budget_s},
                           handle=loaded.handle, datasets={"test": test}).value)
