"""The one ONNX Runtime runner of the tests: a CPU session with one thread, for a proto, handle, bytes or path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from optim.handle import ModelHandle


def session(model: onnx.ModelProto | ModelHandle | bytes | Path, opts: ort.SessionOptions | None = None,
            ) -> ort.InferenceSession:
    """A CPU session, one intra-/inter-op thread unless ``opts`` says otherwise, ORT warnings silenced."""
    if isinstance(model, ModelHandle):
        model = model.model_bytes
    elif isinstance(model, onnx.ModelProto):
        model = model.SerializeToString()
    elif isinstance(model, Path):
        model = model.read_bytes()
    if opts is None:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
        opts.log_severity_level = 3
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def run(model: onnx.ModelProto | ModelHandle | bytes | Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Every output for ``feeds``."""
    return session(model).run(None, feeds)


def run_first(model: onnx.ModelProto | ModelHandle | bytes | Path, x: np.ndarray) -> np.ndarray:
    """Output 0 for ``x`` fed to the first input."""
    sess = session(model)
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]
