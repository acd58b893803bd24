"""Structured pruning: remove whole channels / neurons / MLP hidden units, then export back to ONNX.

Pipeline: ONNX → torch (``onnx2torch.to_torch``) → torch-pruning's dependency graph (which channels
are coupled through residual additions, concatenations, depthwise groups, batch norms and
flatten→linear) → prune with an importance criterion chosen by name → per-channel recalibration
(``recalibrate.py``) → ``optim.io.export.torch_to_onnx`` with weights embedded.

Coupled dimensions torch-pruning cannot follow through an ONNX graph are found while tracing: the
converter marks outputs of nodes that index, split or reshape channels (attention heads), that add
a non-scalar constant (position embeddings, class tokens), grouped (non-depthwise) convs and the
graph outputs; every group that touches one of them is left whole. On a transformer this leaves the
MLP hidden units (fc1 outputs = fc2 inputs) as the prunable groups; on conv nets it leaves the
classifier's outputs alone. Attention heads, which torch-pruning cannot see in a converted graph, are
removed by ``prune_heads.py`` (``prune_heads=True``), checked numerically before they are kept.

Measured (``benchmarks/pruning.py``, resnet_digits, 2,160 test images, no fine-tuning): dense top-1
99.77 %; ratio 0.3 → 9.6 % without recalibration, 99.35 % with; ratio 0.5 → 9.6 % / 86.9 %.
Channel counts that are not multiples of 8 fall off ONNX Runtime's blocked (NCHWc) conv kernels on
x86: at ratio 0.3 ``round_to=1`` ran 1.14× the dense latency, ``round_to=8`` 0.54×.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import numpy as np
import onnx
import torch
import torch_pruning as tp
from torch import nn

from optim.errors import ConfigError, OptimError, PassUnavailableError, runtime_reason
from optim.handle import ModelHandle
from optim.io.export import torch_to_onnx
from optim.io.named_inputs import input_arrays
from optim.io.shapes import input_specs
from optim.measure.budget import per_sample_cost
from optim.passes._prune.heads import prune_heads
from optim.passes._prune.onnx2torch import OnnxModule, example_inputs, to_torch
from optim.passes._prune.recalibrate import recal_samples, recalibrate
from optim.passes._prune.recurrent import Recurrent
from optim.passes.base import PassContext, check_literals, check_range, register

Scope = Literal["uniform", "global"]
Importance = Literal["l1", "l2", "random", "taylor"]
RoundTo = Literal[1, 2, 4, 8, 16]
SCOPES: tuple[str, ...] = get_args(Scope)
IMPORTANCES: tuple[str, ...] = get_args(Importance)
ROUND_TO: tuple[int, ...] = get_args(RoundTo)
_ROOTS = (nn.modules.conv._ConvNd, nn.Linear)


@dataclass(frozen=True)
class StructuredPruneConfig:
    ratio: float = field(default=0.3, metadata={
        "help": "Fraction of channels removed per layer (uniform) or over the whole network (global); "
                "parameters and MACs drop by about 1 − (1 − ratio)².", "min": 0.0, "max": 0.95})
    scope: Scope = field(default="uniform", metadata={
        "help": "uniform: the same ratio in every layer; global: rank channels across layers.",
        "choices": list(SCOPES)})
    importance: Importance = field(default="l2", metadata={
        "help": "How channels are scored: weight L1/L2 norm, random (baseline), or Taylor "
                "(|weight × gradient| on calibration data).", "choices": list(IMPORTANCES)})
    round_to: RoundTo = field(default=1, metadata={
        "help": "Keep channel counts a multiple of this; 8 keeps ONNX Runtime's blocked x86 conv kernels "
                "(odd counts can make a pruned model slower than the dense one).", "choices": list(ROUND_TO)})
    recalibrate: bool = field(default=True, metadata={
        "help": "Match each kept channel's mean/std to the unpruned model on calibration data."})
    calib_samples: int = field(default=256, metadata={
        "help": "Calibration samples for recalibration and Taylor scores.", "min": 8, "max": 4096})
    prune_heads: bool = field(default=True, metadata={
        "help": "Transformers: also remove round(heads × ratio) whole attention heads per block."})
    seed: int = field(default=0, metadata={"help": "Seed for random importance and synthetic data.",
                                           "min": 0, "max": 2**31 - 1})
    layer_ratios: tuple[tuple[str, float], ...] = field(default=(), metadata={
        "help": "Per-layer ratios as (ONNX node name, ratio) pairs, e.g. from optim.analysis.plans.pruning_plan; "
                "layers not listed use `ratio`. A coupled group takes the ratio of its first layer."})

    def __post_init__(self) -> None:
        check_range("ratio", self.ratio, 0.0, 0.95)
        for node, r in self.layer_ratios:
            check_range(f"layer_ratios[{node}]", r, 0.0, 0.95)
        check_literals(self)
        if self.layer_ratios and self.scope == "global":
            raise ConfigError("layer_ratios fix each layer's ratio, scope 'global' ranks channels across layers: "
                              "use scope 'uniform' with layer_ratios.")
        check_range("calib_samples", self.calib_samples, 8, 4096)
        check_range("seed", self.seed, 0, 2**31 - 1)


def make_importance(name: str) -> tp.importance.Importance:
    """torch-pruning importance criterion by name (``IMPORTANCES``)."""
    if name == "l1":
        return tp.importance.GroupMagnitudeImportance(p=1)
    if name == "l2":
        return tp.importance.GroupMagnitudeImportance(p=2)
    if name == "random":
        return tp.importance.RandomImportance()
    return tp.importance.GroupTaylorImportance()


def _calib_inputs(handle: ModelHandle, ctx: PassContext, n: int, seed: int
                  ) -> tuple[list[torch.Tensor], np.ndarray | None, str]:
    """Calibration batch (inputs, labels or None, source description)."""
    data = ctx.calib if ctx.calib is not None else ctx.train
    if data is not None and len(data) > 0:
        sub = data.subset(min(n, len(data)), seed=seed) if len(data) > n else data
        y = None if sub.y is None else np.asarray(sub.y)
        given = input_arrays(handle.model, sub)  # named multi-input data: every input it gives (ids, masks)
        names = [s.name for s in input_specs(handle.model)]
        synth = dict(zip(names, example_inputs(handle.model, batch=len(sub), seed=seed), strict=False))
        x = [torch.from_numpy(np.ascontiguousarray(given[k], dtype=np.float32 if given[k].dtype.kind == "f" else
                                                   np.int64)) if k in given else synth[k] for k in names]
        return x, y, f"calibration data ({len(sub)})"
    return example_inputs(handle.model, batch=n, seed=seed), None, f"synthetic N(0,1) inputs ({n})"


def _cap_samples(x: list[torch.Tensor], budget: int = 5_000_000) -> list[torch.Tensor]:
    per = max(1, sum(int(t[0].numel()) for t in x))
    keep = max(8, min(int(x[0].shape[0]), budget // per))
    return [t[:keep] for t in x]


def _ignored_layers(module: OnnxModule, ex: list[torch.Tensor]) -> tuple[list[nn.Module], Any, dict[str, list[str]]]:
    """Conv/linear layers of every channel group that touches an output the converter marked unsafe, the
    dependency graph (for per-group ratios) and, per recurrent layer, the layers kept because they feed it."""
    module.unsafe_grad_fns, module.recurrent_fns = set(), {}
    try:
        dg = tp.DependencyGraph().build_dependency(module, example_inputs=ex)
        unsafe, recurrent = module.unsafe_grad_fns, module.recurrent_fns
    finally:
        module.unsafe_grad_fns = None
    node_names = {module.layers[k.removeprefix("layer:")]: n.name or n.output[0]
                  for k, n, _, _ in module.steps if k.startswith("layer:")}
    feeding: dict[str, list[str]] = {}
    ignored: list[nn.Module] = []
    for group in dg.get_all_groups(root_module_types=_ROOTS):
        # a conv/linear whose *inputs* are pruned keeps its outputs: only other touches count
        touched = [dep.target for dep, _ in group
                   if not (isinstance(dep.target.module, _ROOTS) and not dg.is_out_channel_pruning_fn(dep.handler))]
        if any(n.grad_fn in unsafe for n in touched):  # block the group: ignore its out-channel layers
            blocked = [dep.target.module for dep, _ in group if isinstance(dep.target.module, _ROOTS)
                       and dg.is_out_channel_pruning_fn(dep.handler) and dep.target.module not in ignored]
            ignored += blocked
            for name in dict.fromkeys(recurrent[n.grad_fn] for n in touched if n.grad_fn in recurrent):
                feeding.setdefault(name, []).extend(node_names.get(m, "?") for m in blocked)
    return ignored, dg, feeding


def recurrent_note(module: OnnxModule, feeding: dict[str, list[str]]) -> list[str]:
    """One sentence per recurrent layer of ``module``: kept unpruned, with the layers whose outputs it reads."""
    notes = []
    for layer in (m for m in module.modules() if isinstance(m, Recurrent)):
        names = list(dict.fromkeys(feeding.get(layer.onnx_name, [])))
        fed = (f", and so are the output channels of {len(names)} layer(s) feeding it ({', '.join(names[:4])}"
               f"{', …' if len(names) > 4 else ''})") if names else ""
        notes.append(f"Structured pruning kept {layer.onnx_name} unpruned{fed}: its gates couple every hidden "
                     "unit, so recurrent layers are not pruned.")
    return notes


def _taylor_grads(module: nn.Module, x: list[torch.Tensor], y: np.ndarray | None) -> None:
    module.zero_grad()
    out = module(*[t[:64] for t in x])
    logits = out[0] if isinstance(out, tuple) else out
    target = torch.from_numpy(y[:64]).long() if y is not None else logits.detach().argmax(-1)
    torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1)).backward()


def _kept_channels(pruned: dict[str, set[int]], before: dict[str, tuple[int, ...]], module: nn.Module
                   ) -> dict[str, torch.Tensor | None]:
    """Layers whose weights changed → indices of kept output channels (None: outputs untouched)."""
    kept: dict[str, torch.Tensor | None] = {}
    for name, m in module.named_modules():
        if isinstance(m, _ROOTS) and tuple(m.weight.shape) != before[name]:
            gone = pruned.get(name, set())
            kept[name] = None if not gone else torch.tensor(
                [i for i in range(before[name][0]) if i not in gone], dtype=torch.long)
    return kept


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def export_like(handle: ModelHandle, module: OnnxModule) -> tuple[onnx.ModelProto, bool]:
    """Export a converted (and edited) module with ``handle``'s input/output names and batch convention.

    A symbolic batch is kept when the exported graph really runs at another batch size (checked in
    ONNX Runtime); otherwise the graph is exported with a fixed batch. Returns (model, dynamic).
    """
    dim0 = handle.model.graph.input[0].type.tensor_type.shape.dim
    dynamic = bool(dim0) and not dim0[0].HasField("dim_value")
    ex = example_inputs(handle.model, batch=1)
    kw = {"input_names": module.input_names, "output_names": module.output_names}
    if dynamic:
        try:
            proto = torch_to_onnx(module, ex, dynamic_batch=True, **kw)
        except Exception:  # noqa: BLE001 - shape arithmetic the exporter cannot keep symbolic: fix the batch
            proto = None
        if proto is not None:
            _keep_fixed_dims(proto, handle.model)
        if proto is not None and _runs_at_batch(proto, module, handle.model):
            return restore_layer_names(proto, module), True
    return restore_layer_names(torch_to_onnx(module, ex, dynamic_batch=False, **kw), module), False


def _keep_fixed_dims(proto: onnx.ModelProto, original: onnx.ModelProto) -> None:
    """Inputs/outputs whose first dim the original fixes (an LSTM's ``h``: ``(1, 1, 128)``) keep it."""
    for new, old in ((proto.graph.input, original.graph.input), (proto.graph.output, original.graph.output)):
        fixed = {v.name: v.type.tensor_type.shape.dim[0].dim_value for v in old
                 if v.type.tensor_type.shape.dim and v.type.tensor_type.shape.dim[0].HasField("dim_value")}
        for v in new:
            if v.name in fixed and v.type.tensor_type.shape.dim:
                v.type.tensor_type.shape.dim[0].dim_value = fixed[v.name]


def restore_layer_names(proto: onnx.ModelProto, module: OnnxModule) -> onnx.ModelProto:
    """Give exported weight layers (``/conv_3/Conv``) back their original ONNX node names, so a pruned
    or distilled variant's layers line up with the original's in per-layer tables and estimates."""
    original = {kind.removeprefix("layer:"): node for kind, node, _, _ in module.steps if kind.startswith("layer:")}
    taken = {n.name for n in proto.graph.node}
    for n in proto.graph.node:
        parts = n.name.strip("/").split("/")
        # ``/conv_3/Conv``; a recurrent layer exports as ``/lstm_9/rnn/LSTM``
        src = original.get(parts[0]) if len(parts) == 2 or (len(parts) == 3 and parts[1] == "rnn") else None
        if src is not None and src.name and src.op_type == n.op_type and src.name not in taken:
            taken.discard(n.name)
            n.name = src.name
            taken.add(n.name)
    return proto




def _runs_at_batch(proto: onnx.ModelProto, module: nn.Module, original: onnx.ModelProto, batch: int = 3) -> bool:
    import onnxruntime as ort

    xs = example_inputs(original, batch=batch, seed=1)
    try:
        opts = ort.SessionOptions()
        opts.log_severity_level = 4
        sess = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        got = sess.run(None, {i.name: x.numpy() for i, x in zip(sess.get_inputs(), xs, strict=True)})[0]
    except Exception:  # noqa: BLE001 - onnxruntime raises several types for shape errors
        return False
    with torch.no_grad():
        ref = module(*xs)
    ref = ref[0] if isinstance(ref, tuple) else ref
    return got.shape == tuple(ref.shape) and np.allclose(got, ref.numpy(), atol=1e-3, rtol=1e-3)


def _layer_ratio_dict(module: OnnxModule, layer_ratios: tuple[tuple[str, float], ...], dg: Any,
                      ignored: list[nn.Module]) -> dict[nn.Module, float]:
    """Per-layer ratios (by ONNX node name) → one ratio per coupled channel group, keyed by the group's
    root layer as torch-pruning expects: the mean of the listed ratios of the group's layers whose
    output channels it removes (unknown names are ignored)."""
    wanted = dict(layer_ratios)
    by_layer: dict[nn.Module, float] = {}
    for kind, node, _, _ in module.steps:
        if kind.startswith("layer:") and node.name in wanted:
            by_layer[module.layers[kind.removeprefix("layer:")]] = float(wanted[node.name])
    out: dict[nn.Module, float] = {}
    for group in dg.get_all_groups(ignored_layers=ignored, root_module_types=_ROOTS):
        members = [dep.target.module for dep, _ in group
                   if isinstance(dep.target.module, _ROOTS) and dg.is_out_channel_pruning_fn(dep.handler)]
        listed = [by_layer[m] for m in members if m in by_layer]
        if listed:
            out[group[0].dep.target.module] = float(np.mean(listed))
    return out


def _prune(module: OnnxModule, cfg: StructuredPruneConfig, x: list[torch.Tensor], y: np.ndarray | None,
           ctx: PassContext) -> tuple[dict[str, set[int]], list[str]]:
    """Prune ``module`` in place; returns removed output-channel indices per layer name and the notes on
    recurrent layers kept whole."""
    ex = [t[:1] for t in x]
    recurrent = [m for m in module.modules() if isinstance(m, Recurrent)]
    for m in recurrent:
        m.opaque = True
    try:
        with warnings.catch_warnings():  # recurrent weights: never reached while tracing (opaque)
            warnings.filterwarnings("ignore", message="Unwrapped parameters detected")
            return _prune_traced(module, cfg, ex, x, y, ctx, recurrent)
    finally:
        for m in recurrent:
            m.opaque = False


def _prune_traced(module: OnnxModule, cfg: StructuredPruneConfig, ex: list[torch.Tensor], x: list[torch.Tensor],
                  y: np.ndarray | None, ctx: PassContext, recurrent: list[Recurrent]
                  ) -> tuple[dict[str, set[int]], list[str]]:
    ignored, dg, feeding = _ignored_layers(module, ex)
    notes = recurrent_note(module, feeding)
    ignored += [m for m in module.modules() if isinstance(m, nn.RNNBase)]
    ignored += [m for m in module.modules() if isinstance(m, nn.modules.conv._ConvTransposeNd) and m not in ignored]
    ratio_dict = _layer_ratio_dict(module, cfg.layer_ratios, dg, ignored) if cfg.layer_ratios else None
    ctx.check_cancel()
    torch.manual_seed(cfg.seed)
    pruner = tp.pruner.BasePruner(
        module, ex, importance=make_importance(cfg.importance), global_pruning=cfg.scope == "global",
        pruning_ratio=cfg.ratio, max_pruning_ratio=0.95, ignored_layers=ignored,
        round_to=cfg.round_to if cfg.round_to > 1 else None,
        pruning_ratio_dict=ratio_dict or None)
    groups = list(pruner.DG.get_all_groups(ignored_layers=pruner.ignored_layers, root_module_types=_ROOTS))
    if not groups:
        return {}, notes
    if cfg.importance == "taylor":
        for m in recurrent:  # gradients flow through the recurrence
            m.opaque = False
        _taylor_grads(module, x, y)
    ctx.report(0.35, f"removing channels from {len(groups)} coupled groups")
    names = {m: n for n, m in module.named_modules()}
    pruned: dict[str, set[int]] = {}
    for group in pruner.step(interactive=True):
        for dep, idxs in group:
            layer = dep.target.module
            if isinstance(layer, _ROOTS) and pruner.DG.is_out_channel_pruning_fn(dep.handler):
                pruned.setdefault(names[layer], set()).update(int(i) for i in idxs)
        group.prune()
    module.zero_grad(set_to_none=True)
    return pruned, notes


def _guarded(what: str, fn: Any, *args: Any) -> Any:
    """``fn(*args)``, with a failure inside torch / torch-pruning on this graph refused in one sentence."""
    try:
        return fn(*args)
    except OptimError:
        raise
    except Exception as exc:  # noqa: BLE001 - torch-pruning and the exporter raise anything on odd graphs
        raise PassUnavailableError(
            f"Structured pruning could not {what} for this graph ({type(exc).__name__}: "
            f"{runtime_reason(exc, 160)}); use unstructured pruning or quantization instead.") from exc


@register("prune_structured", StructuredPruneConfig, "Structured pruning",
          "Removes whole channels, neurons and MLP hidden units (coupled layers pruned together), so "
          "the model really gets smaller and faster; recalibrates channel statistics afterwards.")
def run(handle: ModelHandle, config: StructuredPruneConfig, ctx: PassContext | None = None) -> ModelHandle:
    ctx = ctx or PassContext()
    ctx.report(0.0, "converting ONNX graph to torch")
    module = to_torch(handle.model)  # raises UnsupportedOpsError listing the ops
    ctx.check_cancel()
    x, y, source = _calib_inputs(handle, ctx, config.calib_samples, config.seed)
    x = _cap_samples(x)
    params_before = _params(module)
    details: dict[str, Any] = {"importance": config.importance, "scope": config.scope,
                               "params_before": params_before, "calibration": source}
    if config.ratio > 0 or any(r > 0 for _, r in config.layer_ratios):
        teacher = copy.deepcopy(module)
        before = {n: tuple(m.weight.shape) for n, m in module.named_modules() if isinstance(m, _ROOTS)}
        ctx.report(0.1, "tracing channel dependencies")
        pruned, notes = _guarded("trace and remove its coupled channels", _prune, module, config, x, y, ctx)
        if notes:
            details["kept_whole"] = notes
        ctx.check_cancel()
        if config.prune_heads:
            ctx.report(0.5, "looking for attention heads to remove")
            module, heads, n_heads = prune_heads(module, config.ratio, config.importance,
                                                 [t[:4] for t in x], config.seed)
            pruned.update(heads)
            details["heads_removed"] = n_heads
        if not pruned:
            raise PassUnavailableError(
                "Structured pruning found no channel group or attention head it can remove safely in this "
                "model (every layer feeds reshapes, constants, a recurrent layer or the output). Try unstructured "
                "pruning or quantization instead.")
        kept = _kept_channels(pruned, before, module)
        details["layers_changed"] = len(kept)
        if config.recalibrate and kept:
            ctx.report(0.6, f"recalibrating {len(kept)} layers on {source}")
            try:
                rx = recal_samples(x, per_sample_cost(handle)[1])
                details["recalibrated_layers"] = recalibrate(module, teacher, kept, rx)
                details["recalibration_samples"] = int(rx[0].shape[0])
            except (RuntimeError, ValueError, IndexError) as exc:  # optional step: the pruned model stands
                details["recalibrated_layers"] = 0
                details["recalibration_skipped"] = runtime_reason(exc, 160)
        del teacher  # the unpruned copy: not held while the pruned model is exported (memory: 1x model)
    details["params_after"] = _params(module)
    ctx.check_cancel()
    ctx.report(0.8, "exporting to ONNX")
    proto, dynamic = _guarded("export the pruned model to ONNX", export_like, handle, module)
    details["dynamic_batch"] = dynamic
    ctx.report(1.0, "done")
    step = f"prune_structured(ratio={config.ratio}, {config.scope}, {config.importance})"
    note = {"variant_note": " ".join(details["kept_whole"])} if details.get("kept_whole") else {}
    return handle.derive(proto, step, prune_ratio=config.ratio, prune_kind="structured",
                         structured_pruning=details, **note)
