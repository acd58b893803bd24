"""Train and export the four bundled sample models (deterministic, CPU, a few minutes).

Writes into this folder: ``<name>.onnx``, ``<name>_test.npz``, ``<name>_train.npz`` and
``manifest.json`` for ``resnet_digits``, ``mobilenetv2_digits``, ``vit_digits`` and ``mlp_tabular``.

Data never leaves the machine: the digit images are scikit-learn's bundled 8×8 ``load_digits`` set
(split per raw image first, then augmented deterministically and upsampled to 32×32×3); the tabular
set is generated with ``make_classification``. ``fp32_top1`` in the manifest is measured on the
exported ONNX graph with ONNX Runtime over exactly the arrays ``optim.io.samples.load_sample`` returns.

Usage: ``python sample_models/build_samples.py [--only NAME ...] [--threads N] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

from optim.io.export import torch_to_onnx  # noqa: E402
from optim.io.samples import MANIFEST_NAME, decode_x  # noqa: E402

SEED = 20240501
DIGIT_NAMES = [str(i) for i in range(10)]
TEST_VIEWS = 4  # 540 held-out digits × 4 views = 2,160 test images
TRAIN_VIEWS = 4  # stored train/calibration set: 1,257 × 4 = 5,028 images
DIGITS_PRE = {"kind": "image", "stored_as": "uint8_gray", "layout": "NCHW", "channels": 3,
              "size": [32, 32], "scale": 1.0 / 255.0, "mean": [0.1], "std": [0.3]}  # mean/std set below


# ---------------------------------------------------------------- data ---------------------------
def augment_views(raw: np.ndarray, views: int, gen: torch.Generator, strength: float,
                  identity_first: bool) -> np.ndarray:
    """(N, 8, 8) digits in 0..16 → (N*views, 32, 32) uint8: bilinear upsample + random affine."""
    x = torch.from_numpy(raw.astype(np.float32) / 16.0)[:, None]
    x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
    x = x.repeat_interleave(views, dim=0)
    n = x.shape[0]
    angle = (torch.rand(n, generator=gen) * 2 - 1) * (10.0 * strength) * np.pi / 180
    scale = 1 + (torch.rand(n, generator=gen) * 2 - 1) * 0.08 * strength
    shift = (torch.rand(n, 2, generator=gen) * 2 - 1) * (2.0 * strength) * (2 / 32)  # ±2 px
    if identity_first:
        first = torch.arange(n) % views == 0
        angle[first], scale[first], shift[first] = 0.0, 1.0, 0.0
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return np.round(out[:, 0].clamp(0, 1).numpy() * 255).astype(np.uint8)


def digits_data(seed: int) -> dict[str, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    raw_tr, raw_te, y_tr, y_te = train_test_split(
        d.images, d.target, test_size=0.3, stratify=d.target, random_state=seed
    )
    gen = torch.Generator().manual_seed(seed)
    x_te = augment_views(raw_te, TEST_VIEWS, gen, strength=0.6, identity_first=True)
    x_tr = augment_views(raw_tr, TRAIN_VIEWS, gen, strength=1.0, identity_first=True)
    return {"raw_tr": raw_tr, "y_raw_tr": y_tr.astype(np.int64), "x_tr": x_tr,
            "y_tr": np.repeat(y_tr, TRAIN_VIEWS).astype(np.int64), "x_te": x_te,
            "y_te": np.repeat(y_te, TEST_VIEWS).astype(np.int64), "n_test_raw": len(raw_te)}


def tabular_data(seed: int) -> dict[str, np.ndarray]:
    from sklearn.datasets import make_classification
    from sklearn.model_selection import train_test_split

    x, y = make_classification(n_samples=10_000, n_features=20, n_informative=10, n_redundant=4,
                               n_repeated=0, n_classes=5, n_clusters_per_class=2, class_sep=1.2,
                               flip_y=0.01, random_state=seed)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, stratify=y, random_state=seed)
    return {"x_tr": x_tr.astype(np.float32), "y_tr": y_tr.astype(np.int64),
            "x_te": x_te.astype(np.float32), "y_te": y_te.astype(np.int64)}


# ---------------------------------------------------------------- models -------------------------
def conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1, self.conv2 = conv_bn(cin, cout, 3, stride), conv_bn(cout, cout, 3)
        self.down = conv_bn(cin, cout, 1, stride) if stride != 1 or cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv2(torch.relu(self.conv1(x))) + self.down(x))


class ResNetDigits(nn.Module):
    """Stride-2 stem to 16×16, four BasicBlocks 32/64/128/256 (→2×2), global pool, linear."""

    def __init__(self, classes: int = 10, widths: tuple[int, ...] = (32, 64, 128, 256)) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, widths[0], 3, 2), nn.ReLU())
        blocks, cin = [], widths[0]
        for i, w in enumerate(widths):
            blocks.append(BasicBlock(cin, w, 1 if i == 0 else 2))
            cin = w
        self.layers = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.layers(self.stem(x)).mean((2, 3)))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hid = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [conv_bn(cin, hid, 1), nn.ReLU6()]
        layers += [conv_bn(hid, hid, 3, stride, groups=hid), nn.ReLU6(), conv_bn(hid, cout, 1)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) if self.residual else self.body(x)


class MobileNetV2Digits(nn.Module):
    """MobileNetV2 layout scaled to 32×32: (t, c, n, s) = (1,16,1,1) (6,24,2,1) (6,32,2,2) (6,64,2,2) (6,96,1,1)."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = [conv_bn(3, 32, 3, 2), nn.ReLU6()]
        cin = 32
        for t, c, n, s in [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 2, 2), (6, 64, 2, 2), (6, 96, 1, 1)]:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers += [conv_bn(cin, 320, 1), nn.ReLU6()]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(320, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean((2, 3)))


