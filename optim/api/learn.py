"""The Learn page's live illustrations on the loaded model: soft labels at several temperatures (distillation),
graph nodes vs runtime kernels (fusion), the roofline on a catalog device, weights under quantisation/pruning."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from optim.api.models import Loaded
from optim.errors import OptimError
from optim.jobs import client as jobrun
from optim.jobs import codec
from optim.present.learn import prune_demo, quant_demo, sensitivity_table, weight_layers
from optim.present.results import roofline_view

__all__ = ["fusion_of", "prune_demo", "quant_demo", "roofline_of", "sensitivity_table", "soft_labels",
           "weight_layers"]


def soft_labels(loaded: Loaded, index: int = 0, temperatures: tuple[float, ...] = (1.0, 4.0)) -> pd.DataFrame:
    """The model's class probabilities for one test sample at several softmax temperatures (KD targets)."""
    if loaded.test is None:
        raise OptimError("No test data to illustrate distillation with: upload evaluation data on Home.")
    i = int(index) % len(loaded.test)
    res = jobrun.run("predict", "predicting one sample", {}, {"x": codec.array_bytes(loaded.test.x[i : i + 1])},
                     handle=loaded.handle)
    logits = np.asarray(codec.array_from(res.blobs["logits"]), dtype=np.float64)[0]
    names = loaded.test.class_names or [str(k) for k in range(len(logits))]
    out = {"class": names[: len(logits)]}
    for t in temperatures:
        z = logits / t
        p = np.exp(z - z.max())
        out[f"T = {t:g}"] = p / p.sum()
    label = None if loaded.test.y is None else int(loaded.test.y[i])
    return pd.DataFrame(out).assign(true_label=[k == label for k in range(len(logits))])


def fusion_of(loaded: Loaded) -> pd.DataFrame:
    """Graph nodes vs kernels ONNX Runtime runs after its optimisations, for the loaded model (a worker)."""
    res = jobrun.run("fusion", f"optimising {loaded.label[:80]} with ONNX Runtime", handle=loaded.handle)
    return codec.frame_from(res.value["table"])


def roofline_of(loaded: Loaded, device_id: str) -> dict[str, Any]:
    """Per-layer roofline points of the loaded model on a catalog device (estimated)."""
    return roofline_view(loaded.handle, device_id)
