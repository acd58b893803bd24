"""Public-architecture reference graphs (ResNet-18/50, MobileNetV2, BERT-shaped encoders, an opset-9 LeNet).

The architectures are written here in plain torch because torchvision is not a dependency of this
project and weights must never be downloaded: the graphs carry random (seeded) weights and serve only
as realistic *structures* for loader, summary, pruning and hardware-estimator tests. Layer layouts
follow the original papers (He et al. 2015, Sandler et al. 2018) with ImageNet input 1×3×224×224,
so MAC counts can be checked against published figures (ResNet-18 ≈ 1.8 G, ResNet-50 ≈ 4.1 G,
MobileNetV2 ≈ 0.30 G). ``bert_base`` / ``bert_tiny`` are BERT-shaped encoders on embedded inputs
(:mod:`optim.reference.encoder`; BERT-base at 128 tokens ≈ 11 GMACs, 340 MB of FP32 weights).

``lenet_opset9`` is built directly with ``onnx.helper`` so it looks like a graph produced by an older
tool: opset 9, a BatchNormalization node that is not folded into the conv, and a Flatten.
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from optim.errors import ConfigError
from optim.io.export import torch_to_onnx
from optim.reference.encoder import ENCODER_SHAPES, build_encoder, example_shape

ZOO_NAMES: tuple[str, ...] = ("resnet18", "resnet50", "mobilenet_v2", "bert_base", "bert_tiny", "lenet_opset9")
IMAGENET_SHAPE = (1, 3, 224, 224)


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: nn.Module | None = None):
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act is not None:
        layers.append(act)
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        self.conv1 = _conv_bn(cin, width, 3, stride, act=nn.ReLU())
        self.conv2 = _conv_bn(width, width, 3)
        cout = width * self.expansion
        self.down = _conv_bn(cin, cout, 1, stride) if stride != 1 or cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv2(self.conv1(x)) + self.down(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        cout = width * self.expansion
        self.conv1 = _conv_bn(cin, width, 1, act=nn.ReLU())
        self.conv2 = _conv_bn(width, width, 3, stride, act=nn.ReLU())
        self.conv3 = _conv_bn(width, cout, 1)
        self.down = _conv_bn(cin, cout, 1, stride) if stride != 1 or cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv3(self.conv2(self.conv1(x))) + self.down(x))


class ResNet(nn.Module):
    def __init__(self, block: type[BasicBlock] | type[Bottleneck], depths: list[int], classes: int = 1000):
        super().__init__()
        self.stem = nn.Sequential(_conv_bn(3, 64, 7, 2, act=nn.ReLU()), nn.MaxPool2d(3, 2, 1))
        stages: list[nn.Module] = []
        cin = 64
        for i, (width, depth) in enumerate(zip((64, 128, 256, 512), depths, strict=True)):
            blocks = []
            for j in range(depth):
                blocks.append(block(cin, width, 2 if (j == 0 and i > 0) else 1))
                cin = width * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.stages(self.stem(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(_conv_bn(cin, hidden, 1, act=nn.ReLU6()))
        layers += [_conv_bn(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6()), _conv_bn(hidden, cout, 1)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


class MobileNetV2(nn.Module):
    # (expansion t, channels c, repeats n, stride s) from Sandler et al., table 2
    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                (6, 320, 1, 1))

    def __init__(self, classes: int = 1000) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv_bn(3, 32, 3, 2, act=nn.ReLU6())]
        cin = 32
        for t, c, n, s in self.SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(_conv_bn(cin, 1280, 1, act=nn.ReLU6()))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(1280, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.features(x).mean((2, 3))
        return self.classifier(y)


def build_module(name: str, seed: int = 0) -> nn.Module:
    """The torch module for a zoo architecture (eval mode, seeded random weights and BN statistics)."""
    if name in ENCODER_SHAPES:
        return build_encoder(name, seed)
    torch.manual_seed(seed)
    if name == "resnet18":
        module: nn.Module = ResNet(BasicBlock, [2, 2, 2, 2])
    elif name == "resnet50":
        module = ResNet(Bottleneck, [3, 4, 6, 3])
    elif name == "mobilenet_v2":
        module = MobileNetV2()
    else:
        raise ConfigError(f"Unknown torch zoo architecture {name!r}; choose one of {ZOO_NAMES[:-1]}.")
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return module.eval()


def _dynamo_export(module: nn.Module, example: torch.Tensor, opset: int) -> onnx.ModelProto:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module, (example,), dynamo=True, opset_version=opset, optimize=True,
            input_names=["input"], output_names=["logits"], external_data=False, verbose=False,
        )
    model = program.model_proto
    if any(t.data_location == TensorProto.EXTERNAL for t in model.graph.initializer):
        raise RuntimeError("dynamo export left external weights; expected them inline")
    return model


def lenet_opset9(seed: int = 0) -> onnx.ModelProto:
    """A LeNet-5-style classifier for 1×1×28×28, written with onnx.helper at opset 9.

    Conv(6,5×5) → BatchNormalization (not folded) → Relu → MaxPool → Conv(16,5×5) → Relu → MaxPool →
    Flatten → Gemm(120) → Relu → Gemm(84) → Relu → Gemm(10).
    """
    rng = np.random.default_rng(seed)

    def init(name: str, *shape: int) -> TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.1).astype(np.float32), name)

    inits = [
        init("c1.w", 6, 1, 5, 5), init("c1.b", 6),
        numpy_helper.from_array(np.ones(6, np.float32), "bn.scale"), init("bn.bias", 6),
        init("bn.mean", 6), numpy_helper.from_array((rng.random(6) + 0.5).astype(np.float32), "bn.var"),
        init("c2.w", 16, 6, 5, 5), init("c2.b", 16),
        init("f1.w", 120, 256), init("f1.b", 120), init("f2.w", 84, 120), init("f2.b", 84),
        init("f3.w", 10, 84), init("f3.b", 10),
    ]
    n = helper.make_node
    nodes = [
        n("Conv", ["input", "c1.w", "c1.b"], ["c1"], name="conv1", kernel_shape=[5, 5]),
        n("BatchNormalization", ["c1", "bn.scale", "bn.bias", "bn.mean", "bn.var"], ["bn"], name="bn1",
          epsilon=1e-5),
        n("Relu", ["bn"], ["r1"], name="relu1"),
        n("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
        n("Conv", ["p1", "c2.w", "c2.b"], ["c2"], name="conv2", kernel_shape=[5, 5]),
        n("Relu", ["c2"], ["r2"], name="relu2"),
        n("MaxPool", ["r2"], ["p2"], name="pool2", kernel_shape=[2, 2], strides=[2, 2]),
        n("Flatten", ["p2"], ["flat"], name="flatten", axis=1),
        n("Gemm", ["flat", "f1.w", "f1.b"], ["g1"], name="fc1", transB=1),
        n("Relu", ["g1"], ["r3"], name="relu3"),
        n("Gemm", ["r3", "f2.w", "f2.b"], ["g2"], name="fc2", transB=1),
        n("Relu", ["g2"], ["r4"], name="relu4"),
        n("Gemm", ["r4", "f3.w", "f3.b"], ["logits"], name="fc3", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "lenet_opset9",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)], producer_name="lenet-helper")
    model.ir_version = 4
    onnx.checker.check_model(model)
    return model


def zoo_model(name: str, exporter: str = "legacy", opset: int | None = None, seed: int = 0,
              dynamic_batch: bool = False) -> onnx.ModelProto:
    """Build a zoo graph as ONNX with weights embedded (a fresh ModelProto each call).

    Args:
        name: one of :data:`ZOO_NAMES`.
        exporter: "legacy" (``optim.io.export.torch_to_onnx``, default opset 17) or "dynamo"
            (``torch.onnx.export(dynamo=True, optimize=True)``, default opset 18, slow: seconds).
            Ignored for ``lenet_opset9``.
        opset: ONNX opset; ``None`` for the exporter's default.
        seed: seeds the random weights.
        dynamic_batch: declare the batch dimension symbolic (legacy exporter only), as bundled samples do.

    Serialized results up to 128 MB are cached per process (exports take 0.3–3 s), so repeated calls are cheap.
    """
    if name not in ZOO_NAMES:
        raise ConfigError(f"Unknown zoo model {name!r}; choose one of {', '.join(ZOO_NAMES)}.")
    if exporter not in ("legacy", "dynamo"):
        raise ConfigError(f"exporter must be 'legacy' or 'dynamo', not {exporter!r}.")
    return onnx.load_from_string(_zoo_bytes(name, exporter, opset, seed, dynamic_batch))


def input_shape(name: str) -> tuple[int, ...]:
    """The batch-1 input shape of a zoo graph."""
    if name in ENCODER_SHAPES:
        return example_shape(name)
    return (1, 1, 28, 28) if name == "lenet_opset9" else IMAGENET_SHAPE


_CACHE: dict[tuple[object, ...], bytes] = {}
CACHE_MAX_BYTES = 128 * 2**20  # BERT-base's 340 MB are rebuilt each call rather than held for the process
CACHE_MAX_ENTRIES = 8


def _zoo_bytes(name: str, exporter: str, opset: int | None, seed: int, dynamic_batch: bool) -> bytes:
    key = (name, exporter, opset, seed, dynamic_batch)
    if key in _CACHE:
        return _CACHE[key]
    data = _export(name, exporter, opset, seed, dynamic_batch)
    if len(data) <= CACHE_MAX_BYTES:
        if len(_CACHE) >= CACHE_MAX_ENTRIES:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = data
    return data


def _export(name: str, exporter: str, opset: int | None, seed: int, dynamic_batch: bool) -> bytes:
    if name == "lenet_opset9":
        return lenet_opset9(seed).SerializeToString()
    module = build_module(name, seed)
    example = torch.randn(*input_shape(name), generator=torch.Generator().manual_seed(seed))
    if exporter == "dynamo":
        return _dynamo_export(module, example, opset or 18).SerializeToString()
    return torch_to_onnx(module, [example], opset=opset or 17, dynamic_batch=dynamic_batch).SerializeToString()