class Attention(nn.Module):
    """Multi-head self-attention from explicit q/k/v/proj Linears.

    Reshapes use constant sizes (batch as -1) so the exported graph is plain MatMul/Add/Softmax/
    Reshape/Transpose without Shape/Gather chains.
    """

    def __init__(self, dim: int, heads: int, tokens: int) -> None:
        super().__init__()
        self.dim, self.heads, self.head_dim, self.tokens = dim, heads, dim // heads, tokens
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        return t.reshape(-1, self.tokens, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self._split(self.q(x)), self._split(self.k(x)), self._split(self.v(x))
        att = torch.softmax(torch.matmul(q, k.transpose(-2, -1)) * (self.head_dim ** -0.5), dim=-1)
        return self.proj(torch.matmul(att, v).transpose(1, 2).reshape(-1, self.tokens, self.dim))


class EncoderBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: int, tokens: int) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, heads, tokens)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, dim * mlp_ratio), nn.GELU(), nn.Linear(dim * mlp_ratio, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViTDigits(nn.Module):
    """4×4 conv patch embedding (64 tokens), class token, learned positions, pre-norm encoder blocks."""

    def __init__(self, classes: int = 10, dim: int = 96, depth: int = 4, heads: int = 4, mlp_ratio: int = 2):
        super().__init__()
        self.dim, self.patches = dim, 64
        self.patch = nn.Conv2d(3, dim, 4, 4)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, 65, dim) * 0.02)
        self.blocks = nn.Sequential(*[EncoderBlock(dim, heads, mlp_ratio, 65) for _ in range(depth)])
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.patch(x).reshape(-1, self.dim, self.patches).transpose(1, 2)
        cls = t[:, :1] * 0.0 + self.cls  # batch-sized class token without Shape/Expand ops
        t = torch.cat([cls, t], dim=1) + self.pos
        return self.head(self.norm(self.blocks(t))[:, 0])


class TabularMLP(nn.Module):
    def __init__(self, features: int = 20, classes: int = 5, hidden: int = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, hidden // 2), nn.ReLU(), nn.Linear(hidden // 2, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


# ---------------------------------------------------------------- training -----------------------
def train(model: nn.Module, batches_per_epoch: int, epochs: int, lr: float, get_epoch, seed: int,
          batch_size: int, wd: float = 0.05) -> nn.Module:
    """AdamW + OneCycle; ``get_epoch(e)`` returns that epoch's (x, y) float32/int64 tensors."""
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, epochs=epochs, steps_per_epoch=batches_per_epoch,
                                                pct_start=0.25)
    gen = torch.Generator().manual_seed(seed)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.05)
    for epoch in range(epochs):
        model.train()
        x, y = get_epoch(epoch)
        perm = torch.randperm(len(x), generator=gen)
        total, steps = 0.0, 0
        for i in range(batches_per_epoch):
            idx = perm[i * batch_size:(i + 1) * batch_size]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            sched.step()
            total, steps = total + loss.item(), steps + 1
        print(f"    epoch {epoch + 1}/{epochs} loss {total / steps:.4f}", flush=True)
    return model.eval()


