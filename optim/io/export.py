"""Torch → ONNX export used everywhere in the project (samples, pruning, distillation).

We use the TorchScript-based exporter (``dynamo=False``): on this stack it is ~20× faster than the
dynamo exporter (0.1 s vs 2 s for a small CNN), keeps readable node names that map back to module
paths (``/layer1/conv1/Conv``), and always embeds the weights in the one ModelProto it writes.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence

import onnx
import torch

DEFAULT_OPSET = 17


def torch_to_onnx(
    module: torch.nn.Module,
    example_inputs: Sequence[torch.Tensor],
    input_names: Sequence[str] = ("input",),
    output_names: Sequence[str] = ("logits",),
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = False,
) -> onnx.ModelProto:
    """Export ``module`` (put in eval mode) to an ONNX ModelProto with weights embedded.

    Names TorchScript refuses as debug names (all digits, as exporters write for unnamed outputs: ``"290"``)
    are exported under a stand-in and renamed back in the ONNX graph.
    """
    module = module.eval()
    buf = io.BytesIO()
    stand_in = {n: f"io_{n}" for n in [*input_names, *output_names] if n.isdigit()}
    input_names = [stand_in.get(n, n) for n in input_names]
    output_names = [stand_in.get(n, n) for n in output_names]
    dynamic_axes = None
    if dynamic_batch:
        dynamic_axes = {n: {0: "batch"} for n in [*input_names, *output_names]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.no_grad():
            torch.onnx.export(
                module,
                tuple(example_inputs),
                buf,
                dynamo=False,
                input_names=list(input_names),
                output_names=list(output_names),
                opset_version=opset,
                dynamic_axes=dynamic_axes,
                do_constant_folding=True,
            )
    model = onnx.load_from_string(buf.getvalue())
    if stand_in:
        _rename(model.graph, {v: k for k, v in stand_in.items()})
    return model


def _rename(graph: onnx.GraphProto, names: dict[str, str]) -> None:
    for vi in [*graph.input, *graph.output, *graph.value_info]:
        vi.name = names.get(vi.name, vi.name)
    for node in graph.node:
        node.input[:] = [names.get(n, n) for n in node.input]
        node.output[:] = [names.get(n, n) for n in node.output]
