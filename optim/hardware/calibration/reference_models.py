"""MLPerf Tiny reference architectures, built in torch with random weights (latency needs no training).

The MLPerf Tiny v1.0 benchmark models — ResNet-8 (CIFAR-10 image classification, 32×32×3),
DS-CNN small (keyword spotting, 49×10 MFCC), MobileNetV1 α=0.25 (visual wake words, 96×96×3), the
FC autoencoder (anomaly detection, 640 log-mel features; dense layers and BatchNorm only) — are
not in any dependency we have, and weights must never be downloaded, so their layer layouts are
written here from the benchmark's model descriptions and exported through ``optim.io.export``.
Width-multiplied variants (``width``) stand in for structured-pruning sweep variants in validation.
"""

from __future__ import annotations

import torch
from torch import nn

from optim.errors import ConfigError
from optim.handle import ModelHandle
from optim.io.export import torch_to_onnx

REFERENCE_NAMES = ("resnet8", "ds_cnn", "mobilenet_v1_025", "fc_autoencoder")
INPUT_SHAPES = {"resnet8": (1, 3, 32, 32), "ds_cnn": (1, 1, 49, 10), "mobilenet_v1_025": (1, 3, 96, 96),
                "fc_autoencoder": (1, 640)}


def _cbr(cin: int, cout: int, k: int | tuple[int, int], stride: int = 1, groups: int = 1,
         padding: int | tuple[int, int] | None = None) -> nn.Sequential:
    pad = padding if padding is not None else (k // 2 if isinstance(k, int) else (k[0] // 2, k[1] // 2))
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, pad, groups=groups, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU())


class _ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.a = _cbr(cin, cout, 3, stride)
        self.b = nn.Sequential(nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.skip = nn.Conv2d(cin, cout, 1, stride) if stride != 1 or cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.b(self.a(x)) + self.skip(x))


class ResNet8(nn.Module):
    """MLPerf Tiny IC: conv16, three residual stacks (16, 32/2, 64/2), avg-pool, dense 10."""

    def __init__(self, width: float = 1.0) -> None:
        super().__init__()
        c = [max(4, int(round(w * width))) for w in (16, 32, 64)]
        self.stem = _cbr(3, c[0], 3)
        self.stacks = nn.Sequential(_ResBlock(c[0], c[0], 1), _ResBlock(c[0], c[1], 2), _ResBlock(c[1], c[2], 2))
        self.fc = nn.Linear(c[2], 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.stacks(self.stem(x)).mean((2, 3)))


class DSCNN(nn.Module):
    """MLPerf Tiny KWS DS-CNN: conv 64 (10×4, stride 2), 4 × (depthwise 3×3 + pointwise 64), pool, dense 12."""

    def __init__(self, width: float = 1.0) -> None:
        super().__init__()
        c = max(8, int(round(64 * width)))
        layers: list[nn.Module] = [_cbr(1, c, (10, 4), 2, padding=(5, 1))]
        for _ in range(4):
            layers += [_cbr(c, c, 3, groups=c), _cbr(c, c, 1)]
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(c, 12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean((2, 3)))


class MobileNetV1(nn.Module):
    """MobileNetV1 with width multiplier α (MLPerf Tiny VWW uses α = 0.25, 96×96, 2 classes)."""

    PLAN = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1), (512, 1), (512, 1),
            (512, 1), (1024, 2), (1024, 1))

    def __init__(self, alpha: float = 0.25, classes: int = 2) -> None:
        super().__init__()
        cin = max(8, int(32 * alpha))
        layers: list[nn.Module] = [_cbr(3, cin, 3, 2)]
        for cout, stride in self.PLAN:
            cout = max(8, int(cout * alpha))
            layers += [_cbr(cin, cin, 3, stride, groups=cin), _cbr(cin, cout, 1)]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean((2, 3)))


class FCAutoencoder(nn.Module):
    """MLPerf Tiny AD: 640 → 4 × dense 128 (+BN, ReLU) → 8 → 4 × dense 128 → 640."""

    def __init__(self, width: float = 1.0) -> None:
        super().__init__()
        h = max(8, int(round(128 * width)))
        dims = [640, h, h, h, h, 8, h, h, h, h]
        layers: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:], strict=True):
            layers += [nn.Linear(a, b), nn.BatchNorm1d(b), nn.ReLU()]
        self.body = nn.Sequential(*layers, nn.Linear(h, 640))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def build_module(name: str, width: float = 1.0, seed: int = 0) -> nn.Module:
    """Seeded torch module for a reference architecture (``width`` scales every channel count)."""
    torch.manual_seed(seed)
    if name == "resnet8":
        module: nn.Module = ResNet8(width)
    elif name == "ds_cnn":
        module = DSCNN(width)
    elif name == "mobilenet_v1_025":
        module = MobileNetV1(0.25 * width)
    elif name == "fc_autoencoder":
        module = FCAutoencoder(width)
    else:
        raise ConfigError(f"Unknown reference model {name!r}; choose one of {REFERENCE_NAMES}.")
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
            m.running_var.uniform_(0.5, 1.5)
    return module.eval()


def reference_model(name: str, width: float = 1.0, seed: int = 0) -> ModelHandle:
    """ONNX handle of a reference architecture (FP32, batch 1, random weights)."""
    module = build_module(name, width, seed)
    proto = torch_to_onnx(module, [torch.randn(*INPUT_SHAPES[name])])
    label = name if width == 1.0 else f"{name}_w{width:g}"
    return ModelHandle(model=proto, name=label, source_format="onnx", meta={"bits": 32})