def onnx_top1(model: onnx.ModelProto, x: np.ndarray, y: np.ndarray, batch: int = 64) -> float:
    """Top-1 of the ONNX graph with ONNX Runtime (1 thread, batches of 64), as the tests recompute it."""
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = 1, 1
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    preds = [sess.run(None, {"input": x[i:i + batch]})[0].argmax(1) for i in range(0, len(x), batch)]
    return float((np.concatenate(preds) == y).sum()) / len(y)


def count_macs(model: nn.Module, example: torch.Tensor) -> int:
    """Multiply-accumulates of Conv2d/Linear layers plus attention matmuls (forward hooks)."""
    macs = 0

    def hook(mod: nn.Module, inp: tuple, out: torch.Tensor) -> None:
        nonlocal macs
        if isinstance(mod, nn.Conv2d):
            macs += out.numel() * mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
        elif isinstance(mod, nn.Linear):
            macs += out.numel() * mod.in_features
        elif isinstance(mod, Attention):
            b, n, d = inp[0].shape
            macs += 2 * b * n * n * d

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    with torch.no_grad():
        model.eval()(example)
    for h in handles:
        h.remove()
    return macs


# ---------------------------------------------------------------- builders -----------------------
DIGIT_MODELS = {
    # name: (factory, arch, epochs, max lr, batch size, description)
    "resnet_digits": (ResNetDigits, "ResNet-10 (BasicBlocks 32/64/128/256, BatchNorm)", 6, 4e-3, 64,
                      "ResNet-style CNN with BatchNorm residual blocks on 32×32 digits"),
    "mobilenetv2_digits": (MobileNetV2Digits, "MobileNetV2 (inverted residuals, depthwise, ReLU6)", 6, 6e-3, 64,
                           "MobileNetV2-style CNN: inverted residuals with depthwise convolutions"),
    "vit_digits": (ViTDigits, "ViT (4×4 patches, 4 blocks, d=96, 4 heads)", 14, 2e-3, 64,
                   "Small Vision Transformer: 4×4 patches, 4 encoder blocks, 4-head attention"),
}


def build_digit_model(name: str, data: dict, pre: dict, out: Path, seed: int) -> dict:
    factory, arch, epochs, lr, bs, desc = DIGIT_MODELS[name]
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    model = factory()
    raw, y_raw = data["raw_tr"], data["y_raw_tr"]
    y_epoch = torch.from_numpy(np.repeat(y_raw, TRAIN_VIEWS))

    def get_epoch(e: int) -> tuple[torch.Tensor, torch.Tensor]:
        gen = torch.Generator().manual_seed(seed * 1000 + e)
        x = decode_x(augment_views(raw, TRAIN_VIEWS, gen, strength=1.0, identity_first=False), pre)
        return torch.from_numpy(x), y_epoch

    n_batches = len(y_epoch) // bs
    train(model, n_batches, epochs, lr, get_epoch, seed, bs)
    x_te = decode_x(data["x_te"], pre)
    return export_and_record(name, model, arch, desc, x_te, data["y_te"], data["x_te"], data["x_tr"],
                             data["y_tr"], pre, DIGIT_NAMES, "digits", out, t0,
                             {"n_test_raw": int(data["n_test_raw"]), "n_train": int(len(data["y_tr"]))})


def build_mlp(data: dict, pre: dict, out: Path, seed: int) -> dict:
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    model = TabularMLP()
    x_tr = torch.from_numpy(decode_x(data["x_tr"], pre))
    y_tr = torch.from_numpy(data["y_tr"])
    train(model, len(y_tr) // 128, 30, 3e-3, lambda e: (x_tr, y_tr), seed, 128, wd=0.01)
    x_te = decode_x(data["x_te"], pre)
    classes = [f"class_{i}" for i in range(5)]
    return export_and_record("mlp_tabular", model, "MLP 20-256-256-128-5 (ReLU)",
                             "MLP classifier on a synthetic 20-feature, 5-class tabular set", x_te,
                             data["y_te"], data["x_te"], data["x_tr"], data["y_tr"], pre, classes, "tabular",
                             out, t0, {"n_train": int(len(data["y_tr"]))})


def export_and_record(name: str, model: nn.Module, arch: str, desc: str, x_te: np.ndarray, y_te: np.ndarray,
                      stored_te: np.ndarray, stored_tr: np.ndarray, y_tr: np.ndarray, pre: dict,
                      class_names: list[str], dataset: str, out: Path, t0: float, extra: dict) -> dict:
    model.eval()
    example = torch.from_numpy(x_te[:1])
    proto = torch_to_onnx(model, [example], dynamic_batch=True)
    proto.doc_string = f"{name}: {desc}"
    onnx.save(proto, str(out / f"{name}.onnx"))
    np.savez_compressed(out / f"{name}_test.npz", x=stored_te, y=y_te)
    np.savez_compressed(out / f"{name}_train.npz", x=stored_tr, y=y_tr)
    top1 = onnx_top1(proto, x_te, y_te)
    params = sum(p.numel() for p in model.parameters())
    macs = count_macs(model, example)
    print(f"  {name}: top1 {top1:.4f}  params {params / 1e6:.3f} M  MACs {macs / 1e6:.1f} M  "
          f"{time.perf_counter() - t0:.1f} s", flush=True)
    return {"name": name, "file": f"{name}.onnx", "arch": arch, "task": "classification", "dataset": dataset,
            "input_name": "input", "input_shape": ["batch", *x_te.shape[1:]], "preprocessing": pre,
            "class_names": class_names, "test_file": f"{name}_test.npz", "train_file": f"{name}_train.npz",
            "fp32_top1": top1, "n_test": int(len(y_te)),
            "description": f"{desc} — {top1 * 100:.1f} % top-1 on {len(y_te):,} test samples",
            "params": int(params), "macs": int(macs), "seed": SEED, **extra}


def write_manifest(path: Path, entries: dict[str, dict]) -> None:
    """Merge ``entries`` into the manifest at ``path`` (kept in canonical model order)."""
    old = {e["name"]: e for e in json.loads(path.read_text())["models"]} if path.exists() else {}
    merged = {**old, **entries}
    models = [merged[n] for n in [*DIGIT_MODELS, "mlp_tabular"] if n in merged]
    path.write_text(json.dumps({"version": 1, "models": models}, indent=2, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", default=None, choices=[*DIGIT_MODELS, "mlp_tabular"],
                    help="build only these samples (others kept in the manifest)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (results depend on it)")
    ap.add_argument("--out", type=Path, default=ROOT)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    t_all = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    manifest_path = args.out / MANIFEST_NAME
    names = args.only or [*DIGIT_MODELS, "mlp_tabular"]
    digits = digits_data(SEED)
    pix = digits["x_tr"].astype(np.float64) / 255.0
    pre = {**DIGITS_PRE, "mean": [round(float(pix.mean()), 4)] * 3, "std": [round(float(pix.std()), 4)] * 3}
    for name in DIGIT_MODELS:
        if name in names:
            print(f"== {name}", flush=True)
            write_manifest(manifest_path, {name: build_digit_model(name, digits, pre, args.out, SEED)})
    if "mlp_tabular" in names:
        print("== mlp_tabular", flush=True)
        tab = tabular_data(SEED)
        tpre = {"kind": "tabular", "stored_as": "float32_raw", "standardize": True,
                "mean": [float(v) for v in tab["x_tr"].mean(0)], "std": [float(v) for v in tab["x_tr"].std(0)],
                "features": [f"f{i}" for i in range(tab["x_tr"].shape[1])]}
        write_manifest(manifest_path, {"mlp_tabular": build_mlp(tab, tpre, args.out, SEED)})
    print(f"done in {time.perf_counter() - t_all:.1f} s", flush=True)


if __name__ == "__main__":
    main()
